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
    # Sized for CPU training: for 16 positive RoIs an image, mmdet's default
    # mask head (four 256-channel convs) costs 132 GFLOPs forward on a batch
    # of 8, ten times the backbone and FPN; 64 channels cost 14 GFLOPs and
    # keep its depth and 28x28 masks.
    roi_head=dict(
        bbox_head=dict(num_classes=3),
        mask_head=dict(num_classes=3, conv_out_channels=64)),
    # An image holds at most 4 objects, so 64 sampled RoIs an image (mmdet's
    # default is 512) and 300 proposals at test time (default 1000) are
    # plenty.
    train_cfg=dict(rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(max_per_img=300)))
