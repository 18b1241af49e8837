"""Detectors with their post-processing in the graph, for export.

mmdet post-processes with Python control flow and per-image lists; the
wrappers here compute the same in batched tensors of fixed width per image,
so that ``torch.onnx.export`` gives a model that returns boxes.

:class:`DenseDetectorEnd2End` (RetinaNet) does what
``BaseDenseHead.predict_by_feat`` does:

1. per FPN level: the sigmoid scores, the ``nms_pre`` best (anchor, class)
   pairs, their anchors (the head's ``prior_generator`` on the level's
   runtime size) and their decoded boxes (clipped to the input image);
2. the pairs of all levels above ``score_thr`` with a box larger than
   ``min_bbox_size``, suppressed class by class with ONNX's
   ``NonMaxSuppression`` (mmdet's ``batched_nms``);
3. the ``max_per_img`` best that are left, by score.

:class:`TwoStageEnd2End` (Mask R-CNN, Faster R-CNN) does what
``TwoStageDetector.predict`` does: the RPN's proposals as above (levels in
the place of classes, as ``RPNHead`` does), the RoI features with
torchvision's ``roi_align`` (the exporter's ``RoiAlign``; mmcv's op has no
export), the box head's class-specific boxes through ``multiclass_nms``, then
the mask head on the detections.

Outputs: ``dets`` (N, K, 5: x1, y1, x2, y2, score), ``labels`` (N, K) and,
with a mask head, ``masks`` (N, K, M, M): each detection's mask
probabilities in its box, as the mask head predicts them (sigmoid, the
detection's class). K = min(max_per_img, candidates), sorted by score; rows
past an image's last detection are zeros with label -1. Boxes are in the
input's pixels, clipped to the input; mapping them (and pasting the masks)
to the original image is the application's, as it knows the resize it made.
"""
import torch
import torchvision
from torch import Tensor, nn

from .nms import nms


class UnsupportedDetector(ValueError):
    """The detector or its test_cfg has no end-to-end export here."""


def _check_anchor_head(name: str, head) -> None:
    from mmdet.models.dense_heads import AnchorHead
    if not isinstance(head, AnchorHead):
        raise UnsupportedDetector(
            f'{name}: --end2end exports anchor heads (RetinaNet, RPN), not '
            f'{type(head).__name__}')
    if not head.use_sigmoid_cls:
        raise UnsupportedDetector(f'{name}: --end2end needs sigmoid scores')
    _check_coder(name, head.bbox_coder)


def _check_coder(name: str, coder) -> None:
    from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
    if not isinstance(coder, DeltaXYWHBBoxCoder) or coder.use_box_type:
        raise UnsupportedDetector(f'{name}: --end2end needs DeltaXYWHBBoxCoder, '
                                  f'not {type(coder).__name__}')


def _check_nms(name: str, cfg, key: str) -> None:
    nms_cfg = cfg.get('nms') or {}
    if nms_cfg.get('type') != 'nms' or nms_cfg.get('class_agnostic', False):
        raise UnsupportedDetector(
            f"{name}: {key}.nms={dict(nms_cfg)}: --end2end exports "
            "class-wise dict(type='nms', iou_threshold=...)")


def decode(coder, anchors: Tensor, deltas: Tensor, max_shape) -> Tensor:
    """The coder's own ``delta2bbox``: its ``decode()`` takes a dead mmdet 2.x
    path (``mmdet.core``) while torch.onnx exports."""
    from mmdet.models.task_modules.coders.delta_xywh_bbox_coder import delta2bbox
    return delta2bbox(anchors, deltas, coder.means, coder.stds, max_shape,
                      clip_border=coder.clip_border, add_ctr_clamp=coder.add_ctr_clamp,
                      ctr_clamp=coder.ctr_clamp)


def level_candidates(head, cls_scores, bbox_preds, nms_pre: int, max_shape):
    """Per FPN level, the ``nms_pre`` best (anchor, class) pairs by sigmoid
    score, with their decoded boxes; all levels concatenated: boxes (N, M, 4),
    scores, classes and levels (N, M)."""
    priors = head.prior_generator.grid_priors(
        [score.shape[-2:] for score in cls_scores], dtype=cls_scores[0].dtype,
        device=cls_scores[0].device)
    boxes, scores, classes, levels = [], [], [], []
    for level, (cls_score, bbox_pred, level_priors) in enumerate(
            zip(cls_scores, bbox_preds, priors)):
        n = cls_score.shape[0]
        level_scores = cls_score.permute(0, 2, 3, 1).reshape(n, -1).sigmoid()
        deltas = bbox_pred.permute(0, 2, 3, 1).reshape(n, -1, 4)
        k = level_scores.shape[1]
        if nms_pre > 0:
            k = torch.sym_min(nms_pre, k)
        top_scores, pairs = level_scores.topk(k, dim=1)
        anchor = torch.div(pairs, head.cls_out_channels, rounding_mode='floor')
        index = anchor.unsqueeze(-1).expand(-1, -1, 4)
        level_boxes = decode(head.bbox_coder, level_priors[anchor].reshape(-1, 4),
                             deltas.gather(1, index).reshape(-1, 4), max_shape)
        boxes.append(level_boxes.reshape(n, -1, 4))
        scores.append(top_scores)
        classes.append(pairs - anchor * head.cls_out_channels)
        levels.append(torch.full_like(pairs, level))
    return (torch.cat(boxes, 1), torch.cat(scores, 1), torch.cat(classes, 1),
            torch.cat(levels, 1))


def larger_than(boxes: Tensor, min_bbox_size: float) -> Tensor:
    """mmdet's ``min_bbox_size`` filter: width and height above it; none
    when it is negative."""
    if min_bbox_size < 0:
        return torch.ones_like(boxes[..., 0], dtype=torch.bool)
    sizes = boxes[..., 2:] - boxes[..., :2]
    return (sizes > min_bbox_size).all(-1)


def suppress(boxes: Tensor, scores: Tensor, labels: Tensor, valid: Tensor,
             num_classes: int, iou_threshold: float, max_num: int):
    """mmdet's ``batched_nms`` then the ``max_num`` best, per image, on the
    ``valid`` candidates: boxes (N, M, 4), scores, labels and valid (N, M).
    Returns dets (N, K, 5), labels (N, K) with -1 past an image's last kept
    box, and which rows are kept (N, K)."""
    classes = torch.arange(num_classes, device=labels.device)
    # -1 below every candidate's score (a sigmoid or softmax is >= 0), so
    # that NonMaxSuppression's score_threshold drops exactly the masked ones
    class_scores = torch.where(
        (labels.unsqueeze(1) == classes[:, None]) & valid.unsqueeze(1),
        scores.unsqueeze(1), -1.0)
    selected = nms(boxes, class_scores, iou_threshold, -0.5)
    kept = torch.zeros_like(scores, dtype=torch.bool)
    kept[selected[:, 0], selected[:, 2]] = True
    ranked = torch.where(kept, scores, -1.0)
    k = ranked.shape[1]
    if max_num > 0:
        k = torch.sym_min(max_num, k)
    top, order = ranked.topk(k, dim=1)
    found = top >= 0
    boxes = boxes.gather(1, order.unsqueeze(-1).expand(-1, -1, 4))
    dets = torch.cat([boxes, top.unsqueeze(-1)], -1) * found.unsqueeze(-1)
    return dets, torch.where(found, labels.gather(1, order), -1), found


class DenseDetectorEnd2End(nn.Module):
    """A one-stage detector with an anchor head (RetinaNet), end to end."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        head = getattr(detector, 'bbox_head', None)
        name = type(detector).__name__
        _check_anchor_head(name, head)
        cfg = head.test_cfg
        _check_nms(name, cfg, 'test_cfg')
        if cfg.get('min_bbox_size', -1) > 0:
            # mmdet compares it in the original image's pixels, which the
            # graph does not know
            raise UnsupportedDetector(
                f'{name}: test_cfg.min_bbox_size={cfg.min_bbox_size}: --end2end '
                'exports 0 or -1 (no filter)')
        self.detector, self.head, self.cfg = detector, head, cfg

    def forward(self, image: Tensor):
        cfg = self.cfg
        cls_scores, bbox_preds = self.detector._forward(image)
        boxes, scores, labels, _ = level_candidates(
            self.head, cls_scores, bbox_preds, cfg.get('nms_pre', -1), image.shape[-2:])
        valid = (scores > cfg.get('score_thr', 0.0)) & larger_than(
            boxes, cfg.get('min_bbox_size', -1))
        dets, labels, _ = suppress(boxes, scores, labels, valid, self.head.num_classes,
                                   cfg.nms.iou_threshold, cfg.get('max_per_img', -1))
        return dets, labels

    @staticmethod
    def output_names():
        return ['dets', 'labels']


def extract_rois(extractor, feats, rois: Tensor) -> Tensor:
    """mmdet's ``SingleRoIExtractor`` with torchvision's ``roi_align`` (mmcv's
    ``RoIAlign`` computes the same and has no export): each RoI (K, 5: batch
    index, x1, y1, x2, y2) pooled on the FPN level its scale maps to."""
    feats = feats[:extractor.num_inputs]
    levels = extractor.map_roi_levels(rois, len(feats))
    pooled = feats[0].new_zeros(rois.shape[0], extractor.out_channels,
                                *extractor.roi_layers[0].output_size)
    for level, (feat, layer) in enumerate(zip(feats, extractor.roi_layers)):
        index = torch.nonzero(levels == level).squeeze(1)
        pooled[index] = torchvision.ops.roi_align(
            feat, rois[index], layer.output_size, layer.spatial_scale,
            layer.sampling_ratio, layer.aligned)
    return pooled


def batch_rois(boxes: Tensor) -> Tensor:
    """(N, K, 4) boxes as (N * K, 5) RoIs with their image's index first."""
    n, k = boxes.shape[:2]
    index = torch.arange(n, dtype=boxes.dtype, device=boxes.device)
    return torch.cat([index.view(n, 1, 1).expand(n, k, 1), boxes], -1).reshape(-1, 5)


class TwoStageEnd2End(nn.Module):
    """A two-stage detector (RPN, ``StandardRoIHead`` with a box head and an
    optional mask head: Faster / Mask R-CNN), end to end."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        from mmcv.ops import RoIAlign
        from mmdet.models.roi_heads import StandardRoIHead
        from mmdet.models.roi_heads.mask_heads import FCNMaskHead
        from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
        name = type(detector).__name__
        rpn, roi_head = detector.rpn_head, detector.roi_head
        _check_anchor_head(name, rpn)
        _check_nms(name, rpn.test_cfg, 'test_cfg.rpn')
        if type(roi_head) is not StandardRoIHead or roi_head.with_shared_head:
            raise UnsupportedDetector(f'{name}: --end2end exports StandardRoIHead '
                                      f'without a shared head, not {type(roi_head).__name__}')
        _check_nms(name, roi_head.test_cfg, 'test_cfg.rcnn')
        bbox_head = roi_head.bbox_head
        _check_coder(name, bbox_head.bbox_coder)
        if bbox_head.custom_cls_channels:
            raise UnsupportedDetector(f'{name}: --end2end needs softmax box scores')
        extractors = [roi_head.bbox_roi_extractor]
        if roi_head.with_mask:
            if not isinstance(roi_head.mask_head, FCNMaskHead) or (
                    roi_head.share_roi_extractor):
                raise UnsupportedDetector(f'{name}: --end2end exports FCNMaskHead '
                                          'with its own RoI extractor')
            extractors.append(roi_head.mask_roi_extractor)
        for extractor in extractors:
            if type(extractor) is not SingleRoIExtractor or not all(
                    isinstance(layer, RoIAlign) and layer.pool_mode == 'avg'
                    and not layer.use_torchvision for layer in extractor.roi_layers):
                raise UnsupportedDetector(
                    f"{name}: --end2end exports SingleRoIExtractor with RoIAlign(pool_mode='avg')")
        self.detector, self.rpn, self.roi_head = detector, rpn, roi_head

    def forward(self, image: Tensor):
        max_shape = image.shape[-2:]
        feats = self.detector.extract_feat(image)
        rpn_cfg = self.rpn.test_cfg
        boxes, scores, _, levels = level_candidates(
            self.rpn, *self.rpn(feats), rpn_cfg.get('nms_pre', -1), max_shape)
        # RPNHead.predict_by_feat, rescale=False: min_bbox_size in the
        # input's pixels, then NMS level by level
        valid = larger_than(boxes, rpn_cfg.get('min_bbox_size', -1))
        proposals, _, proposed = suppress(
            boxes, scores, levels, valid, self.rpn.prior_generator.num_levels,
            rpn_cfg.nms.iou_threshold, rpn_cfg.max_per_img)
        dets, labels = self._boxes(feats, proposals[..., :4], proposed, max_shape)
        if not self.roi_head.with_mask:
            return dets, labels
        return dets, labels, self._masks(feats, dets, labels)

    def _boxes(self, feats, proposals: Tensor, proposed: Tensor, max_shape):
        """``StandardRoIHead.predict_bbox`` (rescale=False)."""
        head, cfg = self.roi_head.bbox_head, self.roi_head.test_cfg
        n, p = proposals.shape[:2]
        cls_score, bbox_pred = head(extract_rois(
            self.roi_head.bbox_roi_extractor, feats, batch_rois(proposals)))
        # multiclass_nms: a candidate per (proposal, class), background left out
        classes = head.num_classes
        scores = cls_score.softmax(-1)[:, :classes].reshape(n, p * classes)
        regressed = 1 if head.reg_class_agnostic else classes
        boxes = decode(head.bbox_coder,
                       proposals.reshape(-1, 1, 4).expand(-1, regressed, 4).reshape(-1, 4),
                       bbox_pred.reshape(-1, 4), max_shape)
        boxes = boxes.reshape(n * p, regressed, 4).expand(-1, classes, 4).reshape(n, -1, 4)
        labels = torch.arange(classes, device=boxes.device).repeat(n, p)
        valid = (scores > cfg.score_thr) & proposed.repeat_interleave(classes, 1)
        dets, labels, _ = suppress(boxes, scores, labels, valid, classes,
                                   cfg.nms.iou_threshold, cfg.max_per_img)
        return dets, labels

    def _masks(self, feats, dets: Tensor, labels: Tensor) -> Tensor:
        """``StandardRoIHead.predict_mask``: each detection's mask of its
        class, in its box (zeros for padding rows)."""
        head = self.roi_head.mask_head
        n, k = labels.shape
        logits = head(extract_rois(self.roi_head.mask_roi_extractor, feats,
                                   batch_rois(dets[..., :4])))
        channel = torch.zeros_like(labels) if head.class_agnostic else labels.clamp(min=0)
        size = logits.shape[-2:]
        index = channel.reshape(-1, 1, 1, 1).expand(-1, 1, *size)
        masks = logits.gather(1, index).sigmoid().reshape(n, k, *size)
        return masks * (labels >= 0)[..., None, None]

    def output_names(self):
        return ['dets', 'labels', 'masks'] if self.roi_head.with_mask else ['dets', 'labels']


def end2end_wrapper(detector: nn.Module) -> nn.Module:
    """The end-to-end module of an mmdet detector; UnsupportedDetector
    (its message says why) for one this module does not export."""
    if hasattr(detector, 'roi_head'):
        return TwoStageEnd2End(detector)
    return DenseDetectorEnd2End(detector)


def decided_rows(scores: Tensor, gap: float = 1e-6) -> int:
    """How many of the leading rows of one image's ``dets`` scores (sorted,
    descending) are each more than ``gap`` above the next: their order, and
    which of them exist, does not hang on float rounding. Below them, scores
    that tie within rounding may be ranked, kept or cut at ``nms_pre`` /
    ``max_per_img`` either way by two runtimes."""
    steps = (scores[:-1] - scores[1:]) > gap
    undecided = torch.nonzero(~steps)
    return int(undecided[0, 0]) if len(undecided) else max(len(scores) - 1, 0)
