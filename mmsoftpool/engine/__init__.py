from .atomic_files import AtomicLocalBackend, write_atomically
from .hooks import (AtomicCheckpointHook, CheckpointMatchHook,
                    CheckpointMismatchError, RNGStateHook)
from .resume import find_resumable_checkpoint

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'CheckpointMatchHook',
    'CheckpointMismatchError',
    'RNGStateHook', 'find_resumable_checkpoint', 'write_atomically'
]
