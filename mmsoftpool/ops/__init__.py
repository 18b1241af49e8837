"""The SoftPool op and modules; importable with torch alone.

Where MMEngine is installed, the modules are also registered in its MODELS
registry (so configs build them and every downstream registry finds them) and
the op's FLOPs handle is added to its complexity analysis.
"""
from .soft_pool import (SoftPool1d, SoftPool2d, SoftPool3d, soft_pool1d,
                        soft_pool2d, soft_pool3d)

try:
    from mmengine.registry import MODELS
except ModuleNotFoundError as error:
    if error.name != 'mmengine':
        raise  # mmengine is there but one of its own imports failed
else:
    for _module in (SoftPool1d, SoftPool2d, SoftPool3d):
        MODELS.register_module(module=_module)
    from . import flops  # noqa: F401

__all__ = [
    'soft_pool1d', 'soft_pool2d', 'soft_pool3d', 'SoftPool1d', 'SoftPool2d',
    'SoftPool3d'
]
