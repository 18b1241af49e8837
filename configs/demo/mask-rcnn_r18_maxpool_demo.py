# Mask R-CNN-R18 with torchvision's max-pool stem (mmdet's ResNet), trained
# from scratch on the generated demo dataset: the baseline of the SoftPool twin.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    './_base_/demo_shapes_instance.py', './_base_/schedule_demo.py',
    './_base_/default_runtime_demo.py'
]

model = dict(
    # No pretrained weights (nothing is downloaded), so every stage trains and
    # BatchNorm keeps updating its statistics.
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512]),
    roi_head=dict(
        bbox_head=dict(num_classes=3), mask_head=dict(num_classes=3)))
