# RetinaNet R-34 with its max-pool stem: the baseline of
# retinanet_r34_softpool.py (MMDetection ships only).
_base_ = 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py'
custom_imports = dict(imports=['mmsoftpool'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        depth=34,
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet34')))
# Checkpoints written atomically, outdated ones removed only after the new
# one is safe (mmsoftpool's CheckpointHook, docs/checkpoints.md).
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
