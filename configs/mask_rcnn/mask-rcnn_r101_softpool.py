# Mask R-CNN R-101 with a SoftPool stem (paper Table 8); baseline:
# mmdet::mask_rcnn/mask-rcnn_r101_fpn_1x_coco.py.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r101_fpn_1x_coco.py'
custom_imports = dict(imports=['mmsoftpool'], allow_failed_imports=False)

# SoftPoolResNet's stem is a 2x2, stride-2 SoftPool by default.
model = dict(backbone=dict(type='SoftPoolResNet'))
# Checkpoints written atomically, outdated ones removed only after the new
# one is safe (mmsoftpool's CheckpointHook, docs/checkpoints.md).
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
