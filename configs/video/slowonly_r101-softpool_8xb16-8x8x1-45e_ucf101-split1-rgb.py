# Table 7's "SRTG r3d-101 with SoftPool", fine-tuned on UCF-101 (split 1) from its
# Kinetics-700 training, as the paper fine-tunes. Paths and schedule are
# those of MMAction2's UCF-101 config
# (recognition/c3d/c3d_sports1m-pretrained_8xb30-16x1x1-45e_ucf101-rgb.py);
# clips and model are those of the Kinetics-700 parent.
_base_ = './slowonly_r101-softpool_8xb16-8x8x1-196e_kinetics700-rgb.py'

# The parent's last checkpoint (train it first, or give yours with
# --cfg-options load_from=...); it is loaded with weights_only=True.
load_from = 'work_dirs/slowonly_r101-softpool_8xb16-8x8x1-196e_kinetics700-rgb/epoch_196.pth'
model = dict(cls_head=dict(num_classes=101))

ucf101 = 'data/ucf101/'
train_dataloader = dict(
    dataset=dict(
        ann_file=ucf101 + 'ucf101_train_split_1_videos.txt',
        data_prefix=dict(video=ucf101 + 'videos')))
val_dataloader = dict(
    dataset=dict(
        ann_file=ucf101 + 'ucf101_val_split_1_videos.txt',
        data_prefix=dict(video=ucf101 + 'videos')))
test_dataloader = dict(
    dataset=dict(
        ann_file=ucf101 + 'ucf101_val_split_1_videos.txt',
        data_prefix=dict(video=ucf101 + 'videos')))

train_cfg = dict(max_epochs=45, val_begin=1, val_interval=5)
param_scheduler = [
    dict(
        type='MultiStepLR',
        begin=0,
        end=45,
        by_epoch=True,
        milestones=[20, 40],
        gamma=0.1)
]
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=0.0005),
    clip_grad=dict(max_norm=40, norm_type=2))
