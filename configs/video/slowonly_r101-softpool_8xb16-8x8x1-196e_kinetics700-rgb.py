# Table 7's "SRTG r3d-101 with SoftPool", on MMAction2's SlowOnly R101: the
# stem max-pool (1x3x3) is a SoftPool3d of the same geometry; every other
# setting is that of the max-pool baseline.
_base_ = './slowonly_r101_8xb16-8x8x1-196e_kinetics700-rgb.py'

custom_imports = dict(imports=['mmsoftpool'], allow_failed_imports=False)
model = dict(backbone=dict(type='SoftPoolResNet3dSlowOnly'))
