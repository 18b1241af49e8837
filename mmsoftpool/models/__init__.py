"""Backbones whose pooling layers are chosen by config.

Importing this package registers them in the downstream libraries'
registries (e.g. ``SoftPoolResNet`` in MMDetection's MODELS); the MMPretrain
ones are in :mod:`.classification`.
"""
from .detection import SoftPoolResNet, SoftPoolResNetV1d, SoftPoolResNeXt
from .pool_swap import PoolSlot, PoolSwapMixin

__all__ = [
    'PoolSlot', 'PoolSwapMixin', 'SoftPoolResNet', 'SoftPoolResNetV1d',
    'SoftPoolResNeXt'
]
