"""SoftPool (Stergiou et al., ICCV 2021) as a PyTorch operator.

Needs torch alone. The kernels in ``csrc/`` are registered as
``torch.ops.mmsoftpool.soft_pool_forward`` / ``soft_pool_backward``; this
module owns what users see of them: the arguments, normalised as PyTorch's
pooling takes them and checked with messages naming the argument; the fake
(shapes and strides for ``torch.compile`` and export); the autograd formula;
the ``SoftPool{1,2,3}d`` modules. The C++ side re-checks only what a direct
``torch.ops`` call needs to be memory safe (docs/architecture.md).
"""
import math
import operator
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch._prims_common import suggest_memory_format

try:
    from mmsoftpool import _C  # noqa: F401  (loading it registers the ops)
except ImportError as error:
    if 'undefined symbol' in str(error):
        # the usual cause: torch was upgraded (or another one is first on
        # the path) after the library was compiled
        raise ImportError(
            'mmsoftpool: the compiled operator library mmsoftpool._C was '
            f'built against another torch than the installed {torch.__version__} '
            f'({error}). Rebuild it against this torch: in a checkout '
            '`pip install --no-build-isolation -e .` (or `make build`); from '
            'the package index `pip install --no-build-isolation '
            '--force-reinstall --no-deps --no-binary mmsoftpool '
            'mmsoftpool`.') from error
    raise ImportError(
        'mmsoftpool: the compiled operator library mmsoftpool._C could not be '
        f'loaded ({error}). Build it from the repository root with '
        '`pip install --no-build-isolation -e .` (or `make build`), using the '
        'same torch that imports it.') from error

IntOrTuple = Union[int, Sequence[int]]

_forward_op = torch.ops.mmsoftpool.soft_pool_forward
_backward_op = torch.ops.mmsoftpool.soft_pool_backward

# PyTorch's pooling takes 32-bit ints; the C++ checks the same bound.
_MAX_ARGUMENT = 2**31 - 1
# A window's cell count must fit in int64 (the kernels count cells in it).
_MAX_WINDOW_CELLS = 2**63 - 1


class PoolArgs(NamedTuple):
    """Pooling arguments as the op takes them: one int per spatial dim."""
    kernel_size: Tuple[int, ...]
    stride: Tuple[int, ...]
    padding: Tuple[int, ...]
    ceil_mode: bool


def _as_int(value) -> Optional[int]:
    """``value`` as an int, accepted as ``F.max_pool2d`` accepts it (an int,
    anything with ``__index__`` such as numpy integers, a 0-d integer
    tensor); None for anything else (bool, float, other tensors)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Tensor):
        integer = not (value.dtype.is_floating_point or value.dtype.is_complex
                       or value.dtype == torch.bool)
        return int(value) if value.dim() == 0 and integer else None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _as_tuple(value, dim: int, name: str, caller: str) -> Tuple[int, ...]:
    single = _as_int(value)
    if single is not None:
        values = (single, ) * dim
    elif isinstance(value, (tuple, list)) and len(value) == dim:
        values = tuple(_as_int(v) for v in value)
    else:
        values = (None, )
    if None in values:
        raise ValueError(f'{caller}: {name} must be an int or a tuple of '
                         f'{dim} ints, got {name}={value!r}')
    return values


def pool_args(caller: str, dim: int, kernel_size: IntOrTuple,
              stride: Optional[IntOrTuple], padding: IntOrTuple,
              ceil_mode: bool) -> PoolArgs:
    """The arguments of a ``dim``-D pooling, normalised and checked; errors
    name ``caller`` and the argument."""
    kernel = _as_tuple(kernel_size, dim, 'kernel_size', caller)
    if stride is None or (isinstance(stride, (tuple, list)) and not stride):
        stride = kernel  # PyTorch's convention: no stride means kernel_size
    stride = _as_tuple(stride, dim, 'stride', caller)
    padding = _as_tuple(padding, dim, 'padding', caller)
    for arg, values in (('kernel_size', kernel), ('stride', stride),
                        ('padding', padding)):
        if any(v > _MAX_ARGUMENT for v in values):
            raise ValueError(
                f'{caller}: {arg} must be at most 2**31 - 1 (PyTorch\'s '
                f'pooling takes 32-bit ints), got {arg}={values}')
    for arg, values in (('kernel_size', kernel), ('stride', stride)):
        if any(v <= 0 for v in values):
            raise ValueError(
                f'{caller}: {arg} must be positive, got {arg}={values}')
    if any(p < 0 for p in padding):
        raise ValueError(
            f'{caller}: padding must be non-negative, got padding={padding}')
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(
            f'{caller}: padding must be at most half the kernel size, got '
            f'padding={padding} for kernel_size={kernel}')
    if math.prod(kernel) > _MAX_WINDOW_CELLS:
        raise ValueError(
            f'{caller}: kernel_size={kernel} has {math.prod(kernel)} cells a '
            'window, more than int64 can count (2**63 - 1)')
    return PoolArgs(kernel, stride, padding, bool(ceil_mode))


def pooled_size(size, kernel: int, stride: int, padding: int,
                ceil_mode: bool):
    """Output length of one dimension, PyTorch's pooling rule.

    With ``ceil_mode`` the last window may hang over the right padding but
    must start inside the input or its left padding. Written without a branch
    on ``size``, so that it also serves symbolic sizes (the fake under
    dynamic shapes, the export decomposition).
    """
    if not ceil_mode:
        return (size + 2 * padding - kernel) // stride + 1
    last_fitting = (size + 2 * padding - kernel + stride - 1) // stride
    last_starting_inside = (size + padding - 1) // stride
    if stride <= kernel - padding:  # then the second bound is never smaller
        return last_fitting + 1
    return torch.sym_min(last_fitting, last_starting_inside) + 1


def _output_shape(input: Tensor, args: PoolArgs) -> Tuple[int, ...]:
    """The output shape of a checked (N, C, *spatial) or (C, *spatial)
    input; the output must not be empty."""
    dim = len(args.kernel_size)
    out = tuple(
        pooled_size(s, k, st, p, args.ceil_mode) for s, k, st, p in zip(
            input.shape[-dim:], args.kernel_size, args.stride, args.padding))
    if any(o < 1 for o in out):
        raise ValueError(
            f'soft_pool{dim}d: output size {out} is too small for '
            f'input.shape={tuple(input.shape)}, kernel_size={args.kernel_size}, '
            f'stride={args.stride}, padding={args.padding}, '
            f'ceil_mode={args.ceil_mode}')
    return (*input.shape[:-dim], *out)


def _check_input(input: Tensor, dim: int) -> None:
    caller = f'soft_pool{dim}d'
    if not isinstance(input, Tensor):
        raise TypeError(
            f'{caller}: input must be a Tensor, got {type(input).__name__}')
    if not input.is_floating_point():
        raise TypeError(f'{caller}: input must have a floating-point dtype, '
                        f'got dtype={input.dtype}')
    if input.dim() not in (dim + 1, dim + 2):
        raise ValueError(
            f'{caller}: input must be {dim + 1}-D (C, *spatial) or '
            f'{dim + 2}-D (N, C, *spatial), got input.shape='
            f'{tuple(input.shape)}')
    if any(s == 0 for s in input.shape[-dim - 1:]):
        raise ValueError(
            f'{caller}: input has an empty channel or spatial dimension, '
            f'input.shape={tuple(input.shape)} (only the batch may be empty)')


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """ATen's ``toOpMathType`` for floating dtypes: the dtype of log_norm."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.register_fake('mmsoftpool::soft_pool_forward')
def _forward_fake(input, kernel_size, stride, padding, ceil_mode):
    shape = _output_shape(
        input, PoolArgs(tuple(kernel_size), tuple(stride), tuple(padding),
                        ceil_mode))
    memory_format = suggest_memory_format(input)
    output = torch.empty(
        shape,
        dtype=input.dtype,
        device=input.device,
        memory_format=memory_format)
    log_norm = torch.empty(
        shape,
        dtype=_accumulation_dtype(input.dtype),
        device=input.device,
        memory_format=memory_format)
    return output, log_norm


@torch.library.register_fake('mmsoftpool::soft_pool_backward')
def _backward_fake(grad_output, input, log_norm, kernel_size, stride, padding,
                   ceil_mode):
    # The checks of make_backward_geometry (csrc/soft_pool.cpp): with one
    # argument on meta the dispatcher runs this function, not the C++ one.
    shape = _output_shape(
        input, PoolArgs(tuple(kernel_size), tuple(stride), tuple(padding),
                        ceil_mode))
    torch._check(
        tuple(grad_output.shape) == tuple(shape)
        and log_norm.shape == grad_output.shape,
        lambda: f'soft_pool_backward: grad_output {list(grad_output.shape)} '
        f'and log_norm {list(log_norm.shape)} must have the output shape '
        f'{list(shape)}')
    torch._check(
        grad_output.dtype == input.dtype
        and log_norm.dtype == _accumulation_dtype(input.dtype),
        lambda: 'soft_pool_backward: unexpected dtypes (grad_output '
        f'{grad_output.dtype}, input {input.dtype}, log_norm '
        f'{log_norm.dtype})')
    torch._check(
        grad_output.device == input.device == log_norm.device,
        lambda: f'soft_pool_backward: grad_output ({grad_output.device}) and '
        f'log_norm ({log_norm.device}) must be on the input\'s device '
        f'{input.device}')
    return torch.empty_like(
        input, memory_format=suggest_memory_format(input))


def _setup_context(ctx, inputs, output):
    input, kernel_size, stride, padding, ceil_mode = inputs
    _, log_norm = output
    ctx.mark_non_differentiable(log_norm)
    # log_norm never has a gradient: without this autograd would fill a
    # tensor of its size with zeros for every backward.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(input, log_norm)
    ctx.pool_args = (kernel_size, stride, padding, ceil_mode)


def _backward(ctx, grad_output, _grad_log_norm):
    if grad_output is None:  # not materialised: the output took no part
        return None, None, None, None, None
    input, log_norm = ctx.saved_tensors
    grad_input = _backward_op(grad_output, input, log_norm, *ctx.pool_args)
    return grad_input, None, None, None, None


def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        'mmsoftpool: double backward (differentiating the gradient of '
        'soft_pool, e.g. create_graph=True) is not supported')


torch.library.register_autograd(
    'mmsoftpool::soft_pool_forward', _backward, setup_context=_setup_context)
torch.library.register_autograd(
    'mmsoftpool::soft_pool_backward',
    _no_double_backward,
    setup_context=lambda ctx, inputs, output: None)


def _soft_pool(input: Tensor, args: PoolArgs) -> Tensor:
    """The op on checked arguments: the input is checked, then pooled."""
    dim = len(args.kernel_size)
    _check_input(input, dim)
    _output_shape(input, args)
    unbatched = input.dim() == dim + 1
    if unbatched:
        input = input.unsqueeze(0)
    output, _ = _forward_op(input, *args)
    return output.squeeze(0) if unbatched else output


def soft_pool1d(input: Tensor,
                kernel_size: IntOrTuple,
                stride: Optional[IntOrTuple] = None,
                padding: IntOrTuple = 0,
                ceil_mode: bool = False) -> Tensor:
    """SoftPool over (N, C, L) or (C, L); arguments as ``F.avg_pool1d``."""
    return _soft_pool(
        input, pool_args('soft_pool1d', 1, kernel_size, stride, padding,
                         ceil_mode))


def soft_pool2d(input: Tensor,
                kernel_size: IntOrTuple,
                stride: Optional[IntOrTuple] = None,
                padding: IntOrTuple = 0,
                ceil_mode: bool = False) -> Tensor:
    """SoftPool over (N, C, H, W) or (C, H, W); arguments as ``F.avg_pool2d``.

    Each window R gives ``sum_i softmax(x_R)_i * x_i``, computed stably with
    the window maximum. Output shapes (and strides) follow
    ``F.max_pool2d``; padded cells take no weight.
    """
    return _soft_pool(
        input, pool_args('soft_pool2d', 2, kernel_size, stride, padding,
                         ceil_mode))


def soft_pool3d(input: Tensor,
                kernel_size: IntOrTuple,
                stride: Optional[IntOrTuple] = None,
                padding: IntOrTuple = 0,
                ceil_mode: bool = False) -> Tensor:
    """SoftPool over (N, C, D, H, W) or (C, D, H, W); as ``F.avg_pool3d``."""
    return _soft_pool(
        input, pool_args('soft_pool3d', 3, kernel_size, stride, padding,
                         ceil_mode))


class _SoftPoolNd(nn.Module):
    _dim = 0

    def __init__(self,
                 kernel_size: IntOrTuple,
                 stride: Optional[IntOrTuple] = None,
                 padding: IntOrTuple = 0,
                 ceil_mode: bool = False):
        super().__init__()
        # Checked once, when a config is built, not at every forward.
        self._args = pool_args(
            type(self).__name__, self._dim, kernel_size, stride, padding,
            ceil_mode)

    # Read-only views of the checked arguments: assigning one raises rather
    # than being silently ignored by forward.
    kernel_size = property(lambda self: self._args.kernel_size)
    stride = property(lambda self: self._args.stride)
    padding = property(lambda self: self._args.padding)
    ceil_mode = property(lambda self: self._args.ceil_mode)

    def forward(self, input: Tensor) -> Tensor:
        return _soft_pool(input, self._args)

    def extra_repr(self) -> str:
        return (f'kernel_size={self.kernel_size}, stride={self.stride}, '
                f'padding={self.padding}, ceil_mode={self.ceil_mode}')


class SoftPool1d(_SoftPoolNd):
    """SoftPool over 1-D signals; arguments as ``nn.AvgPool1d``."""
    _dim = 1


class SoftPool2d(_SoftPoolNd):
    """SoftPool over 2-D maps; arguments as ``nn.AvgPool2d``."""
    _dim = 2


class SoftPool3d(_SoftPoolNd):
    """SoftPool over 3-D volumes (e.g. video); arguments as ``nn.AvgPool3d``."""
    _dim = 3
