# The demo classifier whose stem max-pool is a 2x2, stride-2 SoftPool (as in
# the paper's ResNets); every other setting is that of the max-pool baseline.
# Its checkpoint initialises the backbone of a SoftPool RetinaNet-R18
# (configs/retinanet/retinanet_r18_softpool.py); see docs/classification.md.
_base_ = './resnet18_maxpool_demo.py'

# SoftPoolResNet's stem is a 2x2, stride-2 SoftPool by default.
model = dict(backbone=dict(type='SoftPoolResNet'))
