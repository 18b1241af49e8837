"""MMPretrain's backbones with config-chosen pooling layers (paper Table 2, 6).

The same mechanism as the detection backbones (:mod:`.pool_swap`, slots in
:mod:`.pool_slots`): each class is MMPretrain's own backbone, built
unchanged, whose listed pooling layers are then replaced by layers built from
config. SoftPool has no parameters, so the state-dict keys are those of the
MMPretrain backbone: a checkpoint of either loads into the other, and a
ResNet / ResNeXt checkpoint initialises the matching MMDetection backbone
(``init_cfg=dict(type='Pretrained', prefix='backbone.', checkpoint=...)``).

Wide-ResNet is MMPretrain's ``ResNet`` with ``base_channels=128,
expansion=2``, so :class:`SoftPoolResNet` covers it.

MMPretrain is an optional extra (``pip install mmsoftpool[cls]``). Where it
is not installed this module is empty and ``import mmsoftpool`` still works;
where it is installed but broken, its import error is raised, not hidden.
"""
from ..optional import is_installed
from .pool_slots import DENSENET_POOL_SLOTS, INCEPTION_V3_POOL_SITES, RESNET_POOL_SLOTS
from .pool_swap import PoolSwapMixin

if not is_installed('mmpretrain'):
    __all__ = []
else:
    from mmpretrain.models.backbones import DenseNet, InceptionV3, ResNet, ResNeXt
    from mmpretrain.registry import MODELS

    __all__ = [
        'INCEPTION_V3_POOL_SITES', 'SoftPoolDenseNet', 'SoftPoolInceptionV3',
        'SoftPoolResNet', 'SoftPoolResNeXt'
    ]

    @MODELS.register_module()
    class SoftPoolResNet(PoolSwapMixin, ResNet):
        """MMPretrain's ResNet (and Wide-ResNet) with config-chosen pooling.

        ``stem_pool_cfg`` and ``down_pool_cfg`` (same slots, same defaults)
        are those of :class:`mmsoftpool.models.detection.SoftPoolResNet`; the
        other arguments those of :class:`mmpretrain.models.ResNet`.
        """
        pool_slots = RESNET_POOL_SLOTS

    @MODELS.register_module()
    class SoftPoolResNeXt(PoolSwapMixin, ResNeXt):
        """MMPretrain's ResNeXt with ``stem_pool_cfg`` / ``down_pool_cfg``.

        The pooling arguments are those of :class:`SoftPoolResNet`.
        """
        pool_slots = RESNET_POOL_SLOTS

    @MODELS.register_module()
    class SoftPoolDenseNet(PoolSwapMixin, DenseNet):
        """MMPretrain's DenseNet with config-chosen pooling.

        The paper replaces the stem max-pool and the average pools between
        the dense blocks; both are SoftPool by default.

        Args:
            stem_pool_cfg (dict | None): config of the layer replacing the
                stem max-pool (``stem.3``). Default: ``dict(type='SoftPool2d',
                kernel_size=2, stride=2)``. ``None`` keeps the max-pool.
            transition_pool_cfg (dict | None): config of the layers
                replacing the transitions' average pools
                (``transitions.{0,1,2}.pool``). Default:
                ``dict(type='SoftPool2d')``, which keeps their 2x2, stride-2
                geometry. ``None`` keeps the average pools.
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
                ``mixed_7b-d`` (see ``INCEPTION_V3_POOL_SITES`` for the
                layers each covers). Default: all of them (Table 6, column
                VII); an empty list is the original network (column N).
            site_pool_cfg (dict): config of the layer replacing each pool of
                those sites. Default: ``dict(type='SoftPool2d')``, which
                keeps the kernel size, stride and padding of each pool.
            *args, **kwargs: those of :class:`mmpretrain.models.InceptionV3`.
        """
        pool_sites = INCEPTION_V3_POOL_SITES
