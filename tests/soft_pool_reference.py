"""SoftPool from its definition in plain PyTorch, the float64 oracle of the tests.

Independent of the op: its own arguments, PyTorch's own max-pool for the
output size, ``unfold`` for the windows (slow and memory hungry). Padded cells
are -inf, so they take no weight.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def soft_pool_reference(input: Tensor, kernel_size, stride=None, padding=0,
                        ceil_mode=False, dtype=torch.float64) -> Tensor:
    """SoftPool of a (N, C, *spatial) or (C, *spatial) tensor in ``dtype``;
    ``kernel_size`` is a tuple (it gives the number of spatial dims)."""
    dim = len(kernel_size)

    def per_dim(value):
        return tuple(value) if isinstance(value, (tuple, list)) else (value, ) * dim

    kernel = per_dim(kernel_size)
    stride = per_dim(kernel if stride is None else stride)
    padding = per_dim(padding)
    x = input.to(dtype)
    unbatched = x.dim() == dim + 1
    if unbatched:
        x = x.unsqueeze(0)
    sizes = x.shape[2:]
    out = MAX_POOL[dim](torch.empty(x.shape, device='meta'), kernel, stride, padding,
                        ceil_mode=ceil_mode).shape[2:]
    # Pad left by p and right so that the last window fits: -inf cells.
    pad = []
    for s, k, st, p, o in reversed(list(zip(sizes, kernel, stride, padding, out))):
        pad += [p, max(0, (o - 1) * st + k - s - p)]
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
