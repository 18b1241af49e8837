# Mask R-CNN R-34 with its max-pool stem: the baseline of
# mask-rcnn_r34_softpool.py (MMDetection ships only).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        depth=34,
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet34')),
    neck=dict(in_channels=[64, 128, 256, 512]))
