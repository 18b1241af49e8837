"""FLOPs of ``mmsoftpool::soft_pool_forward`` in MMEngine's complexity
analysis (what mmdet's ``tools/analysis_tools/get_flops.py`` reads).

Per output: each of the window's cells costs an exponential, a multiply and
two adds (the sums of e and e * x), and the output one divide:
``outputs * (4 * prod(kernel_size) + 1)``. MMEngine's ``FlopAnalyzer`` takes
its handles from ``_DEFAULT_SUPPORTED_FLOP_OPS``: a private table, but the
only place ``get_model_complexity_info`` (and so ``get_flops.py``) looks; a
public ``set_op_handle`` exists only on an analyzer one builds oneself.
"""
from math import prod

from mmengine.analysis import complexity_analysis
from mmengine.analysis.jit_handles import get_shape

OP_NAME = 'mmsoftpool::soft_pool_forward'


def _int_list(value):
    """A traced ``int[]`` argument: a constant, or a ListConstruct of them."""
    constant = value.toIValue()
    if constant is not None:
        return list(constant)
    return [item.toIValue() for item in value.node().inputs()]


def soft_pool_flop_jit(inputs, outputs):
    kernel_size = _int_list(inputs[1])
    return prod(get_shape(outputs[0])) * (4 * prod(kernel_size) + 1)


complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS.setdefault(
    OP_NAME, soft_pool_flop_jit)
