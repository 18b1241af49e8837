"""SoftPool variants of MMPretrain's backbones, for ImageNet pre-training.

MMPretrain is an optional extra (``pip install mmsoftpool[cls]``). Where it
is not installed this package is empty and ``import mmsoftpool`` still works;
where it is installed but broken, its import error is raised, not hidden.
"""
try:
    import mmpretrain  # noqa: F401
except ModuleNotFoundError as error:
    if error.name != 'mmpretrain':
        raise  # mmpretrain is there but one of its own imports failed
    __all__ = []
else:
    from .backbones import (INCEPTION_V3_POOL_SITES, SoftPoolDenseNet,
                            SoftPoolInceptionV3, SoftPoolResNet,
                            SoftPoolResNeXt)

    __all__ = [
        'INCEPTION_V3_POOL_SITES', 'SoftPoolDenseNet', 'SoftPoolInceptionV3',
        'SoftPoolResNet', 'SoftPoolResNeXt'
    ]
