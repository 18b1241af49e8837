# Table 7's r3d-101 (max-pool) mapped to MMAction2's nearest 101-layer 3-D
# ResNet: SlowOnly R101 (ResNet3dSlowOnly; MMAction2 has no SRTG and no
# I3D-101). Its one pooling layer is the stem max-pool 1x3x3 (SlowOnly has no
# temporal pool). From scratch on Kinetics-700, as MMAction2's R101 recipe
# trains it; every other setting is that recipe's.
_base_ = [
    'mmaction::recognition/slowonly/'
    'slowonly_r101_8xb16-8x8x1-196e_kinetics400-rgb.py',
    './_base_/kinetics700.py'
]

model = dict(cls_head=dict(num_classes=700))

# Kinetics-700 (_base_/kinetics700.py) in place of the recipe's Kinetics-400.
train_dataloader = {{_base_.kinetics700.train_dataloader}}
val_dataloader = {{_base_.kinetics700.val_dataloader}}
test_dataloader = {{_base_.kinetics700.test_dataloader}}
