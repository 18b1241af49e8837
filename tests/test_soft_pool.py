"""The SoftPool op against its float64 reference, PyTorch's pooling rules and
the gradient, on every available device."""
import random
import subprocess

import numpy as np
import pytest
import torch
import torch._inductor.config
import torch.nn.functional as F

import mmsoftpool
from helpers import run_python
from mmsoftpool import SoftPool1d, SoftPool2d, SoftPool3d
from mmsoftpool.ops import soft_pool1d, soft_pool2d, soft_pool3d
from soft_pool_reference import soft_pool_reference

SOFT_POOL = {1: soft_pool1d, 2: soft_pool2d, 3: soft_pool3d}
MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def random_case(rng: random.Random, dim: int):
    """A random valid (shape, kernel, stride, padding, ceil_mode) for dim."""
    while True:
        kernel = tuple(rng.randint(1, 4) for _ in range(dim))
        stride = tuple(rng.randint(1, 4) for _ in range(dim))
        padding = tuple(rng.randint(0, k // 2) for k in kernel)
        ceil_mode = rng.random() < 0.5
        sizes = tuple(rng.randint(1, 9 if dim < 3 else 6) for _ in range(dim))
        shape = (rng.randint(0, 2) if rng.random() < 0.1 else rng.randint(1, 2),
                 rng.randint(1, 3)) + sizes
        try:
            MAX_POOL[dim](torch.empty(shape), kernel, stride, padding,
                          ceil_mode=ceil_mode)
        except RuntimeError:
            continue  # the output would be empty: not a valid case
        return shape, kernel, stride, padding, ceil_mode


CASES = [(dim, ) + random_case(random.Random(1000 * dim + i), dim)
         for dim in (1, 2, 3) for i in range(25)]


def strided_along_w(x: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """The same values with W stride 2 (every other element of a wider
    tensor): not contiguous along W nor channels_last, so the generic
    (non-vectorised) CPU kernel runs."""
    wide = torch.empty(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype, device=x.device)
    wide[..., offset::2] = x
    return wide[..., offset::2]


def layouts(x: torch.Tensor):
    """The same values in several memory layouts."""
    yield 'contiguous', x
    yield 'strided', strided_along_w(x)
    if x.dim() == 4:
        yield 'channels_last', x.contiguous(memory_format=torch.channels_last)
    if x.dim() == 5:
        yield 'channels_last_3d', x.contiguous(
            memory_format=torch.channels_last_3d)


@pytest.mark.parametrize('dim,shape,kernel,stride,padding,ceil_mode', CASES)
def test_matches_reference_and_max_pool_shape(device, dim, shape, kernel,
                                              stride, padding, ceil_mode):
    x = torch.randn(shape, dtype=torch.float64, device=device) * 3
    expected = soft_pool_reference(x, kernel, stride, padding, ceil_mode)
    for name, xl in layouts(x):
        for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
            y = SOFT_POOL[dim](xl.to(dtype), kernel, stride, padding, ceil_mode)
            max_y = MAX_POOL[dim](
                xl.to(dtype), kernel, stride, padding, ceil_mode=ceil_mode)
            assert y.shape == max_y.shape, name
            assert y.stride() == max_y.stride(), name
            torch.testing.assert_close(
                y.double(), expected, rtol=tol, atol=tol, msg=name)


@pytest.mark.parametrize('dim,shape,kernel,stride,padding,ceil_mode',
                         CASES[::3])
def test_gradient_matches_reference(device, dim, shape, kernel, stride,
                                    padding, ceil_mode):
    x = torch.randn(shape, dtype=torch.float64, device=device) * 3
    ref_x = x.clone().requires_grad_()
    ref_y = soft_pool_reference(ref_x, kernel, stride, padding, ceil_mode)
    grad = torch.randn_like(ref_y)
    (expected, ) = torch.autograd.grad(ref_y, ref_x, grad)
    for name, xl in layouts(x):
        for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
            xd = xl.to(dtype).requires_grad_()
            y = SOFT_POOL[dim](xd, kernel, stride, padding, ceil_mode)
            (dx, ) = torch.autograd.grad(y, xd, grad.to(dtype))
            max_x = xl.to(dtype).requires_grad_()
            max_y = MAX_POOL[dim](
                max_x, kernel, stride, padding, ceil_mode=ceil_mode)
            (max_dx, ) = torch.autograd.grad(max_y, max_x, grad.to(dtype))
            assert dx.stride() == max_dx.stride(), name
            torch.testing.assert_close(
                dx.double(), expected, rtol=tol, atol=tol, msg=name)


@pytest.mark.parametrize('dim,kernel,stride,padding,ceil_mode', [
    (1, 3, 2, 1, True),
    (2, (2, 2), None, 0, False),
    (2, (3, 3), (2, 2), (1, 1), True),
    (2, (3, 2), (1, 2), (1, 0), False),
    (3, (2, 3, 2), (1, 2, 2), (1, 1, 0), True),
])
def test_gradcheck(device, dim, kernel, stride, padding, ceil_mode):
    shape = (2, 3) + (5, 7, 6)[:dim]
    x = torch.randn(shape, dtype=torch.float64, device=device)
    for _, xl in layouts(x):
        xl = xl.detach().requires_grad_()
        assert torch.autograd.gradcheck(
            lambda t: SOFT_POOL[dim](t, kernel, stride, padding, ceil_mode),
            (xl, ))


def opcheck_samples(device):
    x = torch.randn(2, 3, 7, 6, device=device)
    yield x, [2, 2], [2, 2], [0, 0], False
    yield x.contiguous(memory_format=torch.channels_last), [3, 3], [2, 2], [1, 1], True
    yield x.requires_grad_(), [3, 2], [1, 2], [1, 0], False
    yield torch.randn(2, 3, 9, device=device, dtype=torch.float64), [3], [2], [1], True
    yield (torch.randn(1, 2, 4, 5, 6, device=device).contiguous(
        memory_format=torch.channels_last_3d), [2, 2, 2], [2, 1, 2], [1, 1, 0], True)
    yield (torch.randn(2, 3, 8, 8, device=device, dtype=torch.bfloat16), [2, 2], [2, 2], [0, 0],
           False)


def test_opcheck(device):
    for args in opcheck_samples(device):
        torch.library.opcheck(torch.ops.mmsoftpool.soft_pool_forward.default, args)
        x, kernel, stride, padding, ceil_mode = args
        output, log_norm = torch.ops.mmsoftpool.soft_pool_forward(*args)
        torch.library.opcheck(
            torch.ops.mmsoftpool.soft_pool_backward.default,
            (torch.randn_like(output), x.detach(), log_norm, kernel, stride,
             padding, ceil_mode))


def test_torch_compile_fullgraph(device, monkeypatch):
    # After enable_export (the table holds the op's decomposition), CI=1 makes
    # inductor refuse an implicit fallback; the op's own lowering answers.
    # Caches off, so the lowering really runs. Before enable_export:
    # test_deployment.py::test_import_changes_no_torch_table_and_compile_runs_without_export.
    mmsoftpool.enable_export()
    monkeypatch.setenv('CI', '1')
    monkeypatch.setattr(torch._inductor.config, 'force_disable_caches', True)
    torch._dynamo.reset()

    def step(x):
        return soft_pool2d(x.relu(), 3, 2, 1).square().sum()

    x = torch.randn(2, 4, 11, 10, device=device, requires_grad=True)
    compiled = torch.compile(step, fullgraph=True)
    loss = compiled(x)
    (dx, ) = torch.autograd.grad(loss, x)
    x_eager = x.detach().requires_grad_()
    loss_eager = step(x_eager)
    (dx_eager, ) = torch.autograd.grad(loss_eager, x_eager)
    torch.testing.assert_close(loss, loss_eager)
    torch.testing.assert_close(dx, dx_eager)


@pytest.mark.parametrize('dtype,tol', [(torch.float16, 2e-3),
                                       (torch.bfloat16, 1.6e-2)])
@pytest.mark.parametrize('scale', [1.0, 100.0, 5000.0])
def test_reduced_precision(device, dtype, tol, scale):
    """Output within one rounding of the float64 result of the same input;
    the gradient within a few roundings; no overflow at large magnitudes
    (float16 exp overflows above ~11)."""
    x = (torch.randn(2, 8, 13, 12, device=device) * scale).to(dtype)
    for kernel, stride, padding in (((2, 2), None, 0), ((3, 3), 2, 1)):
        expected = soft_pool_reference(x, kernel, stride, padding)
        xg = x.clone().requires_grad_()
        y = soft_pool2d(xg, kernel, stride, padding)
        assert y.dtype == dtype and torch.isfinite(y).all()
        torch.testing.assert_close(y.double(), expected, rtol=tol, atol=tol * scale * 1e-2)
        grad = torch.randn_like(y)
        (dx, ) = torch.autograd.grad(y, xg, grad)
        ref_x = x.double().requires_grad_()
        (ref_dx, ) = torch.autograd.grad(
            soft_pool_reference(ref_x, kernel, stride, padding), ref_x, grad.double())
        torch.testing.assert_close(dx.double(), ref_dx, rtol=4 * tol, atol=4 * tol)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_autocast_keeps_the_input_dtype_as_max_pool(device, dtype):
    """Autocast (bfloat16 on CPU, float16 on CUDA) casts nothing for SoftPool:
    it runs in its input's dtype, as max_pool2d does, forward and backward."""
    fast = torch.bfloat16 if device == 'cpu' else torch.float16
    x = (torch.randn(2, 4, 10, 12, device=device) * 3).to(dtype).requires_grad_()
    with torch.autocast(device, dtype=fast):
        y = soft_pool2d(x, 3, 2, 1)
        assert y.dtype == F.max_pool2d(x, 3, 2, 1).dtype == dtype
        grad = torch.randn_like(y)
        (dx, ) = torch.autograd.grad(y, x, grad)
    assert dx.dtype == dtype
    x_plain = x.detach().requires_grad_()
    y_plain = soft_pool2d(x_plain, 3, 2, 1)
    assert torch.equal(y, y_plain)
    assert torch.equal(dx, torch.autograd.grad(y_plain, x_plain, grad)[0])


@pytest.mark.parametrize('shift', [1e4, 1e6, -3e7])
def test_shift_equivariance_and_stable_gradient(device, shift):
    """pool(x + c) = pool(x) + c up to rounding proportional to |c|, and the
    gradient, which does not depend on c, stays exact for large c."""
    x = torch.randn(2, 3, 10, 10, device=device)
    shifted = x + shift
    y = soft_pool2d(shifted, 3, 2, 1)
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(y, soft_pool2d(x, 3, 2, 1) + shift,
                               rtol=0, atol=8 * eps * abs(shift))
    torch.testing.assert_close(
        y.double(), soft_pool_reference(shifted, (3, 3), 2, 1),
        rtol=0, atol=2 * eps * abs(shift))
    xs = shifted.clone().requires_grad_()
    grad = torch.randn(y.shape, device=device)
    (dx, ) = torch.autograd.grad(soft_pool2d(xs, 3, 2, 1), xs, grad)
    ref_x = shifted.double().requires_grad_()
    (ref_dx, ) = torch.autograd.grad(
        soft_pool_reference(ref_x, (3, 3), 2, 1), ref_x, grad.double())
    torch.testing.assert_close(dx.double(), ref_dx, rtol=1e-5, atol=1e-5)


def test_extreme_finite_values(device):
    big = torch.finfo(torch.float32).max
    x = torch.tensor([[[big, -big, big / 2, 0.0]]], device=device)
    assert soft_pool1d(x, 2).tolist() == [[[big, big / 2]]]
    x = torch.tensor([[[1e-30, -1e30, 3.0, 3.0]]], device=device)
    torch.testing.assert_close(soft_pool1d(x, 2), torch.tensor([[[1e-30, 3.0]]], device=device))


def test_definition_properties(device):
    x = torch.randn(2, 3, 8, 8, device=device, dtype=torch.float64)
    # A constant window returns the constant.
    const = torch.full((1, 2, 6, 6), -7.25, device=device)
    assert (soft_pool2d(const, 3, 3) == -7.25).all()
    # Scaled by b, SoftPool / b tends to max pooling as b grows (within
    # max_delta(delta * exp(-b delta)) = 1 / (e b)) and to average pooling as
    # b tends to 0.
    torch.testing.assert_close(soft_pool2d(x * 1e7, 2) / 1e7, F.max_pool2d(x, 2),
                               rtol=0, atol=1e-7)
    torch.testing.assert_close(soft_pool2d(x * 1e-6, 2) / 1e-6, F.avg_pool2d(x, 2),
                               rtol=1e-5, atol=1e-5)


def test_special_values(device):
    nan, inf = float('nan'), float('inf')
    x = torch.tensor([[[1.0, nan, inf, 2.0, -inf, 3.0, -inf, -inf, inf, inf]]],
                     device=device, requires_grad=True)
    y = soft_pool1d(x, 2)
    expected = torch.tensor([[[nan, inf, 3.0, -inf, inf]]], device=device)
    torch.testing.assert_close(y, expected, equal_nan=True)
    (dx, ) = torch.autograd.grad(y, x, torch.ones_like(y))
    # NaN window: NaN; +inf window: to the +inf cell(s) only, shared; -inf
    # cells: no weight; an all -inf window: no gradient.
    torch.testing.assert_close(
        dx,
        torch.tensor([[[nan, nan, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5]]],
                     device=device),
        equal_nan=True)
    # A padded border takes no weight: padding next to -inf keeps -inf.
    z = torch.tensor([[[-inf, 1.0, 2.0]]], device=device)
    torch.testing.assert_close(soft_pool1d(z, 3, 2, 1), soft_pool_reference(z, (3, ), 2, 1).float())


def test_backward_is_deterministic(device):
    x = torch.randn(4, 16, 33, 31, device=device, requires_grad=True)
    grad = torch.randn(4, 16, 17, 16, device=device)
    threads = torch.get_num_threads()
    results = []
    try:
        for num_threads in (threads, 1, threads):
            torch.set_num_threads(num_threads)
            y = soft_pool2d(x, 3, 2, 1)
            results.append(torch.autograd.grad(y, x, grad)[0])
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_unbatched_empty_and_expanded_grad(device):
    x = torch.randn(3, 9, 8, device=device, requires_grad=True)
    y = soft_pool2d(x, 3, 2, 1, True)
    torch.testing.assert_close(y, soft_pool2d(x.unsqueeze(0), 3, 2, 1, True)[0])
    assert y.shape == F.max_pool2d(x, 3, 2, 1, ceil_mode=True).shape
    y.sum().backward()  # an expanded (stride-0) gradient
    ref_x = x.detach().double().requires_grad_()
    soft_pool_reference(ref_x, (3, 3), 2, 1, True).sum().backward()
    torch.testing.assert_close(x.grad.double(), ref_x.grad, rtol=1e-5, atol=1e-5)
    empty = torch.randn(0, 4, 6, 6, device=device, requires_grad=True)
    out = soft_pool2d(empty, 2)
    assert out.shape == (0, 4, 3, 3)
    out.sum().backward()
    assert empty.grad.shape == empty.shape


def test_ceil_mode_rule_of_pytorch():
    # The last window would start in the right padding: dropped, as max_pool does.
    x = torch.randn(1, 1, 5)
    assert soft_pool1d(x, 2, 2, 1, ceil_mode=True).shape[-1] == 3
    assert F.max_pool1d(x, 2, 2, 1, ceil_mode=True).shape[-1] == 3


@pytest.mark.parametrize('dim,shape,kernel,stride,padding,ceil_mode', CASES)
def test_fake_follows_max_pool_shape_and_strides(dim, shape, kernel, stride, padding,
                                                 ceil_mode):
    """The Python output-size rule (the fake, used by torch.compile and
    export) against PyTorch's, as the C++ one is in the tests above."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    x = torch.randn(shape)
    expected = MAX_POOL[dim](x, kernel, stride, padding, ceil_mode=ceil_mode)
    with FakeTensorMode() as mode:
        output, log_norm = torch.ops.mmsoftpool.soft_pool_forward(
            mode.from_tensor(x), kernel, stride, padding, ceil_mode)
    assert output.shape == expected.shape == log_norm.shape
    assert output.stride() == expected.stride()


def test_double_backward_says_unsupported():
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    (dx, ) = torch.autograd.grad(soft_pool2d(x, 2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match='double backward'):
        dx.sum().backward()


@pytest.mark.parametrize('call,error,message', [
    (lambda: soft_pool2d(torch.ones(1, 1, 4, 4, dtype=torch.int64), 2), TypeError,
     'dtype=torch.int64'),
    (lambda: soft_pool2d(torch.ones(4, 4), 2), ValueError, r'input.shape=\(4, 4\)'),
    (lambda: soft_pool2d(torch.ones(1, 1, 1, 4, 4), 2), ValueError, 'input.shape'),
    (lambda: soft_pool2d(torch.ones(1, 1, 4, 4), 0), ValueError, r'kernel_size=\(0, 0\)'),
    (lambda: soft_pool2d(torch.ones(1, 1, 4, 4), 2, (1, 0)), ValueError, r'stride=\(1, 0\)'),
    (lambda: soft_pool2d(torch.ones(1, 1, 4, 4), 2, 2, -1), ValueError, r'padding=\(-1, -1\)'),
    (lambda: soft_pool2d(torch.ones(1, 1, 4, 4), 3, 2, 2), ValueError, 'at most half'),
    (lambda: soft_pool2d(torch.ones(1, 1, 4, 4), (2, 2, 2)), ValueError,
     r'kernel_size=\(2, 2, 2\)'),
    (lambda: soft_pool2d(torch.ones(1, 1, 4, 4), 2.0), ValueError, 'kernel_size=2.0'),
    (lambda: soft_pool2d(torch.ones(1, 1, 2, 2), 3), ValueError, 'output size'),
    (lambda: soft_pool1d(torch.ones(1, 0, 4), 2), ValueError, 'empty'),
    (lambda: SoftPool2d(kernel_size=3, padding=2), ValueError, 'SoftPool2d: padding'),
    (lambda: SoftPool3d(kernel_size=(2, 2)), ValueError, 'SoftPool3d: kernel_size'),
])
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_modules_build_from_registries():
    from mmdet.registry import MODELS as DET_MODELS
    from mmengine.registry import MODELS
    x = torch.randn(2, 3, 8, 8)
    for registry in (MODELS, DET_MODELS):
        layer = registry.build(dict(type='SoftPool2d', kernel_size=3, stride=2, padding=1))
        torch.testing.assert_close(layer(x), soft_pool2d(x, 3, 2, 1))
    assert isinstance(MODELS.build(dict(type='SoftPool1d', kernel_size=2)), SoftPool1d)
    assert isinstance(MODELS.build(dict(type='SoftPool3d', kernel_size=2)), SoftPool3d)
    assert dict(SoftPool2d(2).named_parameters()) == {}
    try:
        from mmpretrain.registry import MODELS as CLS_MODELS
    except ImportError:
        return
    assert isinstance(CLS_MODELS.build(dict(type='SoftPool2d', kernel_size=2)), SoftPool2d)


def test_missing_library_says_how_to_build():
    code = ("import sys; sys.modules['mmsoftpool._C'] = None\n"
            "import mmsoftpool.ops")
    result = run_python(code, check=False)
    assert result.returncode != 0
    assert 'pip install --no-build-isolation -e .' in result.stderr


# Tolerances of the vectorised kernels against the float64 reference of the
# same (rounded) input: float32 and float64 compute in their own type,
# bfloat16 and float16 in float32 with one rounding on store (half an ulp:
# 2**-9 and 2**-12 relative), so within the reduced-precision test's bounds.
VECTOR_TOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 2e-3,
              torch.bfloat16: 1.6e-2}
VECTOR_DTYPES = list(VECTOR_TOL)

VECTOR_CASES = [((2, 2), None, 0, False), ((2, 2), None, 0, True), ((3, 3), 2, 1, False),
                ((3, 3), 1, 1, True), ((2, 2), 1, 0, False), ((5, 4), (3, 2), (2, 1), True),
                ((1, 3), (1, 3), 0, False)]


@pytest.mark.parametrize('kernel,stride,padding,ceil_mode', VECTOR_CASES)
@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize('dtype', VECTOR_DTYPES)
def test_vectorised_kernels_on_wide_inputs(device, kernel, stride, padding, ceil_mode,
                                           memory_format, dtype):
    """Wide rows and many channels, so the SIMD loads, the deinterleaving of
    stride 2 and the partial vectors at the ends all run."""
    x = (torch.randn(2, 19, 23, 37, dtype=torch.float64, device=device) * 4)
    xv = x.to(dtype).contiguous(memory_format=memory_format).requires_grad_()
    y = soft_pool2d(xv, kernel, stride, padding, ceil_mode)
    assert y.dtype == dtype
    tol = VECTOR_TOL[dtype]
    ref_x = x.to(dtype).double().requires_grad_()
    ref_y = soft_pool_reference(ref_x, kernel, stride, padding, ceil_mode)
    torch.testing.assert_close(y.double(), ref_y, rtol=tol, atol=tol)
    grad = torch.randn_like(ref_y).to(dtype).double()  # what the op gets
    (dx, ) = torch.autograd.grad(y, xv, grad.to(dtype))
    assert dx.dtype == dtype and dx.is_contiguous(memory_format=memory_format)
    (ref_dx, ) = torch.autograd.grad(ref_y, ref_x, grad)
    torch.testing.assert_close(dx.double(), ref_dx, rtol=tol, atol=tol)


@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
def test_special_values_agree_across_kernels(device, memory_format):
    """NaN, +inf and -inf scattered in a wide input: the vectorised and the
    generic kernels give the same output and gradient, NaNs included."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 11, 17, 35, generator=gen)
    specials = torch.tensor([float('nan'), float('inf'), float('-inf')])
    where = torch.rand(x.shape, generator=gen) < 0.06
    x[where] = specials[torch.randint(0, 3, (int(where.sum()), ), generator=gen)]
    x = x.to(device)
    grad = torch.randn(2, 11, 9, 18, generator=gen).to(device)
    results = []
    for xl in (x.contiguous(memory_format=memory_format), strided_along_w(x)):
        xl = xl.detach().requires_grad_()
        y = soft_pool2d(xl, 3, 2, 1, True)
        (dx, ) = torch.autograd.grad(y, xl, grad)
        results.append((y, dx))
    torch.testing.assert_close(results[0][0], soft_pool_reference(x, (3, 3), 2, 1, True).float(),
                               equal_nan=True)
    torch.testing.assert_close(results[0][0], results[1][0], equal_nan=True)
    torch.testing.assert_close(results[0][1], results[1][1], equal_nan=True)


# Tall inputs, one or a few planes: the vectorised backward works in chunks
# of 16 output rows along H (D in 3-D), chunks sharing input rows in two
# phases, and the forward splits rows over threads; rows or columns no window
# reaches must come out as zeros. Rows whose last vector is at most half full
# (56 columns at AVX-512, 19 at AVX2 and AVX-512) share it in pairs. Disjoint
# 2-column windows at stride 2 inside the input take the backward that writes
# the gradient straight from the input (rows.cpp: direct_backward); with
# ceil_mode past the end they do not.
TALL_CASES = [
    ((1, 3, 30, 112), (2, 2), 2, 0, False),
    ((1, 1, 70, 37), (3, 3), 2, 1, False),
    ((1, 3, 67, 41), (3, 3), 1, 1, True),
    ((2, 2, 50, 33), (2, 2), 2, 0, False),
    ((1, 2, 45, 30), (5, 2), (2, 3), (2, 1), True),
    ((1, 2, 50, 20), (1, 2), (3, 2), 0, False),
    ((1, 2, 40, 9, 37), (3, 3, 3), 2, 1, False),
    ((1, 1, 35, 6, 20), (2, 1, 3), (1, 2, 2), (1, 0, 1), True),
    ((1, 2, 9, 7, 38), (2, 2, 2), 2, 0, False),
    ((1, 2, 9, 7, 37), (2, 2, 2), 2, 0, True),
]


def channels_last(x):
    return x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else
                        torch.channels_last_3d)


@pytest.mark.parametrize('shape,kernel,stride,padding,ceil_mode', TALL_CASES)
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_reduced_types_round_once(shape, kernel, stride, padding, ceil_mode, layout, dtype):
    """A bfloat16/float16 pool computes what float32 computes on the widened
    input and gradient, rounded once: output and input gradient are the
    float32 results rounded, bit for bit, overlapping windows and the rows two
    chunks of the backward share included (tall inputs have several)."""
    gen = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=gen) * 4).to(dtype)
    x = channels_last(x) if layout == 'channels_last' else x
    pool = SOFT_POOL[len(shape) - 2]
    results = []
    for xv in (x, x.float()):
        xv = xv.clone().requires_grad_()
        y = pool(xv, kernel, stride, padding, ceil_mode)
        if not results:
            grad = torch.randn(y.shape, generator=gen).to(dtype)
        (dx, ) = torch.autograd.grad(y, xv, grad.to(y.dtype))
        results.append((y, dx))
    (y, dx), (y32, dx32) = results
    assert dx.dtype == dtype
    assert torch.equal(y, y32.to(dtype)) and torch.equal(dx, dx32.to(dtype))


@pytest.mark.parametrize('shape,kernel,stride,padding,ceil_mode', TALL_CASES)
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
@pytest.mark.parametrize('dtype', VECTOR_DTYPES)
def test_vectorised_kernels_on_tall_inputs(shape, kernel, stride, padding, ceil_mode, layout,
                                           dtype):
    """Against the float64 reference, NaN/inf cells included, and the same
    bits with 1 to 4 threads (the sums' order is fixed)."""
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 4
    pool = SOFT_POOL[len(shape) - 2]
    ref_x = x.to(dtype).double().clone().requires_grad_()
    ref_y = soft_pool_reference(ref_x, kernel, stride, padding, ceil_mode)
    grad = torch.randn(ref_y.shape, generator=gen, dtype=torch.float64).to(dtype).double()
    (ref_dx, ) = torch.autograd.grad(ref_y, ref_x, grad)
    tol = VECTOR_TOL[dtype]
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3, 4):
            torch.set_num_threads(n)
            xv = x.to(dtype, copy=True)
            xv = (channels_last(xv) if layout == 'channels_last' else xv).requires_grad_()
            y = pool(xv, kernel, stride, padding, ceil_mode)
            (dx, ) = torch.autograd.grad(y, xv, grad.to(dtype))
            results.append((y, dx))
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(results[0][0].double(), ref_y.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(results[0][1].double(), ref_dx, rtol=tol, atol=tol)
    for y, dx in results[1:]:
        assert torch.equal(y, results[0][0]) and torch.equal(dx, results[0][1])

    # NaN, +inf and -inf cells: the vectorised kernels agree with the generic one.
    where = torch.rand(shape, generator=gen) < 0.02
    specials = torch.tensor([float('nan'), float('inf'), float('-inf')], dtype=torch.float64)
    x[where] = specials[torch.randint(0, 3, (int(where.sum()), ), generator=gen)]
    x = x.to(dtype)
    layouts_ = [channels_last(x) if layout == 'channels_last' else x, strided_along_w(x)]
    special = []
    for xl in layouts_:
        xl = xl.detach().requires_grad_()
        y = pool(xl, kernel, stride, padding, ceil_mode)
        (dx, ) = torch.autograd.grad(y, xl, grad.to(dtype))
        special.append((y, dx))
    torch.testing.assert_close(special[0][0], special[1][0], equal_nan=True, rtol=tol, atol=tol)
    torch.testing.assert_close(special[0][1], special[1][1], equal_nan=True, rtol=tol, atol=tol)


@pytest.mark.parametrize('stride', [torch.tensor(2), np.int64(2), (2, np.int32(2)),
                                    [torch.tensor(2), 2]])
def test_integers_are_accepted_as_max_pool_accepts_them(stride):
    x = torch.randn(1, 2, 6, 6)
    torch.testing.assert_close(soft_pool2d(x, 2, stride), soft_pool2d(x, 2, 2))
    assert F.max_pool2d(x, 2, stride).shape == (1, 2, 3, 3)
    assert SoftPool2d(2, stride).stride == (2, 2)


@pytest.mark.parametrize('stride', [2.0, torch.tensor(2.0), torch.tensor([2, 2]), True,
                                    (2, 2.5), 'two'])
def test_non_integers_are_refused_naming_the_argument(stride):
    with pytest.raises(ValueError,
                       match=r'stride must be an int or a tuple of 2 ints, got stride='):
        soft_pool2d(torch.randn(1, 1, 4, 4), 2, stride)


HUGE_KERNELS = [
    ((2**32, 2**32), 1, (2**31, 2**31)),
    ((2**32, 2**31), 1, (2**31, 2**30)),
    ((2**31, 2**30), 1, (2**30, 2**29)),
    ((2**22, 2**21, 2**21), 1, (2**21, 2**20, 2**20)),
    ((2**31 - 1, ) * 3, 1, (2**30 - 1, ) * 3),  # 2**93 cells a window
]


@pytest.mark.parametrize('kernel,stride,padding', HUGE_KERNELS)
def test_huge_kernels_are_refused_before_any_arithmetic(kernel, stride, padding):
    """Through the Python functions (ValueError naming the argument) and the
    raw ops (RuntimeError), in every dtype; never a crash."""
    dim = len(kernel)
    code = f"""
import torch
from mmsoftpool.ops import soft_pool{dim}d
kernel, stride, padding = {kernel!r}, {stride!r}, {padding!r}
for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
    x = torch.randn((1, 2) + (4, ) * {dim}, dtype=dtype)
    try:
        soft_pool{dim}d(x, kernel, stride, padding)
        print('python: no error')
    except ValueError as err:
        print('python:', err)
    try:
        torch.ops.mmsoftpool.soft_pool_forward(x, list(kernel), [stride] * {dim},
                                               list(padding), False)
        print('raw: no error')
    except RuntimeError as err:
        print('raw:', str(err).splitlines()[0])
"""
    lines = run_python(code).stdout.splitlines()
    assert len(lines) == 8
    for line in lines[0::2]:
        assert line.startswith(f'python: soft_pool{dim}d: kernel_size'), line
    for line in lines[1::2]:
        assert line.startswith('raw: soft_pool: kernel_size'), line


def test_largest_allowed_kernel_covers_the_input():
    """kernel 2**31 - 1 with padding 2**30 - 1: every window holds the whole
    4x4 input (the rest is padding); the result is exact, not refused."""
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    k, p = 2**31 - 1, 2**30 - 1
    y = soft_pool2d(x, k, 1, p)
    whole = soft_pool_reference(x.detach(), (4, 4))
    assert y.shape == (2, 3, 4, 4)
    torch.testing.assert_close(y, whole.expand_as(y))
    y.sum().backward()
    ref_x = x.detach().requires_grad_()
    (soft_pool_reference(ref_x, (4, 4)) * 16).sum().backward()
    torch.testing.assert_close(x.grad, ref_x.grad)


@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
def test_strides_larger_than_the_vector_limit(memory_format):
    x = torch.randn(2, 3, 9, 100, dtype=torch.float64).contiguous(memory_format=memory_format)
    x = x.float().requires_grad_()
    y = soft_pool2d(x, (3, 2), (2, 40), (1, 1), True)
    ref_x = x.detach().double().requires_grad_()
    ref_y = soft_pool_reference(ref_x, (3, 2), (2, 40), (1, 1), True)
    torch.testing.assert_close(y.double(), ref_y, rtol=2e-5, atol=2e-5)
    y.backward(torch.ones_like(y))
    ref_y.backward(torch.ones_like(ref_y))
    torch.testing.assert_close(x.grad.double(), ref_x.grad, rtol=2e-5, atol=2e-5)


def relaid(t):
    """The same values in other layouts, as a caller of the raw op may pass them."""
    yield 'contiguous', t.contiguous()
    if t.dim() == 4:
        yield 'channels_last', t.contiguous(memory_format=torch.channels_last)
    yield 'strided', strided_along_w(t, offset=1)
    yield 'transposed', t.transpose(0, 1).contiguous().transpose(0, 1)
    yield 'expanded', t[:1].expand_as(t)  # stride 0 along the batch


@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize('kernel,stride,padding', [(2, 2, 0), (3, 2, 1)])
def test_backward_op_honours_log_norm_strides(device, memory_format, dtype, kernel, stride,
                                              padding):
    """soft_pool_backward called directly with log_norm (and grad_output) in
    other layouts, or expanded, gives the result of the dense call. The batch
    holds one sample three times, so the expanded log_norm has the right
    values."""
    sample = torch.randn(1, 9, 11, 21, device=device) * 3
    x = sample.expand(3, -1, -1, -1).to(dtype).contiguous(memory_format=memory_format)
    args = ([kernel] * 2, [stride] * 2, [padding] * 2, False)
    _, log_norm = torch.ops.mmsoftpool.soft_pool_forward(x, *args)
    grad = torch.randn(1, *log_norm.shape[1:], device=device).expand_as(log_norm).to(dtype)
    dense = torch.ops.mmsoftpool.soft_pool_backward(grad.contiguous(), x, log_norm, *args)
    for name, ln in relaid(log_norm):
        for grad_name, g in relaid(grad):
            got = torch.ops.mmsoftpool.soft_pool_backward(g, x, ln, *args)
            assert torch.equal(got, dense), (name, grad_name)


@pytest.mark.parametrize('on_meta', ['grad_output', 'log_norm', 'input'])
def test_backward_op_refuses_mixed_devices(on_meta):
    """One argument on meta, the rest on the CPU: the dispatcher runs the
    fake (meta) implementation, which must check devices as the kernel does
    instead of returning an uninitialised tensor."""
    x = torch.randn(1, 2, 6, 6)
    args = ([2, 2], [2, 2], [0, 0], False)
    _, log_norm = torch.ops.mmsoftpool.soft_pool_forward(x, *args)
    tensors = dict(grad_output=torch.ones_like(log_norm, dtype=x.dtype),
                   input=x, log_norm=log_norm)
    tensors[on_meta] = tensors[on_meta].to('meta')
    with pytest.raises(RuntimeError, match=r'soft_pool_backward: grad_output '
                       r'\((meta|cpu)\) and log_norm \((meta|cpu)\) must be on '
                       r"the input's device"):
        torch.ops.mmsoftpool.soft_pool_backward(
            tensors['grad_output'], tensors['input'], tensors['log_norm'], *args)


def test_flops_in_mmengine_complexity_analysis():
    """What mmdet's get_flops.py reads: 4 FLOPs a window cell, 1 an output."""
    from mmengine.analysis import get_model_complexity_info
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    model = torch.nn.Sequential(conv, SoftPool2d(3, 2, 1))
    flops = get_model_complexity_info(model, inputs=(torch.randn(1, 3, 32, 32), ))['flops']
    assert flops == 8 * 3 * 9 * 32 * 32 + 8 * 16 * 16 * (4 * 9 + 1)


def test_library_built_for_another_torch_says_rebuild(tmp_path):
    """A _C whose symbols the installed torch lacks (what an upgrade of torch
    does): the error says to rebuild and how, not only `undefined symbol`."""
    import shutil
    import sysconfig
    from pathlib import Path

    import mmsoftpool
    package = tmp_path / 'mmsoftpool'
    shutil.copytree(Path(mmsoftpool.__file__).parent, package,
                    ignore=shutil.ignore_patterns('_C*.so', '.mim', '__pycache__'))
    source = tmp_path / 'fake.c'
    source.write_text('void symbol_of_another_torch(void);\n'
                      'void *PyInit__C(void) { symbol_of_another_torch(); return 0; }\n')
    library = package / ('_C' + sysconfig.get_config_var('EXT_SUFFIX'))
    subprocess.run(['gcc', '-shared', '-fPIC', str(source), '-o', str(library)], check=True)
    result = run_python('import mmsoftpool.ops', cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert 'undefined symbol: symbol_of_another_torch' in result.stderr
    assert f'built against another torch than the installed {torch.__version__}' in result.stderr
    assert 'pip install --no-build-isolation -e .' in result.stderr
