"""SoftPool in standard operators, for export (ONNX, ``torch.export``).

The compiled kernels stay the eager and training path; this decomposition is
what an exported graph holds instead of ``mmsoftpool::soft_pool_forward``.
It is exact in the kernels' sense (``csrc/window.h``) and has two formulas,
chosen at run time for the whole input (an ONNX ``If``):

- the paper's, ``avg_pool(x e^x) / avg_pool(e^x)``: one exp, one product and
  two average pools, which ONNX Runtime runs near the cost of its max-pool.
  It is taken where it is exact for the input: no exp or sum overflows and no
  window's maximum is below about -55 (:func:`paper_formula_sums`);
- otherwise the exact per-window one, per window R clipped to the input:
  ``m = max_R x``, ``y = m + sum_i e_i (x_i - m) / sum_i e_i`` with
  ``e_i = exp(x_i - m)``; a NaN cell gives NaN, an infinite maximum gives
  ``y = m`` (log_norm 0), -inf cells take no weight. Cells outside the input
  are masked out by index arithmetic, never padded with -inf (``0 * -inf`` is
  NaN). log_norm always comes from this one.

Half types accumulate in float32.

:func:`enable_export` registers it where ``torch.onnx.export(...,
dynamo=True)`` looks, so a plain export works after that one call;
:func:`export_decompositions` is the table for
``ExportedProgram.run_decompositions``. Importing this module changes no torch
table.
"""
import functools
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch._prims_common import suggest_memory_format

from .soft_pool import _accumulation_dtype, _forward_fake, pooled_size

_FORWARD = torch.ops.mmsoftpool.soft_pool_forward.default


# The paper's formula without the window maximum, y = avg_pool(x e^x) /
# avg_pool(e^x): one exp per cell and two average pools, where the exact
# formula needs each window's maximum broadcast back to its cells. It is exact
# (within float32 rounding) where every w = avg_pool(x e^x) is finite (no exp,
# product or sum overflowed; NaN and infinite cells make some w NaN or
# infinite) and every t = avg_pool(e^x) is at least _SMALLEST_MEAN: then each
# window's maximum is above ln(2**-80) ~ -55, and a cell whose exp is a
# float32 denormal (below -87.3) weighs less than e^-32 of it. Other inputs
# (NaN, infinities, values beyond ~84, windows below ~-55) take the exact
# formula.
_SMALLEST_MEAN = 2.0**-80


def soft_pool_forward_decomposition(input: Tensor, kernel_size: Sequence[int],
                                    stride: Sequence[int],
                                    padding: Sequence[int], ceil_mode: bool):
    """``soft_pool_forward`` (output and log_norm) in standard operators:
    the paper's formula where it is exact for this input, else the exact
    per-window formula (an ONNX ``If``)."""
    x = input.to(_accumulation_dtype(input.dtype))
    args = (kernel_size, stride, padding, ceil_mode)
    w, t, holds = paper_formula_sums(x, *args)

    def exact(x, w, t):
        return (_windowed(x, *args)[0], )

    # the operator, not torch.cond: torch.cond compiles its branches with
    # dynamo, which turns the pooling arguments into inputs of the branches
    # when a second export has other ones
    (output, ) = torch.ops.higher_order.cond(holds, _ratio, exact, (x, w, t))
    _, log_norm = _windowed(x, *args)  # dropped from graphs that do not use it
    memory_format = suggest_memory_format(input)  # the strides of the fake
    return (output.to(input.dtype).contiguous(memory_format=memory_format),
            log_norm.contiguous(memory_format=memory_format))


def paper_formula_sums(x: Tensor, kernel_size: Sequence[int],
                       stride: Sequence[int], padding: Sequence[int],
                       ceil_mode: bool):
    """``w = avg_pool(x e^x)``, ``t = avg_pool(e^x)`` and whether ``w / t``
    is SoftPool's output for ``x`` (a bool tensor)."""
    dim = len(kernel_size)
    pool = functools.partial(_average_pool, kernel_size=kernel_size, stride=stride,
                             padding=padding, ceil_mode=ceil_mode)
    e = torch.exp(x)
    # padded cells add zeros to both sums, and the divisors cancel
    t, w = pool(e), pool(x * e)
    spatial = tuple(range(-dim, 0))
    # w.sum() * 0 is NaN unless every w is finite
    holds = (t.amin(spatial) + w.sum(spatial) * 0 >= _SMALLEST_MEAN).all()
    return w, t, holds


def _average_pool(v: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
                  padding: Sequence[int], ceil_mode: bool) -> Tensor:
    """The average pool of v over 1-D, 2-D or 3-D windows, as 2-D pools of
    4-D tensors where it can: ONNX Runtime runs those with its fast kernels
    (in its blocked NCHWc layout), 1-D and 3-D pools (opset 20) in a generic
    loop three to five times slower. The 3-D sum is separable, (H, W) then D,
    but for ``ceil_mode``: there torch's pooling shape rule specialises a
    dynamic size to the example's, and the reshape between the passes would
    keep that size."""
    kernel_size, stride, padding = list(kernel_size), list(stride), list(padding)
    pool = functools.partial(F.avg_pool2d, ceil_mode=ceil_mode)
    if len(kernel_size) == 2:
        return pool(v, kernel_size, stride, padding)
    if len(kernel_size) == 1:
        return pool(v.unsqueeze(2), [1] + kernel_size, [1] + stride, [0] + padding).squeeze(2)
    if ceil_mode:
        return F.avg_pool3d(v, kernel_size, stride, padding, ceil_mode=True)
    n, c, d, h, w = v.shape
    planes = pool(v.reshape(n, c * d, h, w), kernel_size[1:], stride[1:], padding[1:])
    ho, wo = planes.shape[-2:]
    depth = pool(planes.reshape(n, c, d, ho * wo), [kernel_size[0], 1], [stride[0], 1],
                 [padding[0], 0])
    return depth.reshape(n, c, depth.shape[2], ho, wo)


def _ratio(x, w, t):
    return (w / t, )


def _windowed(x: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
              padding: Sequence[int], ceil_mode: bool):
    """Output and log_norm per window, relative to its maximum (any input)."""
    # imported here: torch itself does not load this module, and import of
    # mmsoftpool should not pay for it
    from torch.fx.experimental.symbolic_shapes import statically_known_true
    dim = len(kernel_size)
    lead = x.dim() - dim  # the (N, C) dims, kept as they are
    masks: List[Tensor] = []
    window_dims: List = []  # (windows, cells) of each spatial dim
    for j in range(dim):
        axis = lead + j
        size = x.shape[axis]
        k, s, p = int(kernel_size[j]), int(stride[j]), int(padding[j])
        windows = pooled_size(size, k, s, p, ceil_mode)
        window_dims += [windows, k]
        if k == s and p == 0 and not ceil_mode:
            # disjoint windows inside the input (the ResNet stem's 2x2, s2):
            # a reshape, no gather, every cell valid
            masks.append(None)
            if not statically_known_true(size == windows * k):
                # (a no-op narrow leaves unused constants in the ONNX graph,
                # which ONNX Runtime warns about)
                x = x.narrow(axis, 0, windows * k)
            continue
        # input position of cell c of window w: w * s - p + c
        position = (torch.arange(windows, device=x.device) * s - p).unsqueeze(1) + \
            torch.arange(k, device=x.device).unsqueeze(0)
        masks.append((position >= 0) & (position < size))
        x = x.index_select(axis, position.clamp(0, size - 1).reshape(-1))
    # each dim split into (windows, cells) by one view: the exporter merges
    # consecutive reshapes and leaves the first one's shape unused
    x = x.view(*x.shape[:lead], *window_dims)
    # (*lead, o1, k1, ..., od, kd) -> (*lead, o1..od, k1..kd). The cells stay
    # in d dims: flattening them is a reshape whose target dynamic-shape
    # export can bake in.
    window = x.permute(
        list(range(lead)) + [lead + 2 * j for j in range(dim)] +
        [lead + 2 * j + 1 for j in range(dim)])
    valid = torch.ones((), dtype=torch.bool, device=x.device)
    for j, mask in enumerate(masks):  # (o_j, k_j) -> broadcast over the rest
        if mask is None:
            continue
        for axis in range(2 * dim):
            if axis not in (j, dim + j):
                mask = mask.unsqueeze(axis)
        valid = valid & mask
    cells = tuple(range(-dim, 0))
    # Python scalars: a tensor constant made here is a lift_fresh_copy, which
    # run_decompositions (functional graphs only) refuses.
    is_nan = torch.isnan(window)
    has_nan = torch.any(is_nan & valid, dim=cells)
    m = torch.where(valid & ~is_nan, window, float('-inf')).amax(cells, keepdim=True)
    finite = torch.isfinite(m)
    shifted = window - torch.where(finite, m, 0.0)
    e = torch.where(valid, torch.exp(shifted), 0.0)
    total = e.sum(cells)
    weighted = torch.where(e != 0, e * shifted, 0.0).sum(cells)  # no 0 * -inf
    m, finite = m.squeeze(cells), finite.squeeze(cells)
    output = torch.where(has_nan, float('nan'),
                         torch.where(finite, m + weighted / total, m))
    log_norm = torch.where(has_nan, float('nan'),
                           torch.where(finite, torch.log(total), 0.0))
    return output, log_norm


def _table_entry(input, kernel_size, stride, padding, ceil_mode):
    """What the global table answers. FakeTensorMode prefers a table entry
    over the op's ``register_fake`` when sizes are symbolic (torch.compile
    with dynamic shapes): outside make_fx tracing, which is where export
    decomposes, the op's own fake answers, with its checks."""
    from torch._subclasses.fake_tensor import FakeTensor
    from torch.fx.experimental.proxy_tensor import get_proxy_mode
    if get_proxy_mode() is None and isinstance(input, FakeTensor):
        return _forward_fake(input, kernel_size, stride, padding, ceil_mode)
    return soft_pool_forward_decomposition(input, kernel_size, stride, padding,
                                           ceil_mode)


def export_decompositions():
    """``torch.export``'s default table plus this op:
    ``ep.run_decompositions(export_decompositions())`` gives a graph of core
    ATen operators without ``mmsoftpool::soft_pool_forward``."""
    table = torch.export.default_decompositions()
    table[_FORWARD] = soft_pool_forward_decomposition
    return table


def enable_export():
    """Lets a plain ``torch.onnx.export(model, args, dynamo=True)`` export
    SoftPool: call it once per process before exporting (the project's export
    tools do). Idempotent; the eager and ``torch.compile`` paths keep running
    the compiled kernels.

    torch 2.14's ONNX exporter decomposes with
    ``torch.export.default_decompositions()`` chained with
    ``torch._decomp.decomposition_table``
    (``torch/onnx/_internal/exporter/_decomp.py``) and offers no public hook
    for an op's decomposition (``custom_translation_table`` takes ONNX
    functions, not torch ones). The table is private API, so it is written
    only when asked for, never at import."""
    import torch._decomp
    torch._decomp.decomposition_table.setdefault(_FORWARD, _table_entry)
    _register_inductor_fallback()


def _register_inductor_fallback():
    """torch.compile keeps calling the compiled kernel: inductor's lowering of
    the op is a fallback to it, with the layout constraint of the op's tags,
    as inductor's implicit fallback would choose. Needed once the table holds
    the op: with it, the implicit fallback raises "a decomposition exists"
    whenever the environment sets ``CI`` (torch/_inductor/lowering.py,
    make_fallback)."""
    from torch._inductor import lowering
    from torch._library.utils import get_layout_constraint_tag
    if _FORWARD in lowering.lowerings:
        return
    tag = get_layout_constraint_tag(_FORWARD, with_default=True)
    lowering.make_fallback(
        _FORWARD,
        layout_constraint=lowering.tag_to_layout_constraint(tag),
        warn=False)
