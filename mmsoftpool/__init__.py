"""mmsoftpool: SoftPool for MMEngine / MMDetection / MMPretrain."""
from . import checkpoint  # noqa: F401  safe-loading allow-list for torch.load
from .ops import (SoftPool1d, SoftPool2d, SoftPool3d, soft_pool1d,
                  soft_pool2d, soft_pool3d)
from . import models  # noqa: F401,E402  registers the SoftPool backbones
from .version import __version__

__all__ = [
    '__version__', 'soft_pool1d', 'soft_pool2d', 'soft_pool3d', 'SoftPool1d',
    'SoftPool2d', 'SoftPool3d'
]
