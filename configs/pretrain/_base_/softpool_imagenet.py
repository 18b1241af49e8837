# The paper's ImageNet-1k recipe (Sec. 4.1) on MMPretrain's bases: SGD with
# lr 0.1 and a batch of 256 in total (8 GPUs x 32 images, or any split of 256:
# --auto-scale-lr rescales the lr for another total), the lr divided by 10
# every 40 epochs, 100 epochs, random crops resized to 224 (MMPretrain's
# RandomResizedCrop) and flips; top-1 / top-5 accuracy on the val split.
# Momentum 0.9 and weight decay 1e-4 are MMPretrain's ImageNet defaults (the
# paper gives neither).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmsoftpool'], allow_failed_imports=False)

param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[40, 80], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
auto_scale_lr = dict(base_batch_size=256)
# Checkpoints written atomically, outdated ones removed only after the new
# one is safe (mmsoftpool's CheckpointHook, docs/checkpoints.md).
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
