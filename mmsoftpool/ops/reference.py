"""A pure-PyTorch SoftPool used as the float64 reference in tests and benchmarks.

Written from the definition with ``unfold`` (so it is slow and memory hungry);
padded cells are -inf, so they take no weight.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from .soft_pool import _pool_args, pooled_size


def soft_pool_reference(input: Tensor, kernel_size, stride=None, padding=0,
                        ceil_mode=False, dtype=torch.float64) -> Tensor:
    """SoftPool of a (N, C, *spatial) or (C, *spatial) tensor in ``dtype``."""
    dim = len(kernel_size) if not isinstance(kernel_size, int) else None
    if dim is None:
        raise ValueError('soft_pool_reference: pass kernel_size as a tuple '
                         'so the number of spatial dimensions is known')
    kernel, stride, padding = _pool_args('soft_pool_reference', dim,
                                         kernel_size, stride, padding)
    unbatched = input.dim() == dim + 1
    x = input.to(dtype)
    if unbatched:
        x = x.unsqueeze(0)
    sizes = x.shape[2:]
    out = [pooled_size(s, k, st, p, ceil_mode)
           for s, k, st, p in zip(sizes, kernel, stride, padding)]
    # Pad left by p and right so that the last window fits: -inf cells.
    pad = []
    for s, k, st, p, o in reversed(list(zip(sizes, kernel, stride, padding, out))):
        right = max(0, (o - 1) * st + k - s - p)
        pad += [p, right]
    x = F.pad(x, pad, value=float('-inf'))
    for d, (k, st) in enumerate(zip(kernel, stride)):
        x = x.unfold(2 + d, k, st)
    x = x[(slice(None), slice(None)) + tuple(slice(0, o) for o in out)]
    x = x.flatten(-dim)  # (N, C, *out, window)
    m = x.amax(-1, keepdim=True)
    finite = torch.isfinite(m)
    e = torch.exp(torch.where(finite, x - m, torch.zeros_like(x)))
    e = torch.where(finite & (x == float('-inf')), torch.zeros_like(e), e)
    shifted = torch.where(e > 0, x - m, torch.zeros_like(x))
    y = m.squeeze(-1) + (e * shifted).sum(-1) / e.sum(-1)
    # Windows whose maximum is not finite: NaN if any NaN, else the maximum.
    y = torch.where(finite.squeeze(-1), y, m.squeeze(-1))
    y = torch.where(torch.isnan(x).any(-1), torch.full_like(y, float('nan')), y)
    return y.squeeze(0) if unbatched else y
