"""MMDetection's ResNet family with config-chosen pooling layers.

Each class is MMDetection's own backbone, built unchanged, with its stem
max-pool replaced by a layer built from ``stem_pool_cfg`` and, optionally,
the average pools of its ``avg_down`` shortcuts by layers built from
``down_pool_cfg`` (slots: :data:`.pool_slots.RESNET_POOL_SLOTS`). Every other
argument is that of the MMDetection class.
"""
from mmdet.models.backbones import ResNet, ResNetV1d, ResNeXt
from mmdet.registry import MODELS

from .pool_slots import RESNET_POOL_SLOTS
from .pool_swap import PoolSwapMixin


@MODELS.register_module()
class SoftPoolResNet(PoolSwapMixin, ResNet):
    """MMDetection's ResNet with ``stem_pool_cfg`` / ``down_pool_cfg``.

    Args:
        stem_pool_cfg (dict | None): config of the layer replacing the stem
            max-pool. Default: ``dict(type='SoftPool2d', kernel_size=2,
            stride=2)``. ``None`` keeps the max-pool.
        down_pool_cfg (dict | None): config of the layers replacing the
            average pools of the downsample shortcuts (``avg_down=True``).
            Without ``kernel_size``, each takes the kernel size, stride,
            padding and ceil mode of the pool it replaces. Default: ``None``
            (unchanged).
        *args, **kwargs: those of :class:`mmdet.models.backbones.ResNet`.
    """
    pool_slots = RESNET_POOL_SLOTS


@MODELS.register_module()
class SoftPoolResNetV1d(PoolSwapMixin, ResNetV1d):
    """MMDetection's ResNetV1d with ``stem_pool_cfg`` / ``down_pool_cfg``.

    The arguments are those of :class:`SoftPoolResNet`.
    """
    pool_slots = RESNET_POOL_SLOTS


@MODELS.register_module()
class SoftPoolResNeXt(PoolSwapMixin, ResNeXt):
    """MMDetection's ResNeXt with ``stem_pool_cfg`` / ``down_pool_cfg``.

    The arguments are those of :class:`SoftPoolResNet`.
    """
    pool_slots = RESNET_POOL_SLOTS
