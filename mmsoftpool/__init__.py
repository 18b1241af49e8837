"""mmsoftpool: SoftPool for MMEngine / MMDetection / MMPretrain.

Importing it (``custom_imports = dict(imports=['mmsoftpool'])`` in a config)
registers the op's modules, the SoftPool backbones (MMPretrain's only where it
is installed) and the engine hooks, and installs the safe-loading allow-list
for ``torch.load``.
"""
from mmengine.config.utils import MODULE2PACKAGE

from . import checkpoint  # noqa: F401  safe-loading allow-list for torch.load
from . import engine  # noqa: F401  RNGStateHook, CheckpointMatchHook
from . import models  # noqa: F401  SoftPool backbones for MMDetection
from .ops import flops  # noqa: F401  FLOPs of the op in MMEngine's analysis
from .models import classification  # noqa: F401  empty without MMPretrain
from .datasets import demo  # noqa: F401  DemoShapesCocoDataset (first-use demo data)
from .ops import (SoftPool1d, SoftPool2d, SoftPool3d, soft_pool1d,
                  soft_pool2d, soft_pool3d)
from .version import __version__

# `_base_ = 'mmsoftpool::retinanet/...'`: MMEngine resolves `pkg::` only for the
# packages in its MODULE2PACKAGE table. A module of this package (rather than
# the distribution) makes MMEngine locate it with importlib, which is also
# right for editable installs.
MODULE2PACKAGE.setdefault('mmsoftpool', 'mmsoftpool.version')

__all__ = [
    '__version__', 'soft_pool1d', 'soft_pool2d', 'soft_pool3d', 'SoftPool1d',
    'SoftPool2d', 'SoftPool3d'
]
