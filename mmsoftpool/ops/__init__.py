"""The SoftPool op and modules; importable with torch alone.

Where MMEngine is installed, the modules are also registered in its MODELS
registry (so configs build them and every downstream registry finds them) and
the op's FLOPs handle is added to its complexity analysis.
"""
from ..optional import is_installed
from .export import enable_export, export_decompositions
from .soft_pool import SoftPool1d, SoftPool2d, SoftPool3d, soft_pool1d, soft_pool2d, soft_pool3d

if is_installed('mmengine'):
    from mmengine.registry import MODELS
    for _module in (SoftPool1d, SoftPool2d, SoftPool3d):
        MODELS.register_module(module=_module)
    from . import flops  # noqa: F401

__all__ = [
    'soft_pool1d', 'soft_pool2d', 'soft_pool3d', 'SoftPool1d', 'SoftPool2d',
    'SoftPool3d', 'enable_export', 'export_decompositions'
]
