# Table 7's r3d-101 (max-pool) mapped to MMAction2's nearest 101-layer 3-D
# ResNet: SlowOnly R101 (ResNet3dSlowOnly; MMAction2 has no SRTG and no
# I3D-101). Its one pooling layer is the stem max-pool 1x3x3 (SlowOnly has no
# temporal pool). From scratch on Kinetics-700, as MMAction2's R101 recipe
# trains it; every other setting is that recipe's.
_base_ = ('mmaction::recognition/slowonly/'
          'slowonly_r101_8xb16-8x8x1-196e_kinetics400-rgb.py')

model = dict(cls_head=dict(num_classes=700))

# Kinetics-700 where MMAction2's Kinetics-700 configs keep it
# (recognition/slowonly/*_kinetics700-rgb.py); the videos are read by decord.
kinetics700 = 'data/kinetics700/'
train_dataloader = dict(
    dataset=dict(
        ann_file=kinetics700 + 'kinetics700_train_list_videos.txt',
        data_prefix=dict(video=kinetics700 + 'videos_train')))
val_dataloader = dict(
    dataset=dict(
        ann_file=kinetics700 + 'kinetics700_val_list_videos.txt',
        data_prefix=dict(video=kinetics700 + 'videos_val')))
test_dataloader = dict(
    dataset=dict(
        ann_file=kinetics700 + 'kinetics700_val_list_videos.txt',
        data_prefix=dict(video=kinetics700 + 'videos_val')))
