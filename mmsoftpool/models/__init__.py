"""Backbones whose pooling layers are chosen by config.

Importing this package registers the MMDetection ones (``SoftPoolResNet``
and its variants in MMDetection's MODELS). The MMPretrain ones are in
:mod:`.classification` and the MMAction2 ones in :mod:`.video`: each library
is optional, so ``mmsoftpool/__init__.py`` imports those modules itself, and
each is empty where its library is missing.
"""
from .detection import SoftPoolResNet, SoftPoolResNetV1d, SoftPoolResNeXt
from .pool_swap import PoolSlot, PoolSwapMixin

__all__ = [
    'PoolSlot', 'PoolSwapMixin', 'SoftPoolResNet', 'SoftPoolResNetV1d',
    'SoftPoolResNeXt'
]
