from .atomic_checkpoint_hook import AtomicCheckpointHook
from .checkpoint_match_hook import CheckpointMatchHook, CheckpointMismatchError
from .rng_state_hook import RNGStateHook

__all__ = [
    'AtomicCheckpointHook', 'CheckpointMatchHook', 'CheckpointMismatchError',
    'RNGStateHook'
]
