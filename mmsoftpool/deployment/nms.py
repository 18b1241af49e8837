"""ONNX's ``NonMaxSuppression`` as a torch op, for graphs exported with
``torch.onnx.export(..., dynamo=True)``.

torch has no operator that the exporter turns into ``NonMaxSuppression``, so
the end-to-end detector calls ``mmsoftpool::nms``: in eager it runs
torchvision's NMS class by class, the ONNX operator's semantics; the export
passes :data:`ONNX_TRANSLATIONS` as ``custom_translation_table`` and the node
becomes the standard operator.
"""
import torch
import torchvision
from torch import Tensor


@torch.library.custom_op('mmsoftpool::nms', mutates_args=())
def nms(boxes: Tensor, scores: Tensor, iou_threshold: float,
        score_threshold: float) -> Tensor:
    """ONNX ``NonMaxSuppression`` (corner boxes, every box a class keeps):
    ``boxes`` (N, M, 4) as x1, y1, x2, y2, ``scores`` (N, C, M). Per image and
    class, boxes scoring above ``score_threshold`` are kept greedily by score
    and suppress the others whose IoU with them is above ``iou_threshold``.
    Returns the kept (image, class, box) indices, (S, 3) int64."""
    selected = []
    for image in range(scores.shape[0]):
        for label in range(scores.shape[1]):
            score = scores[image, label]
            candidates = torch.nonzero(score > score_threshold).flatten()
            keep = torchvision.ops.nms(boxes[image, candidates],
                                       score[candidates], iou_threshold)
            kept = candidates[keep]
            selected.append(torch.stack([torch.full_like(kept, image),
                                         torch.full_like(kept, label), kept], 1))
    return torch.cat(selected) if selected else boxes.new_zeros((0, 3), dtype=torch.int64)


@nms.register_fake
def _(boxes, scores, iou_threshold, score_threshold):
    if boxes.dim() != 3 or boxes.shape[2] != 4:
        raise ValueError(f'nms: boxes must be (N, M, 4), got {tuple(boxes.shape)}')
    if scores.dim() != 3 or scores.shape[0] != boxes.shape[0] or scores.shape[2] != boxes.shape[1]:
        raise ValueError(f'nms: scores must be (N, C, M) for boxes {tuple(boxes.shape)}, '
                         f'got {tuple(scores.shape)}')
    kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((kept, 3), dtype=torch.int64)


def _nms_onnx(boxes, scores, iou_threshold: float, score_threshold: float):
    from onnxscript import opset18 as op
    return op.NonMaxSuppression(
        boxes, scores, op.Constant(value_ints=[2**62]),
        op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[score_threshold]), center_point_box=0)


ONNX_TRANSLATIONS = {torch.ops.mmsoftpool.nms.default: _nms_onnx}
