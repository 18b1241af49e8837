"""MMAction2's 3-D backbones with config-chosen pooling (paper Section 5,
Table 7).

The same mechanism as the image backbones (:mod:`.pool_swap`, slots in
:mod:`.pool_slots`): MMAction2's own backbone is built unchanged and its stem
pool (``stem_pool_cfg``) and temporal pool (``temporal_pool_cfg``) are then
replaced; both are SoftPool3d of the replaced layer's geometry by default,
``None`` keeps a max-pool. SoftPool has no parameters, so the state-dict keys
are MMAction2's and its checkpoints load unchanged.

MMAction2 is an optional extra (``pip install mmsoftpool[video]``). Where it
is not installed this module is empty and ``import mmsoftpool`` still works.
"""
from ..optional import is_installed
from .pool_slots import RESNET3D_POOL_SLOTS
from .pool_swap import PoolSwapMixin

if not is_installed('mmaction'):
    __all__ = []
else:
    try:
        from mmaction.models.backbones import ResNet2Plus1d, ResNet3d, ResNet3dSlowOnly
    except ModuleNotFoundError as error:
        if 'drn' not in str(error.name):
            raise
        raise ImportError(
            'mmaction2 1.2.0 as published cannot import mmaction.models: '
            'mmaction/models/localizers/__init__.py imports .drn, which its '
            'wheel and sdist do not contain. tools/install_mmaction2.sh '
            'installs a copy with that import removed (see docs/video.md).') from error
    from mmaction.registry import MODELS

    __all__ = ['SoftPoolResNet3d', 'SoftPoolResNet3dSlowOnly', 'SoftPoolResNet2Plus1d']

    @MODELS.register_module()
    class SoftPoolResNet3d(PoolSwapMixin, ResNet3d):
        """MMAction2's ResNet3d (I3D, R3D) with ``stem_pool_cfg`` and
        ``temporal_pool_cfg``; the other arguments are ResNet3d's."""
        pool_slots = RESNET3D_POOL_SLOTS

    @MODELS.register_module()
    class SoftPoolResNet3dSlowOnly(PoolSwapMixin, ResNet3dSlowOnly):
        """MMAction2's SlowOnly backbone with the pooling arguments of
        :class:`SoftPoolResNet3d`."""
        pool_slots = RESNET3D_POOL_SLOTS

    @MODELS.register_module()
    class SoftPoolResNet2Plus1d(PoolSwapMixin, ResNet2Plus1d):
        """MMAction2's ResNet (2+1)d with the pooling arguments of
        :class:`SoftPoolResNet3d` (its forward never uses ``pool2``)."""
        pool_slots = RESNET3D_POOL_SLOTS
