# Mask R-CNN-R18 with torchvision's max-pool stem (mmdet's ResNet), trained
# from scratch on the generated demo dataset: the baseline of the SoftPool twin.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    './_base_/demo_shapes_instance.py', './_base_/schedule_demo.py',
    './_base_/default_runtime_demo.py'
]

# Sized for training on 2 CPU cores (1.8 s an iteration against 4.9 s for
# mmdet's head sizes): 128 FPN channels instead of 256; a 256-d box head
# (mmdet's is 1024-d, 13 GFLOPs forward on a batch of 8); a 64-channel mask
# head that keeps its four convs and 28x28 masks. An image holds at most 4
# objects, so 32 sampled RoIs an image (mmdet's default is 512) and 300
# proposals at test time (default 1000) are plenty.
fpn_channels = 128
model = dict(
    # No pretrained weights (nothing is downloaded), so every stage trains and
    # BatchNorm keeps updating its statistics.
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=fpn_channels),
    rpn_head=dict(in_channels=fpn_channels, feat_channels=fpn_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn_channels),
        bbox_head=dict(
            in_channels=fpn_channels, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(out_channels=fpn_channels),
        mask_head=dict(
            in_channels=fpn_channels, conv_out_channels=64, num_classes=3)),
    train_cfg=dict(rcnn=dict(sampler=dict(num=32))),
    test_cfg=dict(rpn=dict(max_per_img=300)))
