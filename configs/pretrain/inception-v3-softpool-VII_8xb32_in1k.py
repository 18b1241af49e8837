# InceptionV3 with SoftPool at every pooling site of the paper's Table 6
# (column VII), trained with the paper's recipe (_base_/softpool_imagenet.py)
# at InceptionV3's own input size: random crops resized to 299, val images
# resized to 342 (short side) and center-cropped to 299, as MMPretrain's
# inception-v3_8xb32_in1k.py. Columns N (no SoftPool) to VI replace fewer
# sites, from the input on: inception-v3-softpool-{N,I,...,VI}_8xb32_in1k.py.
# The sites and the layers each covers are listed in
# mmsoftpool/models/pool_slots.py (INCEPTION_V3_POOL_SITES).
_base_ = [
    'mmpretrain::_base_/models/inception_v3.py',
    './_base_/softpool_imagenet.py',
]

model = dict(
    backbone=dict(
        type='SoftPoolInceptionV3',
        soft_pool_sites=[
            'pool_1', 'pool_2', 'mixed_5b-d', 'mixed_6a', 'mixed_6b-e',
            'mixed_7a', 'mixed_7b-d'
        ]))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=299),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=342, edge='short'),
    dict(type='CenterCrop', crop_size=299),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
