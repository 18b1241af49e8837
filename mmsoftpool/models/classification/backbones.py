"""MMPretrain's backbones with config-chosen pooling layers (paper Table 2, 6).

The same mechanism as the detection backbones (:mod:`..pool_swap`): each class
is MMPretrain's own backbone, built unchanged, whose listed pooling layers are
then replaced by layers built from config. SoftPool has no parameters, so the
state-dict keys are those of the MMPretrain backbone: a checkpoint of either
loads into the other, and a ResNet / ResNeXt checkpoint initialises the
matching MMDetection backbone (``init_cfg=dict(type='Pretrained',
prefix='backbone.', checkpoint=...)``).

Wide-ResNet is MMPretrain's ``ResNet`` with ``base_channels=128,
expansion=2``, so :class:`SoftPoolResNet` covers it.
"""
from typing import Sequence

from mmpretrain.models.backbones import DenseNet, InceptionV3, ResNet, ResNeXt
from mmpretrain.registry import MODELS
from torch import nn

from ..pool_swap import PoolSlot, PoolSwapMixin

# The paper's replacement of a 3x3, stride-2 stem max-pool: a 2x2, stride-2
# SoftPool (same output size on even inputs), as in the authors' ResNet and
# DenseNet.
STEM_SOFTPOOL = dict(type='SoftPool2d', kernel_size=2, stride=2)
# Without kernel_size, the replacement copies the kernel size, stride,
# padding and ceil mode of each layer it replaces.
SAME_GEOMETRY_SOFTPOOL = dict(type='SoftPool2d')

RESNET_POOL_SLOTS = {
    'stem_pool_cfg':
    PoolSlot((nn.MaxPool2d, ), 'maxpool', STEM_SOFTPOOL),
    # The average pool that starts each avg_down shortcut (ResNetV1d-style).
    'down_pool_cfg':
    PoolSlot((nn.AvgPool2d, ),
             'layer*.*.downsample.0',
             hint=' (such pools exist only with avg_down=True)'),
}

DENSENET_POOL_SLOTS = {
    'stem_pool_cfg':
    PoolSlot((nn.MaxPool2d, ), 'stem.3', STEM_SOFTPOOL),
    # The 2x2, stride-2 average pools between dense blocks (three of them);
    # the last "transition" is only a norm and an activation.
    'transition_pool_cfg':
    PoolSlot((nn.AvgPool2d, ), 'transitions.*.pool', SAME_GEOMETRY_SOFTPOOL),
}

# The pooling sites of the paper's Table 6 and the layers of MMPretrain's
# InceptionV3 each one covers. Every pool of that backbone is a module (none
# is a functional call in 1.2.0): maxpool1/2 of the stem, the 3x3 stride-1
# average pool (``branch_pool_downsample``) of each InceptionA/C/E block and
# the 3x3 stride-2 max-pool (``branch_pool``) of InceptionB/D. The backbone
# has Mixed_7b and Mixed_7c only: the paper's "mixed_7b-d" covers those two.
# Neither the auxiliary head's 5x5 average pool nor the global average pool
# is a site.
INCEPTION_V3_POOL_SITES = {
    'pool_1':
    PoolSlot((nn.MaxPool2d, ), 'maxpool1'),
    'pool_2':
    PoolSlot((nn.MaxPool2d, ), 'maxpool2'),
    'mixed_5b-d':
    PoolSlot((nn.AvgPool2d, ), 'Mixed_5[bcd].branch_pool_downsample'),
    'mixed_6a':
    PoolSlot((nn.MaxPool2d, ), 'Mixed_6a.branch_pool'),
    'mixed_6b-e':
    PoolSlot((nn.AvgPool2d, ), 'Mixed_6[bcde].branch_pool_downsample'),
    'mixed_7a':
    PoolSlot((nn.MaxPool2d, ), 'Mixed_7a.branch_pool'),
    'mixed_7b-d':
    PoolSlot((nn.AvgPool2d, ), 'Mixed_7[bc].branch_pool_downsample'),
}


@MODELS.register_module()
class SoftPoolResNet(PoolSwapMixin, ResNet):
    """MMPretrain's ResNet (and Wide-ResNet) with config-chosen pooling.

    Args:
        stem_pool_cfg (dict | None): config of the layer replacing the stem
            max-pool. Default: ``dict(type='SoftPool2d', kernel_size=2,
            stride=2)``. ``None`` keeps the max-pool.
        down_pool_cfg (dict | None): config of the layers replacing the
            average pools of the downsample shortcuts (``avg_down=True``).
            Without ``kernel_size``, each copies the geometry of the pool it
            replaces. Default: ``None`` (unchanged).
        *args, **kwargs: those of :class:`mmpretrain.models.ResNet`.
    """
    pool_slots = RESNET_POOL_SLOTS


@MODELS.register_module()
class SoftPoolResNeXt(PoolSwapMixin, ResNeXt):
    """MMPretrain's ResNeXt with ``stem_pool_cfg`` / ``down_pool_cfg``.

    The arguments are those of :class:`SoftPoolResNet`.
    """
    pool_slots = RESNET_POOL_SLOTS


@MODELS.register_module()
class SoftPoolDenseNet(PoolSwapMixin, DenseNet):
    """MMPretrain's DenseNet with config-chosen pooling.

    The paper replaces the stem max-pool and the average pools between the
    dense blocks; both are SoftPool by default.

    Args:
        stem_pool_cfg (dict | None): config of the layer replacing the stem
            max-pool (``stem.3``). Default: ``dict(type='SoftPool2d',
            kernel_size=2, stride=2)``. ``None`` keeps the max-pool.
        transition_pool_cfg (dict | None): config of the layers replacing the
            transitions' average pools (``transitions.{0,1,2}.pool``).
            Default: ``dict(type='SoftPool2d')``, which keeps their 2x2,
            stride-2 geometry. ``None`` keeps the average pools.
        *args, **kwargs: those of :class:`mmpretrain.models.DenseNet`.
    """
    pool_slots = DENSENET_POOL_SLOTS


@MODELS.register_module()
class SoftPoolInceptionV3(PoolSwapMixin, InceptionV3):
    """MMPretrain's InceptionV3 whose named pooling sites are SoftPool.

    Args:
        soft_pool_sites (Sequence[str]): the sites of the paper's Table 6
            that are replaced; any of ``pool_1``, ``pool_2``,
            ``mixed_5b-d``, ``mixed_6a``, ``mixed_6b-e``, ``mixed_7a``,
            ``mixed_7b-d`` (see ``INCEPTION_V3_POOL_SITES`` for the layers
            each covers). Default: all of them (Table 6, column VII); an
            empty list is the original network (column N).
        site_pool_cfg (dict): config of the layer replacing each pool of
            those sites. Default: ``dict(type='SoftPool2d')``, which keeps
            the kernel size, stride and padding of each pool.
        *args, **kwargs: those of :class:`mmpretrain.models.InceptionV3`.
    """
    pool_slots = INCEPTION_V3_POOL_SITES

    def __init__(
            self,
            *args,
            soft_pool_sites: Sequence[str] = tuple(INCEPTION_V3_POOL_SITES),
            site_pool_cfg: dict = SAME_GEOMETRY_SOFTPOOL,
            **kwargs):
        if isinstance(soft_pool_sites,
                      str) or not isinstance(soft_pool_sites, (list, tuple)):
            raise TypeError(
                'SoftPoolInceptionV3: soft_pool_sites must be a list of '
                f'site names, got soft_pool_sites={soft_pool_sites!r}')
        unknown = [s for s in soft_pool_sites if s not in self.pool_slots]
        if unknown:
            raise ValueError(
                f'SoftPoolInceptionV3: soft_pool_sites={soft_pool_sites!r} '
                f'names unknown sites {unknown}; the sites are '
                f'{list(self.pool_slots)}')
        repeated = sorted(
            {s
             for s in soft_pool_sites if soft_pool_sites.count(s) > 1})
        if repeated:
            raise ValueError(
                f'SoftPoolInceptionV3: soft_pool_sites={soft_pool_sites!r} '
                f'repeats {repeated}')
        taken = [site for site in self.pool_slots if site in kwargs]
        if taken:
            raise TypeError(
                f'SoftPoolInceptionV3: choose sites with soft_pool_sites, '
                f'not with the keyword arguments {taken}')
        if site_pool_cfg is None:
            raise ValueError(
                'SoftPoolInceptionV3: site_pool_cfg=None; to keep the '
                'original pools, list fewer soft_pool_sites (an empty list '
                'keeps them all)')
        # One keyword per site, read by PoolSwapMixin (the sites' slots).
        kwargs.update({site: site_pool_cfg for site in soft_pool_sites})
        super().__init__(*args, **kwargs)
