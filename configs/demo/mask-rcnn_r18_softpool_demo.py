# Mask R-CNN-R18 whose stem max-pool is a 2x2, stride-2 SoftPool (as in the
# paper's ResNets); every other setting is that of the max-pool baseline.
_base_ = './mask-rcnn_r18_maxpool_demo.py'

custom_imports = dict(imports=['mmsoftpool'], allow_failed_imports=False)
# SoftPoolResNet's stem is a 2x2, stride-2 SoftPool by default.
model = dict(backbone=dict(type='SoftPoolResNet'))
