# Mask R-CNN R-34 with its max-pool stem: the baseline of
# mask-rcnn_r34_softpool.py (MMDetection ships only).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmsoftpool'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        depth=34,
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet34')),
    neck=dict(in_channels=[64, 128, 256, 512]))
# Checkpoints written atomically, outdated ones removed only after the new
# one is safe (mmsoftpool's CheckpointHook, docs/checkpoints.md).
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
