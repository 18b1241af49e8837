"""The CUDA path without a GPU: its wrappers and loop bodies
(csrc/cuda/soft_pool_cuda.h) run on the CPU through the private test ops
``_cuda_path_forward`` / ``_cuda_path_backward`` (csrc/cpu/cuda_path.cpp),
its numbering of elements through ``_cuda_path_numbering`` and its grid
arithmetic through ``_cuda_path_grid``.

The random geometry of tests/test_soft_pool.py, in every dtype and in
layouts the CUDA path numbers and offsets differently (contiguous, strided
along W, channels_last, N and C transposed, stride 0 along N), against the
float64 oracle with the CPU kernels' tolerances, and bit for bit against the
generic CPU kernel, which computes every window and every sum in the same
order. Where a GPU is present, the real CUDA kernels against both
(``test_cuda_path_gpu_*``; tools/gpu_check.sh runs them)."""
import pytest
import torch
import torch.nn.functional as F
from torch._prims_common import suggest_memory_format

from soft_pool_reference import soft_pool_reference
from test_soft_pool import CASES, MAX_POOL, channels_last, relaid, strided_along_w

forward_op = torch.ops.mmsoftpool._cuda_path_forward
backward_op = torch.ops.mmsoftpool._cuda_path_backward
grid_op = torch.ops.mmsoftpool._cuda_path_grid
numbering_op = torch.ops.mmsoftpool._cuda_path_numbering

# The CPU kernels' tolerances (tests/test_soft_pool.py): float64 and float32
# against the oracle; float16 and bfloat16 within a rounding of the output,
# a few for the gradient, against the oracle of the rounded input.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3,
             torch.bfloat16: 1.6e-2}
REDUCED = (torch.float16, torch.bfloat16)
SCALE = 3.0  # inputs are randn * SCALE
BITS = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
        torch.bfloat16: torch.int16}


def needs_gpu(test):
    """A test that runs the real CUDA kernels: marked cuda, skipped without a GPU."""
    return pytest.mark.cuda(
        pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')(test))


def op_args(kernel, stride, padding, ceil_mode):
    return list(kernel), list(stride), list(padding), ceil_mode


def input_layouts(x):
    """The same values as x in layouts that number and offset differently,
    and ('expanded') x's first sample repeated, with stride 0 along N."""
    yield 'contiguous', x
    yield 'strided', strided_along_w(x)
    if x.dim() >= 4:
        yield 'channels_last', channels_last(x)
    yield 'transposed', x.transpose(0, 1).contiguous().transpose(0, 1)
    yield 'expanded', x[:1].expand_as(x)


def log_norm_reference(x, kernel, stride, padding, ceil_mode):
    """log(sum_R exp(x - max_R x)) per window in float64, for finite x of
    moderate size: a sum pool (average pool with divisor 1) of exp(x), less
    the max pool, over x padded explicitly (zeros for the sum, -inf for the
    max) so that floor-mode windows include every window of the output."""
    x = x.double()
    dim = len(kernel)
    out = MAX_POOL[dim](torch.empty(x.shape, device='meta'), kernel, stride, padding,
                        ceil_mode=ceil_mode).shape[2:]
    if dim == 1:  # avg_pool1d has no divisor_override: as 2-D, H = 1
        x, kernel, stride, padding = x.unsqueeze(2), (1, *kernel), (1, *stride), (0, *padding)
    pad = []
    for k, s, p in reversed(list(zip(kernel, stride, padding))):
        pad += [p, p + k + s]
    crop = (slice(None), slice(None)) + (slice(0, 1), ) * (len(kernel) - dim) + tuple(
        slice(0, o) for o in out)
    avg_pool = F.avg_pool2d if len(kernel) == 2 else F.avg_pool3d
    sums = avg_pool(F.pad(x.exp(), pad), kernel, stride, divisor_override=1)
    maxima = MAX_POOL[len(kernel)](F.pad(x, pad, value=float('-inf')), kernel, stride)
    log_norm = sums.log() - maxima
    return log_norm[crop].reshape(x.shape[:2] + out)


def references(x, grad, kernel, stride, padding, ceil_mode):
    """Oracle output, log_norm and input gradient of x (any dtype) in float64."""
    ref_x = x.double().contiguous().requires_grad_()
    ref_y = soft_pool_reference(ref_x, kernel, stride, padding, ceil_mode)
    (ref_dx, ) = torch.autograd.grad(ref_y, ref_x, grad.double())
    ref_ln = log_norm_reference(ref_x.detach(), kernel, stride, padding, ceil_mode)
    return ref_y.detach(), ref_ln, ref_dx


def assert_same_bits(actual, expected, msg):
    """Equal bit patterns, strides too; NaNs need only be NaN where expected."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, msg
    assert actual.stride() == expected.stride(), msg
    nan = torch.isnan(expected)
    assert torch.equal(torch.isnan(actual), nan), msg
    bits = BITS[actual.dtype]
    same = actual.view(bits) == expected.view(bits)
    assert bool((same | nan).all()), (
        f'{msg}: {int((~same & ~nan).sum())} of {actual.numel()} values differ')


@pytest.mark.parametrize('dim,shape,kernel,stride,padding,ceil_mode', CASES)
def test_cuda_path_matches_reference(dim, shape, kernel, stride, padding, ceil_mode):
    """Output, log_norm and gradient against the oracle, every dtype and
    layout; output, log_norm and gradient in max_pool's layout."""
    gen = torch.Generator().manual_seed(dim * 1000 + sum(shape))
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * SCALE
    out_shape = MAX_POOL[dim](torch.empty(shape, device='meta'), kernel, stride, padding,
                              ceil_mode=ceil_mode).shape
    grad = torch.randn(out_shape, generator=gen, dtype=torch.float64)
    args = op_args(kernel, stride, padding, ceil_mode)
    for dtype, tol in TOLERANCE.items():
        values, g = x.to(dtype), grad.to(dtype)
        # The oracle of the values, and of the first sample repeated ('expanded').
        dense = references(values, g, kernel, stride, padding, ceil_mode)
        repeated = references(values[:1].expand_as(values), g, kernel, stride, padding,
                              ceil_mode)
        out_tol = dict(rtol=tol, atol=tol * SCALE * 1e-2 if dtype in REDUCED else tol)
        grad_tol = dict(rtol=4 * tol, atol=4 * tol) if dtype in REDUCED else dict(rtol=tol,
                                                                                atol=tol)
        ln_tol = 1e-12 if dtype == torch.float64 else 1e-5  # computed in the accumulation type
        for name, xl in input_layouts(values):
            msg = f'{name} {dtype}'
            ref_y, ref_ln, ref_dx = repeated if name == 'expanded' else dense
            y, log_norm = forward_op(xl, *args)
            max_y = MAX_POOL[dim](xl, kernel, stride, padding, ceil_mode=ceil_mode)
            assert y.dtype == dtype and log_norm.dtype == torch.promote_types(
                dtype, torch.float32), msg
            assert y.shape == max_y.shape and y.stride() == max_y.stride(), msg
            assert log_norm.stride() == y.stride(), msg
            torch.testing.assert_close(y.double(), ref_y, **out_tol, msg=msg)
            torch.testing.assert_close(log_norm.double(), ref_ln, rtol=ln_tol, atol=ln_tol,
                                       msg=msg)
            dx = backward_op(g, xl, log_norm, *args)
            assert dx.dtype == dtype and dx.shape == xl.shape, msg
            assert dx.stride() == torch.empty(
                xl.shape, memory_format=suggest_memory_format(xl)).stride(), msg
            torch.testing.assert_close(dx.double(), ref_dx, **grad_tol, msg=msg)


def with_special_values(x, gen, fraction=0.1):
    """x with NaN, +inf and -inf in a random `fraction` of its cells."""
    x = x.clone()
    where = torch.rand(x.shape, generator=gen) < fraction
    specials = torch.tensor([float('nan'), float('inf'), float('-inf')], dtype=x.dtype)
    x[where] = specials[torch.randint(0, 3, (int(where.sum()), ), generator=gen)]
    return x


def generic_cpu_kernel_runs(name, dtype):
    """Whether soft_pool_cpu.cpp runs its generic kernel (not a vectorised
    one, whose exponential and sums differ) for this layout: every dtype has
    vectorised kernels, which run when the input is contiguous along W or
    channels_last."""
    return name == 'strided'


@pytest.mark.parametrize('dim,shape,kernel,stride,padding,ceil_mode', CASES)
def test_cuda_path_is_bit_equal_to_the_generic_cpu_kernel(dim, shape, kernel, stride, padding,
                                                          ceil_mode):
    """Same window arithmetic (window.h) in the same order: the forward
    window by window, the backward's sum over a cell's covering windows in
    (d, h, w) order from zero, rounded once; so the same bits, NaN/inf
    windows included (and those against the oracle's forward)."""
    gen = torch.Generator().manual_seed(dim * 7919 + sum(shape))
    x = with_special_values(torch.randn(shape, generator=gen, dtype=torch.float64) * SCALE, gen)
    args = op_args(kernel, stride, padding, ceil_mode)
    for dtype, tol in TOLERANCE.items():
        values = x.to(dtype)
        ref_y = soft_pool_reference(values, kernel, stride, padding, ceil_mode)
        for name, xl in input_layouts(values):
            if not generic_cpu_kernel_runs(name, dtype):
                continue
            msg = f'{name} {dtype}'
            y, log_norm = forward_op(xl, *args)
            cpu_y, cpu_log_norm = torch.ops.mmsoftpool.soft_pool_forward(xl, *args)
            assert_same_bits(y, cpu_y, msg)
            assert_same_bits(log_norm, cpu_log_norm, msg)
            if name != 'expanded':
                torch.testing.assert_close(y.double(), ref_y, rtol=tol, atol=tol,
                                           equal_nan=True, msg=msg)
            grad = torch.randn(y.shape, generator=gen).to(dtype)
            dx = backward_op(grad, xl, log_norm, *args)
            cpu_dx = torch.ops.mmsoftpool.soft_pool_backward(grad, xl, log_norm, *args)
            assert_same_bits(dx, cpu_dx, msg)


@pytest.mark.parametrize('dtype', list(TOLERANCE))
def test_cuda_path_special_values(dtype):
    """tests/test_soft_pool.py's NaN / +inf / -inf windows, exactly."""
    nan, inf = float('nan'), float('inf')
    x = torch.tensor([[[1.0, nan, inf, 2.0, -inf, 3.0, -inf, -inf, inf, inf]]], dtype=dtype)
    y, log_norm = forward_op(x, [2], [2], [0], False)
    assert torch.equal(torch.isnan(y), torch.tensor([[[True, False, False, False, False]]]))
    assert y[0, 0, 1:].tolist() == [inf, 3.0, -inf, inf]
    dx = backward_op(torch.ones_like(y), x, log_norm, [2], [2], [0], False)
    expected = torch.tensor([[[nan, nan, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5]]], dtype=dtype)
    torch.testing.assert_close(dx, expected, equal_nan=True, rtol=0, atol=0)
    # A padded border takes no weight: padding next to -inf keeps -inf.
    z = torch.tensor([[[-inf, 1.0, 2.0]]], dtype=dtype)
    torch.testing.assert_close(forward_op(z, [3], [2], [1], False)[0],
                               soft_pool_reference(z, (3, ), 2, 1).to(dtype))


@pytest.mark.parametrize('dim,kernel,stride,padding', [(2, 2, 2, 0), (2, 3, 2, 1),
                                                       (3, 3, 2, 1)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_cuda_path_backward_honours_grad_and_log_norm_strides(dim, kernel, stride, padding,
                                                              dtype):
    """grad_output and log_norm in other layouts (strided, transposed, stride
    0): the statistics are laid out like log_norm made dense, and read back
    with grad_output's own strides; the result is the dense call's, bit for
    bit. One sample three times, so the expanded tensors hold the right
    values."""
    sample = torch.randn((1, 9) + (7, 11, 12)[3 - dim:]) * SCALE
    args = ([kernel] * dim, [stride] * dim, [padding] * dim, False)
    for memory_format in ('contiguous', 'channels_last'):
        x = sample.expand(3, *sample.shape[1:]).to(dtype)
        x = channels_last(x) if memory_format == 'channels_last' else x.contiguous()
        _, log_norm = forward_op(x, *args)
        grad = torch.randn(1, *log_norm.shape[1:]).expand_as(log_norm).to(dtype)
        dense = backward_op(grad.contiguous(), x, log_norm, *args)
        for name, ln in relaid(log_norm):
            for grad_name, g in relaid(grad):
                assert_same_bits(backward_op(g, x, ln, *args), dense,
                                 f'{memory_format}: log_norm {name}, grad {grad_name}')


def test_cuda_path_empty_inputs():
    x = torch.randn(0, 4, 6, 6)
    y, log_norm = forward_op(x, [2, 2], [2, 2], [0, 0], False)
    assert y.shape == log_norm.shape == (0, 4, 3, 3)
    dx = backward_op(torch.ones_like(y), x, log_norm, [2, 2], [2, 2], [0, 0], False)
    assert dx.shape == x.shape


def test_cuda_path_refuses_bad_input_as_the_kernels_do():
    """The CUDA path checks through make_geometry / make_backward_geometry,
    as the CPU kernels do, before anything is allocated or read."""
    x = torch.randn(1, 2, 6, 6)
    with pytest.raises(RuntimeError, match=r'soft_pool: input must be 3-D'):
        forward_op(x, [2], [2], [0], False)
    with pytest.raises(RuntimeError, match=r'soft_pool: padding must be between 0 and half'):
        forward_op(x, [2, 2], [2, 2], [2, 2], False)
    _, log_norm = forward_op(x, [2, 2], [2, 2], [0, 0], False)
    with pytest.raises(RuntimeError, match=r'soft_pool_backward: grad_output .* must have the '
                       r'output shape'):
        backward_op(torch.ones(1, 2, 2, 3), x, log_norm, [2, 2], [2, 2], [0, 0], False)
    with pytest.raises(RuntimeError, match=r'soft_pool_backward: unexpected dtypes'):
        backward_op(torch.ones(1, 2, 3, 3), x, log_norm.double(), [2, 2], [2, 2], [0, 0],
                    False)


@pytest.mark.parametrize('shape', [(2, 3, 7), (2, 3, 4, 5), (2, 3, 4, 5, 6), (1, 1, 1, 1)])
def test_cuda_path_numbers_elements_in_memory_order(shape):
    """Strided5d::position, which no output shows (any one-to-one numbering
    gives the same results): index i of a dense tensor, contiguous or
    channels_last, is the element at offset i, so neighbouring GPU threads
    touch neighbouring addresses; other strides are numbered in their
    layout's order (W fastest, or C fastest for channels_last)."""
    x = torch.randn(shape)
    for name, xl in input_layouts(x):
        sizes = xl.shape
        offsets = sum(torch.arange(n).view((-1, ) + (1, ) * (len(sizes) - 1 - d)) * s
                      for d, (n, s) in enumerate(zip(sizes, xl.stride())))
        if suggest_memory_format(xl) != torch.contiguous_format:  # C fastest
            offsets = offsets.movedim(1, -1)
        assert numbering_op(xl).tolist() == offsets.flatten().tolist(), name
        if name in ('contiguous', 'channels_last'):
            assert numbering_op(xl).tolist() == list(range(xl.numel())), name


# The grid: 256 threads a block, at most 32 blocks a multiprocessor.
THREADS, BLOCKS_PER_SM = 256, 32
H100_SMS = 132


@pytest.mark.parametrize('total,sms,blocks', [
    (0, H100_SMS, 1), (1, H100_SMS, 1), (256, H100_SMS, 1), (257, H100_SMS, 2),
    (256 * 4224, H100_SMS, 4224), (256 * 4224 + 1, H100_SMS, 4224), (2**31 + 5, H100_SMS, 4224),
    (2**62, H100_SMS, 4224), (10**6, 1, 32), (2**40, 2**20, 2**25),
])
def test_cuda_path_grid_blocks_for(total, sms, blocks):
    assert grid_op(total, sms, [])[0] == blocks


def expected_visits(thread, grid_threads, total):
    """(count, first, last) of thread's grid-stride loop: thread, thread +
    grid_threads, ... below total."""
    if thread >= total:
        return 0, -1, -1
    count = (total - thread + grid_threads - 1) // grid_threads
    return count, thread, thread + (count - 1) * grid_threads


@pytest.mark.parametrize('total', [1, 255, 8191, 8192, 8193, 3 * 8192 + 5])
def test_cuda_path_grid_stride_loop_covers_every_index_once(total):
    """One multiprocessor: at most 32 blocks of 256 threads, 8192 threads,
    fewer than the elements from 8193 on. Every thread's loop walks its residue
    class below total, so together they cover each index exactly once."""
    blocks = grid_op(total, 1, [])[0]
    grid_threads = THREADS * blocks
    _, visits = grid_op(total, 1, list(range(grid_threads)))
    expected = [expected_visits(t, grid_threads, total) for t in range(grid_threads)]
    assert visits.tolist() == [list(v) for v in expected]
    assert int(visits[:, 0].sum()) == total


@pytest.mark.parametrize('total,sms', [(2**31 + 12345, H100_SMS), (2**34, 2**20)])
def test_cuda_path_grid_beyond_32_bit_indices(total, sms):
    """2**31 and more elements, by index arithmetic only: an H100's grid
    (1081344 threads, about 2000 elements each), and a fake device with 2**20
    multiprocessors, whose last thread number, 2**33 - 1, and indices
    overflow 32 bits."""
    blocks = min((total + THREADS - 1) // THREADS, sms * BLOCKS_PER_SM)
    grid_threads = THREADS * blocks
    assert total > grid_threads
    threads = [0, 1, 255, 256, 12344, 12345, grid_threads // 2, grid_threads - 256,
               grid_threads - 1]
    got_blocks, visits = grid_op(total, sms, threads)
    assert got_blocks == blocks
    assert visits.tolist() == [list(expected_visits(t, grid_threads, total)) for t in threads]
    assert all(last < total <= last + grid_threads for _, _, last in visits.tolist())


def test_cuda_path_grid_refuses_threads_outside_the_grid():
    with pytest.raises(RuntimeError, match=r'thread 8192 is not in the grid of 8192 threads'):
        grid_op(10**6, 1, [8192])


@needs_gpu
@pytest.mark.parametrize('dim,shape,kernel,stride,padding,ceil_mode', CASES)
def test_cuda_path_gpu_matches_cpu_executor(dim, shape, kernel, stride, padding, ceil_mode):
    """The CUDA kernels against the same code on the CPU and the oracle:
    the dtype's tolerance (the device's exp and log, and its contractions,
    differ from the CPU's by a few ulp), NaN/inf windows included."""
    gen = torch.Generator().manual_seed(dim * 104729 + sum(shape))
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * SCALE
    args = op_args(kernel, stride, padding, ceil_mode)
    for special in (False, True):
        xs = with_special_values(x, gen) if special else x
        for dtype, tol in TOLERANCE.items():
            values = xs.to(dtype)
            ref_y = soft_pool_reference(values, kernel, stride, padding, ceil_mode)
            grad_tol = 4 * tol if dtype in REDUCED else tol
            # The layouts made on each device (a copy to the GPU would make them dense).
            for (name, xl), (_, gpu_xl) in zip(input_layouts(values),
                                                input_layouts(values.cuda())):
                msg = f'{name} {dtype} special={special}'
                assert gpu_xl.stride() == xl.stride(), msg
                y, log_norm = forward_op(xl, *args)
                gpu_y, gpu_log_norm = torch.ops.mmsoftpool.soft_pool_forward(gpu_xl, *args)
                assert gpu_y.stride() == y.stride(), msg
                torch.testing.assert_close(gpu_y.cpu(), y, rtol=tol, atol=tol, equal_nan=True,
                                           msg=msg)
                torch.testing.assert_close(gpu_log_norm.cpu(), log_norm, rtol=1e-5, atol=1e-5,
                                           equal_nan=True, msg=msg)
                if name != 'expanded':
                    torch.testing.assert_close(gpu_y.double().cpu(), ref_y, rtol=tol,
                                               atol=tol, equal_nan=True, msg=msg)
                grad = torch.randn(y.shape, generator=gen).to(dtype)
                dx = backward_op(grad, xl, log_norm, *args)
                gpu_dx = torch.ops.mmsoftpool.soft_pool_backward(grad.cuda(), gpu_xl,
                                                                 gpu_log_norm, *args)
                assert gpu_dx.stride() == dx.stride(), msg
                torch.testing.assert_close(gpu_dx.cpu(), dx, rtol=grad_tol, atol=grad_tol,
                                           equal_nan=True, msg=msg)


@needs_gpu
def test_cuda_path_gpu_grid_stride_loop_beyond_one_pass():
    """More elements than the grid has threads (three passes and a bit):
    kernel 1 is the identity, forward and backward, exactly; kernel 3
    stride 2 agrees with the CPU executor."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    grid_threads = THREADS * BLOCKS_PER_SM * sms
    x = torch.randn(1, 3, 1024, grid_threads // 1024 + 17, device='cuda')
    assert x.numel() > 3 * grid_threads
    y, log_norm = torch.ops.mmsoftpool.soft_pool_forward(x, [1, 1], [1, 1], [0, 0], False)
    assert torch.equal(y, x)
    grad = torch.randn_like(y)
    dx = torch.ops.mmsoftpool.soft_pool_backward(grad, x, log_norm, [1, 1], [1, 1], [0, 0], False)
    assert torch.equal(dx, grad)
    args = ([3, 3], [2, 2], [1, 1], True)
    gpu_y, gpu_log_norm = torch.ops.mmsoftpool.soft_pool_forward(x, *args)
    cpu_y, cpu_log_norm = forward_op(x.cpu(), *args)
    torch.testing.assert_close(gpu_y.cpu(), cpu_y)
    grad = torch.randn_like(gpu_y)
    torch.testing.assert_close(
        torch.ops.mmsoftpool.soft_pool_backward(grad, x, gpu_log_norm, *args).cpu(),
        backward_op(grad.cpu(), x.cpu(), cpu_log_norm, *args))
