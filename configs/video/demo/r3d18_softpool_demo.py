# The demo 3-D ResNet-18 whose stem max-pool (1x3x3) and temporal max-pool
# (2x1x1) are SoftPool3d of the same geometry; every other setting is that of
# the max-pool twin.
_base_ = './r3d18_maxpool_demo.py'

model = dict(backbone=dict(type='SoftPoolResNet3d'))
