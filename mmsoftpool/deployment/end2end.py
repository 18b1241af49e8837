"""A one-stage detector with its post-processing in the graph, for export.

:class:`DenseDetectorEnd2End` wraps an mmdet detector with an anchor head
(RetinaNet) and computes in tensors what mmdet's
``BaseDenseHead.predict_by_feat`` computes with Python control flow, so that
``torch.onnx.export`` gives a model that returns boxes:

1. per FPN level: the sigmoid scores, the ``nms_pre`` best (anchor, class)
   pairs (``filter_scores_and_topk``), their anchors (the head's
   ``prior_generator`` on the level's runtime size) and their decoded boxes
   (the head's ``bbox_coder``, clipped to the input image);
2. the pairs of all levels whose score is above ``score_thr`` and whose box
   is larger than ``min_bbox_size``, suppressed class by class with ONNX's
   ``NonMaxSuppression`` (mmdet's ``batched_nms``);
3. the ``max_per_img`` best that are left, by score.

Outputs: ``dets`` (N, K, 5: x1, y1, x2, y2, score) and ``labels`` (N, K),
K = min(max_per_img, candidates), sorted by score; rows past an image's last
detection are zeros with label -1. Boxes are in the input's pixels (the
resized, padded image); mapping them to the original image (mmdet's
``rescale``) is the application's, as it knows the resize it made.
"""
import torch
from torch import Tensor, nn

from .nms import nms


class UnsupportedDetector(ValueError):
    """The detector or its test_cfg has no end-to-end export here."""


class DenseDetectorEnd2End(nn.Module):

    def __init__(self, detector: nn.Module):
        super().__init__()
        head = getattr(detector, 'bbox_head', None)
        self._check(detector, head)
        self.detector, self.head = detector, head
        cfg = head.test_cfg
        self.nms_pre = cfg.get('nms_pre', -1)
        self.score_thr = float(cfg.get('score_thr', 0.0))
        self.min_bbox_size = cfg.get('min_bbox_size', -1)
        self.iou_threshold = float(cfg.nms.iou_threshold)
        self.max_per_img = cfg.get('max_per_img', -1)

    @staticmethod
    def _check(detector, head):
        from mmdet.models.dense_heads import AnchorHead
        from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
        name = type(detector).__name__
        if not isinstance(head, AnchorHead):
            raise UnsupportedDetector(
                f'{name}: --end2end exports one-stage detectors with an anchor '
                f'head (RetinaNet), not {type(head).__name__}')
        if (not head.use_sigmoid_cls or not isinstance(head.bbox_coder, DeltaXYWHBBoxCoder)
                or head.bbox_coder.use_box_type):
            raise UnsupportedDetector(
                f'{name}: --end2end needs sigmoid scores and DeltaXYWHBBoxCoder')
        cfg = head.test_cfg
        nms_cfg = cfg.get('nms') or {}
        if nms_cfg.get('type') != 'nms' or nms_cfg.get('class_agnostic', False):
            raise UnsupportedDetector(
                f"{name}: test_cfg.nms={dict(nms_cfg)}: --end2end exports "
                "class-wise dict(type='nms', iou_threshold=...)")
        if cfg.get('min_bbox_size', -1) > 0:
            # mmdet compares it in the original image's pixels, which the
            # graph does not know
            raise UnsupportedDetector(
                f'{name}: test_cfg.min_bbox_size={cfg.min_bbox_size}: --end2end '
                'exports 0 or -1 (no filter)')

    def forward(self, image: Tensor):
        cls_scores, bbox_preds = self.detector._forward(image)
        head = self.head
        priors = head.prior_generator.grid_priors(
            [score.shape[-2:] for score in cls_scores], dtype=image.dtype,
            device=image.device)
        max_shape = image.shape[-2:]
        boxes, scores, labels = [], [], []
        for cls_score, bbox_pred, level_priors in zip(cls_scores, bbox_preds, priors):
            n = cls_score.shape[0]
            level_scores = cls_score.permute(0, 2, 3, 1).reshape(n, -1).sigmoid()
            deltas = bbox_pred.permute(0, 2, 3, 1).reshape(n, -1, 4)
            k = level_scores.shape[1]
            if self.nms_pre > 0:
                k = torch.sym_min(self.nms_pre, k)
            top_scores, pairs = level_scores.topk(k, dim=1)
            anchor = torch.div(pairs, head.cls_out_channels, rounding_mode='floor')
            index = anchor.unsqueeze(-1).expand(-1, -1, 4)
            level_boxes = self._decode(level_priors[anchor].reshape(-1, 4),
                                       deltas.gather(1, index).reshape(-1, 4), max_shape)
            boxes.append(level_boxes.reshape(n, -1, 4))
            scores.append(top_scores)
            labels.append(pairs - anchor * head.cls_out_channels)
        boxes, scores, labels = torch.cat(boxes, 1), torch.cat(scores, 1), torch.cat(labels, 1)
        return self._suppress(boxes, scores, labels)

    def _decode(self, anchors: Tensor, deltas: Tensor, max_shape) -> Tensor:
        # the coder's own delta2bbox: its decode() takes a dead mmdet 2.x
        # path (mmdet.core) while torch.onnx exports
        from mmdet.models.task_modules.coders.delta_xywh_bbox_coder import delta2bbox
        coder = self.head.bbox_coder
        return delta2bbox(anchors, deltas, coder.means, coder.stds, max_shape,
                          clip_border=coder.clip_border, add_ctr_clamp=coder.add_ctr_clamp,
                          ctr_clamp=coder.ctr_clamp)

    def _suppress(self, boxes: Tensor, scores: Tensor, labels: Tensor):
        valid = scores > self.score_thr
        if self.min_bbox_size >= 0:
            sizes = boxes[..., 2:] - boxes[..., :2]
            valid &= (sizes > self.min_bbox_size).all(-1)
        classes = torch.arange(self.head.num_classes, device=labels.device)
        class_scores = torch.where(
            (labels.unsqueeze(1) == classes[:, None]) & valid.unsqueeze(1),
            scores.unsqueeze(1), 0.0)
        # below every score NMS keeps: a sigmoid is above 0 and score_thr >= 0
        selected = nms(boxes, class_scores, self.iou_threshold, max(self.score_thr, 0.0))
        kept = torch.zeros_like(scores, dtype=torch.bool)
        kept[selected[:, 0], selected[:, 2]] = True
        ranked = torch.where(kept, scores, -1.0)
        k = ranked.shape[1]
        if self.max_per_img > 0:
            k = torch.sym_min(self.max_per_img, k)
        top, order = ranked.topk(k, dim=1)
        found = top >= 0
        boxes = boxes.gather(1, order.unsqueeze(-1).expand(-1, -1, 4))
        dets = torch.cat([boxes, top.unsqueeze(-1)], -1) * found.unsqueeze(-1)
        labels = torch.where(found, labels.gather(1, order), -1)
        return dets, labels

    @staticmethod
    def output_names():
        return ['dets', 'labels']


def decided_rows(scores: Tensor, gap: float = 1e-6) -> int:
    """How many of the leading rows of one image's ``dets`` scores (sorted,
    descending) are each more than ``gap`` above the next: their order, and
    which of them exist, does not hang on float rounding. Below them, scores
    that tie within rounding may be ranked, kept or cut at ``nms_pre`` /
    ``max_per_img`` either way by two runtimes."""
    steps = (scores[:-1] - scores[1:]) > gap
    undecided = torch.nonzero(~steps)
    return int(undecided[0, 0]) if len(undecided) else max(len(scores) - 1, 0)
