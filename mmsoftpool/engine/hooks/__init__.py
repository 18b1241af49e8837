from .atomic_checkpoint_hook import AtomicCheckpointHook
from .checkpoint_match_hook import CheckpointMatchHook, CheckpointMismatchError
from .last_validation_hook import LastValidationHook
from .rng_state_hook import RNGStateHook

__all__ = [
    'AtomicCheckpointHook', 'CheckpointMatchHook', 'CheckpointMismatchError',
    'LastValidationHook', 'RNGStateHook'
]
