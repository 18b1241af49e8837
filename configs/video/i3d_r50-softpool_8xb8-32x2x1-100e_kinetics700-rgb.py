# Table 7's "r3d-50 with SoftPool": the I3D ResNet3d-50 whose stem max-pool
# (1x3x3) and temporal max-pool (2x1x1) are SoftPool3d of the same geometry;
# every other setting is that of the max-pool baseline.
_base_ = './i3d_r50_8xb8-32x2x1-100e_kinetics700-rgb.py'

custom_imports = dict(imports=['mmsoftpool'], allow_failed_imports=False)
model = dict(backbone=dict(type='SoftPoolResNet3d'))
