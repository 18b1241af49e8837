"""Mixed-precision training on the CPU, as ``AmpOptimWrapper`` does it on a
GPU: MMEngine's ``AmpOptimWrapper`` refuses to start without a GPU (NPU,
MLU, MUSA), so a CPU run of a config that asks for bfloat16 uses this one::

    optim_wrapper = dict(type='CPUAmpOptimWrapper', optimizer=...)

The forward and the loss run under ``torch.autocast('cpu',
dtype=torch.bfloat16)``; the backward and the step are
:class:`~mmengine.optim.OptimWrapper`'s. bfloat16 has float32's exponent
range, so gradients need no loss scaling (torch's CPU AMP recipe has none).
SoftPool runs in its input's dtype under autocast (docs/architecture.md).
"""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):

    def __init__(self, dtype='bfloat16', **kwargs):
        if dtype not in ('bfloat16', torch.bfloat16):
            raise ValueError(f"CPUAmpOptimWrapper: dtype={dtype!r}: CPU autocast "
                             "trains in 'bfloat16' (float16 would need loss scaling)")
        super().__init__(**kwargs)

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast('cpu', dtype=torch.bfloat16):
            yield
