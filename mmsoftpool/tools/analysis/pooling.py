"""The pooling methods that the analysis tools compare, by name.

SoftPool is :mod:`mmsoftpool.ops`; max, average and power-average are torch's
own pools; stochastic pooling (Zeiler & Fergus, ICLR 2013) is written here
with ``unfold`` + ``multinomial`` since torch has none.
"""
import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from mmsoftpool.ops import soft_pool2d, soft_pool3d

METHODS = ('softpool', 'avg', 'max', 'power', 'stochastic')

IntOrTuple = Union[int, Sequence[int]]


def method_label(method: str, power: float = 2.0, seed: int = 0) -> str:
    """Human-readable name, with the parameter that defines the method."""
    labels = {
        'softpool': 'SoftPool',
        'avg': 'Average',
        'max': 'Maximum',
        'power': f'Power-average (p={power:g})',
        'stochastic': f'Stochastic (seed {seed})',
    }
    if method not in labels:
        raise ValueError(f'unknown pooling method={method!r}; '
                         f'choose from {METHODS}')
    return labels[method]


def _as_tuple(value: IntOrTuple, dim: int, name: str) -> Tuple[int, ...]:
    values = (value, ) * dim if isinstance(value, int) else tuple(value)
    if len(values) != dim or any(
            not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f'{name} must be a positive int or {dim} positive '
                         f'ints for {dim}-D pooling, got {name}={value!r}')
    return values


def stochastic_pool(x: Tensor,
                    kernel_size: IntOrTuple,
                    stride: Optional[IntOrTuple] = None,
                    generator: Optional[torch.Generator] = None) -> Tensor:
    """Stochastic pooling of a non-negative (N, C, *spatial) tensor.

    Each window outputs one of its values, drawn with probability
    proportional to the value (Zeiler & Fergus). An all-zero window outputs 0.
    No padding; output shapes are those of ``max_pool`` with the same
    kernel and stride.
    """
    dim = x.dim() - 2
    kernel = _as_tuple(kernel_size, dim, 'kernel_size')
    stride = kernel if stride is None else _as_tuple(stride, dim, 'stride')
    if (x < 0).any():
        raise ValueError('stochastic_pool: activations must be non-negative '
                         f'(they are sampling weights), got min={x.min():g}')
    windows = x
    for d, (k, s) in enumerate(zip(kernel, stride)):
        windows = windows.unfold(2 + d, k, s)
    out_shape = windows.shape[:2 + dim]
    windows = windows.reshape(-1, math.prod(kernel))
    total = windows.sum(-1, keepdim=True)
    # multinomial needs a positive total; an all-zero window gives 0 whatever
    # is drawn, so draw uniformly there.
    probs = torch.where(total > 0, windows, torch.ones_like(windows))
    index = torch.multinomial(probs, 1, generator=generator)
    return windows.gather(-1, index).reshape(out_shape)


def pool(x: Tensor,
         method: str,
         kernel_size: IntOrTuple,
         stride: Optional[IntOrTuple] = None,
         *,
         power: float = 2.0,
         generator: Optional[torch.Generator] = None) -> Tensor:
    """Pool a (N, C, H, W) or (N, C, T, H, W) tensor with the named method.

    No padding, floor mode; ``stride`` defaults to ``kernel_size``.
    ``power`` is the p of power-average, ``generator`` the random source of
    stochastic pooling.
    """
    dim = x.dim() - 2
    if dim not in (2, 3):
        raise ValueError('pool: x must be (N, C, H, W) or (N, C, T, H, W), '
                         f'got x.shape={tuple(x.shape)}')
    kernel = _as_tuple(kernel_size, dim, 'kernel_size')
    stride = kernel if stride is None else _as_tuple(stride, dim, 'stride')
    two_d = dim == 2
    if method == 'softpool':
        return (soft_pool2d if two_d else soft_pool3d)(x, kernel, stride)
    if method == 'avg':
        return (F.avg_pool2d if two_d else F.avg_pool3d)(x, kernel, stride)
    if method == 'max':
        return (F.max_pool2d if two_d else F.max_pool3d)(x, kernel, stride)
    if method == 'power':
        if not power >= 1 or math.isinf(power):
            raise ValueError('power-average needs a finite power >= 1, got '
                             f'power={power!r}')
        # lp_pool is the p-norm of the window, (sum x^p)^(1/p); dividing by
        # |window|^(1/p) makes it the power mean, in the input's range (a sum
        # would brighten the image by up to |window|).
        lp_pool = F.lp_pool2d if two_d else F.lp_pool3d
        return (lp_pool(x, power, kernel, stride) /
                math.prod(kernel)**(1 / power))
    if method == 'stochastic':
        return stochastic_pool(x, kernel, stride, generator)
    raise ValueError(f'unknown pooling method={method!r}; choose from '
                     f'{METHODS}')


def pool_at_scale(x: Tensor,
                  method: str,
                  kernel_size: IntOrTuple,
                  stride: Optional[IntOrTuple] = None,
                  *,
                  scale: float = 1.0,
                  power: float = 2.0,
                  seed: int = 0) -> Tensor:
    """:func:`pool` of the activations ``x * scale``, divided by ``scale``
    again, as the analysis tools' ``--scale``, ``--power`` and ``--seed``
    define it: stochastic pooling draws from a generator seeded with
    ``seed`` at each call, so every image and kernel gets the same draws."""
    generator = torch.Generator().manual_seed(seed)
    return pool(
        x * scale, method, kernel_size, stride, power=power,
        generator=generator) / scale
