# What the Table 7 UCF-101 fine-tunes change on their Kinetics-700 parents:
# 101 classes, split 1's lists, and the schedule of MMAction2's UCF-101
# config (recognition/c3d/c3d_sports1m-pretrained_8xb30-16x1x1-45e_ucf101-rgb.py).
# MMEngine refuses a key defined by two bases, so each fine-tune takes these
# by reference (`model = {{_base_.ucf101_finetune.model}}`) and they merge
# into what the parent defines.
ucf101_root = 'data/ucf101/'
ucf101_finetune = dict(
    model=dict(cls_head=dict(num_classes=101)),
    train_dataloader=dict(
        dataset=dict(
            ann_file=ucf101_root + 'ucf101_train_split_1_videos.txt',
            data_prefix=dict(video=ucf101_root + 'videos'))),
    val_dataloader=dict(
        dataset=dict(
            ann_file=ucf101_root + 'ucf101_val_split_1_videos.txt',
            data_prefix=dict(video=ucf101_root + 'videos'))),
    test_dataloader=dict(
        dataset=dict(
            ann_file=ucf101_root + 'ucf101_val_split_1_videos.txt',
            data_prefix=dict(video=ucf101_root + 'videos'))),
    train_cfg=dict(max_epochs=45, val_begin=1, val_interval=5),
    param_scheduler=[
        dict(
            type='MultiStepLR',
            begin=0,
            end=45,
            by_epoch=True,
            milestones=[20, 40],
            gamma=0.1)
    ],
    optim_wrapper=dict(
        optimizer=dict(
            type='SGD', lr=0.001, momentum=0.9, weight_decay=0.0005),
        clip_grad=dict(max_norm=40, norm_type=2)))
