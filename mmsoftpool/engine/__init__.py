from .hooks import CheckpointMatchHook, RNGStateHook

__all__ = ['CheckpointMatchHook', 'RNGStateHook']
