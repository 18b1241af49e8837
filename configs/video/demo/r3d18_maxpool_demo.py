# A small 3-D ResNet-18 (I3D-style ResNet3d, 16 base channels) trained from
# scratch on the generated action clips (mmsoftpool/datasets/action_demo.py:
# 4 classes, 32x32 frames) on CPU: the max-pool twin of
# r3d18_softpool_demo.py. `make demo TASK=video POOL=max` runs it. Its two
# pooling layers are MMAction2's: the stem max-pool 1x3x3 (stride 1x2x2) and
# the temporal max-pool 2x1x1 after layer1.
_base_ = 'mmaction::_base_/default_runtime.py'

# The dataset (and the checkpoint hooks below) come with mmsoftpool.
custom_imports = dict(imports=['mmsoftpool'], allow_failed_imports=False)

# `_scope_`: a config inheriting this one as `mmsoftpool::video/demo/...` would
# otherwise build the dicts defined here in the `mmsoftpool` scope, which
# serves the detection configs (mmsoftpool/registry.py).
model = dict(
    type='Recognizer3D',
    _scope_='mmaction',
    backbone=dict(
        type='ResNet3d',
        depth=18,
        base_channels=32,
        pretrained=None,
        pretrained2d=False,
        conv1_kernel=(3, 7, 7),
        conv1_stride_t=1,
        pool1_stride_t=1,
        with_pool2=True,
        inflate=(1, 1, 1, 1),
        conv_cfg=dict(type='Conv3d'),
        norm_eval=False,
        zero_init_residual=False),
    cls_head=dict(
        type='I3DHead',
        num_classes=4,
        in_channels=256,
        spatial_type='avg',
        dropout_ratio=0.0,
        init_std=0.01,
        average_clips='prob'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[127.5, 127.5, 127.5],
        std=[64.0, 64.0, 64.0],
        format_shape='NCTHW'))

# Clips of 16 frames; the model sees 8 of them, every second one, from a
# random start in training and from the middle in validation.
dataset_type = 'DemoActionsDataset'
data_root = 'data/demo_video'
train_pipeline = [
    dict(type='SampleFrames', clip_len=8, frame_interval=2, num_clips=1),
    dict(type='RawFrameDecode'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(
        type='SampleFrames',
        clip_len=8,
        frame_interval=2,
        num_clips=1,
        test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
# Decoding a 32x32 PNG costs far less than a training step: the data is read
# in the main process and both CPU cores are left to the model.
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        _scope_='mmaction',
        root=data_root,
        split='train',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        _scope_='mmaction',
        root=data_root,
        split='val',
        pipeline=val_pipeline,
        test_mode=True))
test_dataloader = val_dataloader
# Top-1 and mean class accuracy, and the confusion matrix the demo draws.
val_evaluator = [
    dict(
        type='AccMetric',
        _scope_='mmaction',
        metric_options=dict(top_k_accuracy=dict(topk=(1, )))),
    dict(type='ConfusionMatrix', _scope_='mmaction', num_classes=4)
]
test_evaluator = val_evaluator

max_epochs = 24
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=4)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs,
        eta_min=0,
        by_epoch=True,
        begin=0,
        end=max_epochs)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=10, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=8)

# An epoch is 20 iterations: log every 10, keep only the latest checkpoint.
# Exact resume (tools/train.py --resume), as in the image demos.
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='AtomicCheckpointHook', interval=4, max_keep_ckpts=1))
custom_hooks = [dict(type='RNGStateHook'), dict(type='CheckpointMatchHook')]
randomness = dict(seed=0)
