from .atomic_files import AtomicLocalBackend, write_atomically
from .cpu_amp_optim_wrapper import CPUAmpOptimWrapper
from .hooks import (
                    AtomicCheckpointHook,
                    CheckpointMatchHook,
                    CheckpointMismatchError,
                    LastValidationHook,
                    RNGStateHook,
)
from .resume import find_resumable_checkpoint

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'CheckpointMatchHook', 'CPUAmpOptimWrapper',
    'CheckpointMismatchError', 'LastValidationHook', 'RNGStateHook',
    'find_resumable_checkpoint', 'write_atomically'
]
