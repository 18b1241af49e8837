# ResNet-50 whose stem max-pool is a 2x2, stride-2 SoftPool (paper Table 2),
# trained with the paper's recipe (_base_/softpool_imagenet.py).
# The original network with the same recipe:
#   --cfg-options model.backbone.stem_pool_cfg=None
_base_ = [
    'mmpretrain::_base_/models/resnet50.py',
    './_base_/softpool_imagenet.py',
]

model = dict(backbone=dict(type='SoftPoolResNet'))
