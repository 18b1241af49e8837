_base_ = 'mmdet::_base_/default_runtime.py'

# An epoch is 8 iterations: log every 4 so that progress shows, keep only the
# latest checkpoint.
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=4),
    checkpoint=dict(type='AtomicCheckpointHook', interval=8, max_keep_ckpts=1))
randomness = dict(seed=0)
# Exact resume (`tools/train.py --resume`): random states saved in and restored
# from each checkpoint; a resume from a checkpoint that does not fit the model
# fails with the mismatched keys listed. The hooks come with mmsoftpool, so the
# max-pool twins import it too.
custom_imports = dict(imports=['mmsoftpool'], allow_failed_imports=False)
custom_hooks = [dict(type='RNGStateHook'), dict(type='CheckpointMatchHook')]
