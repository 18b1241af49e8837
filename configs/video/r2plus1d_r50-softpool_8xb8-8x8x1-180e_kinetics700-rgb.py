# Table 7's "SRTG r(2+1)d-50 with SoftPool", on MMAction2's ResNet2Plus1d-50:
# the stem max-pool (1x3x3) is a SoftPool3d of the same geometry; every other
# setting is that of the max-pool baseline.
_base_ = './r2plus1d_r50_8xb8-8x8x1-180e_kinetics700-rgb.py'

custom_imports = dict(imports=['mmsoftpool'], allow_failed_imports=False)
model = dict(backbone=dict(type='SoftPoolResNet2Plus1d'))
