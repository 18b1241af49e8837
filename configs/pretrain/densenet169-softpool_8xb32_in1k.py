# DenseNet-169 whose stem max-pool (2x2, stride 2) and three transition average
# pools are SoftPool (paper Table 2), trained with the paper's recipe
# (_base_/softpool_imagenet.py).
# The original network with the same recipe:
#   --cfg-options model.backbone.stem_pool_cfg=None
#   model.backbone.transition_pool_cfg=None
_base_ = [
    'mmpretrain::_base_/models/densenet/densenet169.py',
    './_base_/softpool_imagenet.py',
]

model = dict(backbone=dict(type='SoftPoolDenseNet'))
