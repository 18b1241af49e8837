"""mmsoftpool: SoftPool for PyTorch, MMEngine, MMDetection and MMPretrain.

With torch alone, ``import mmsoftpool`` (or ``mmsoftpool.ops``) gives the op
and its modules. Where MMEngine is installed (the normal install), importing
it (``custom_imports = dict(imports=['mmsoftpool'])`` in a config) also
registers the modules, the SoftPool backbones (MMPretrain's only where it is
installed), the engine hooks and the demo datasets, and installs the
safe-loading allow-list for ``torch.load``.
"""
from .ops import (
    SoftPool1d,
    SoftPool2d,
    SoftPool3d,
    enable_export,
    export_decompositions,
    soft_pool1d,
    soft_pool2d,
    soft_pool3d,
)
from .optional import is_installed
from .version import __version__

if is_installed('mmengine'):
    from mmengine.config.utils import MODULE2PACKAGE

    # hooks (AtomicCheckpointHook, RNGStateHook, CheckpointMatchHook, LastValidationHook),
    # the 'atomic_local' file backend and CPUAmpOptimWrapper
    from . import (
        checkpoint,  # noqa: F401  safe-loading allow-list for torch.load
        engine,  # noqa: F401
        models,  # noqa: F401  SoftPool backbones for MMDetection
    )
    from .datasets import demo  # noqa: F401  the demo datasets (DemoShapes*)
    from .models import (
        classification,  # noqa: F401  empty without MMPretrain
        video,  # noqa: F401  empty without MMAction2
    )
    if is_installed('mmdet'):
        # ONNXRuntimeDetector (onnxruntime itself is imported when one is built)
        from .deployment import onnxruntime_detector  # noqa: F401

    # `_base_ = 'mmsoftpool::retinanet/...'`: MMEngine resolves `pkg::` only for the
    # packages in its MODULE2PACKAGE table. A module of this package (rather than
    # the distribution) makes MMEngine locate it with importlib, which is also
    # right for editable installs.
    MODULE2PACKAGE.setdefault('mmsoftpool', 'mmsoftpool.version')

__all__ = [
    '__version__', 'soft_pool1d', 'soft_pool2d', 'soft_pool3d', 'SoftPool1d',
    'SoftPool2d', 'SoftPool3d', 'enable_export', 'export_decompositions'
]
