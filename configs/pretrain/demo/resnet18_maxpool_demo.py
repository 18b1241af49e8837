# ResNet-18 classifier (MMPretrain's, max-pool stem) trained from scratch on
# the generated shapes: 3 classes (circle, square, triangle), 32x32 images, 100
# train and 30 val images a class, made under data/demo_cls on first use
# (DemoShapesDataset, mmsoftpool/datasets/demo.py). 60 iterations: a few
# minutes on 2 CPU cores.
_base_ = [
    'mmpretrain::_base_/models/resnet18.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(
    imports=['mmsoftpool'],
    allow_failed_imports=False)

num_classes = 3
model = dict(head=dict(num_classes=num_classes, topk=(1, )))
data_preprocessor = dict(
    num_classes=num_classes,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)

# `_scope_`: a config inheriting this one as `mmsoftpool::pretrain/demo/...`
# would otherwise build these in the `mmsoftpool` scope, which serves the
# detection configs (mmsoftpool/registry.py).
dataset = dict(
    type='DemoShapesDataset', root='data/demo_cls', _scope_='mmpretrain')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackInputs'),
]
# Loading a 32x32 PNG costs far less than a step: no worker processes.
train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    dataset=dict(**dataset, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=32,
    num_workers=0,
    dataset=dict(**dataset, split='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ), _scope_='mmpretrain')
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# 10 iterations an epoch; the lr is divided by 10 for the last epoch.
max_epochs = 6
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[5], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=3)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=5),
    checkpoint=dict(type='AtomicCheckpointHook', interval=3, max_keep_ckpts=1))
randomness = dict(seed=0)
