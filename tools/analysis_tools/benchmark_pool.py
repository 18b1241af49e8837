"""Time SoftPool beside PyTorch's native pools and the machine's floors.

For each (kernel, stride, padding): forward and forward+backward time (median
of repeats after warm-up; CUDA events on a GPU) and peak memory of SoftPool,
max pool, average pool and SoftPool written as plain PyTorch, 2-D for an
N C H W shape, 3-D for N C D H W. Times are given as ratios to two floors
measured on the same tensor in the same run (these machines are noisy:
compare ratios, not milliseconds): ``t_exp``, ``torch.exp(x, out=buf)`` (one
vectorised exponential per input), and ``t_copy``, ``buf.copy_(x)`` (the
memory bandwidth: on a GPU the floor of a pool); and as ratios to max pool
and to average pool. A third floor, ``t_fresh``, is the time to write a
newly allocated tensor of the input's size once (page faults included): what
any backward that returns a new input gradient pays. The "fair" floors are
what SoftPool must do as users run it: ``t_fair_fwd``, ``torch.exp(x,
out=buf)`` plus writing fresh tensors of the forward's outputs' sizes
(``torch.empty(...).zero_()``: the output and log_norm), and ``t_fair_fb``,
that plus a fresh input-sized gradient. Memory: peak extra memory of one call, and the part of it
that is not the tensors the call returns (SoftPool's forward returns the
output and, for the backward, log_norm).

Peers: max pool, average pool, the paper's formula in eager PyTorch
(``pytorch_formula``) and compiled by ``torch.compile`` (``compiled_formula``,
inductor's fused kernel; left out with ``--no-compile``). With several
``--dtype`` values and float32 among them, each row also gives its times as a
ratio to the float32 row of the same case, layout and method.

Timings run with glibc's heap as users run it (``--heap default``), so a
call may pay page faults for the tensors it returns, depending on whether
the allocator kept freed memory: ``t_fresh`` shows how much that is worth.
``--heap warm`` keeps freed memory in the heap (glibc's mmap and trim
thresholds at 1 GiB), so no call pays page faults after warm-up: the
kernels' own time, for comparing them with the floors.

Example (the ResNet stem)::

    python tools/analysis_tools/benchmark_pool.py --shape 16 64 112 112 \
        --cases 2,2,0 3,2,1 --memory-format contiguous channels_last
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from mmsoftpool.ops import soft_pool2d, soft_pool3d
from mmsoftpool.tools.launch import (
    ToolParser,
    add_overwrite_arg,
    device_arg,
    int_at_least,
    output_path,
    positive_int,
    run_tool,
)


def pytorch_formula(avg_pool):
    """SoftPool as users write it in plain PyTorch (the paper's formula):
    avg_pool(x e^x) / avg_pool(e^x). Overflows for x > ~88 in float32 and
    gives padded cells weight; here only for timing."""

    def formula(x, kernel, stride, padding):
        e = x.exp()
        return avg_pool(x * e, kernel, stride, padding) / avg_pool(e, kernel, stride, padding)

    return formula


MMAP_THRESHOLD = 1 << 16
# --heap warm: freed blocks stay in glibc's heap and are reused without page faults.
WARM_HEAP_ENV = dict(MALLOC_MMAP_THRESHOLD_=str(1 << 30), MALLOC_TRIM_THRESHOLD_=str(1 << 30))

METHODS = {
    2: {
        'soft_pool2d': soft_pool2d,
        'max_pool2d': F.max_pool2d,
        'avg_pool2d': F.avg_pool2d,
        'pytorch_formula': pytorch_formula(F.avg_pool2d),
    },
    3: {
        'soft_pool3d': soft_pool3d,
        'max_pool3d': F.max_pool3d,
        'avg_pool3d': F.avg_pool3d,
        'pytorch_formula': pytorch_formula(F.avg_pool3d),
    },
}


def timed(fn, device, warmup, repeats):
    """Median milliseconds of fn() over repeats, after warm-up."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == 'cuda':
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn()
            times.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(times)


def peak_memory_mb(fn, device):
    """Peak memory allocated while fn() runs, above what was allocated before."""
    if device.type == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    # CPU: the kernel's peak resident set size (VmHWM), reset before the call
    # (Linux: /proc/self/clear_refs). measure_memory runs this with glibc's mmap
    # threshold fixed, so that freed blocks go back to the system and the next
    # peak is seen.
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    base = _status_kb('VmRSS')
    fn()
    return max(0, _status_kb('VmHWM') - base) / 1024


def _status_kb(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'no {field} in /proc/self/status')


def returned_mb(name, out):
    """Size of what a forward call returns: SoftPool also returns log_norm,
    one accumulation-type value per window (float32 for reduced precision)."""
    size = out.numel() * out.element_size()
    if name.startswith('soft_pool'):
        size += out.numel() * max(out.element_size(), 4)
    return size / 2**20


def compiled_formula(avg_pool):
    """The paper's formula compiled by torch.compile (inductor)."""
    return torch.compile(pytorch_formula(avg_pool))


def benchmark(args, measure):
    """Rows of timings (measure='time') or of peak memory ('memory')."""
    rows = []
    for dtype in args.dtype:
        rows += benchmark_dtype(args, measure, dtype)
    return rows


def fair_floors(x, out_shape, fmt, buffer, device, args):
    """The fair floors: the exponential plus fresh outputs (and gradient)."""
    log_norm_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32

    def fresh_outputs():
        torch.exp(x, out=buffer)
        torch.empty(out_shape, dtype=x.dtype, device=device).contiguous(
            memory_format=fmt).zero_()
        torch.empty(out_shape, dtype=log_norm_dtype, device=device).contiguous(
            memory_format=fmt).zero_()

    def fresh_outputs_and_gradient():
        fresh_outputs()
        torch.empty_like(x).zero_()

    return dict(t_fair_fwd_ms=timed(fresh_outputs, device, args.warmup, args.repeats),
                t_fair_fb_ms=timed(fresh_outputs_and_gradient, device, args.warmup,
                                   args.repeats))


def benchmark_dtype(args, measure, dtype_name):
    device = torch.device(args.device)
    dtype = getattr(torch, dtype_name)
    dims = len(args.shape) - 2
    methods = dict(METHODS[dims])
    max_name, avg_name = f'max_pool{dims}d', f'avg_pool{dims}d'
    rows = []
    for memory_format in args.memory_format:
        fmt = dict(contiguous=torch.contiguous_format,
                   channels_last=torch.channels_last if dims == 2 else
                   torch.channels_last_3d)[memory_format]
        x = torch.randn(args.shape, device=device, dtype=dtype).contiguous(
            memory_format=fmt)
        buffer = torch.empty_like(x)
        for k, s, p in args.cases:
            floors = dict(
                t_exp_ms=timed(lambda: torch.exp(x, out=buffer), device, args.warmup,
                               args.repeats),
                t_copy_ms=timed(lambda: buffer.copy_(x), device, args.warmup,
                                args.repeats),
                t_fresh_ms=timed(lambda: torch.empty_like(x).fill_(0), device, args.warmup,
                                 args.repeats)) if measure == 'time' else {}
            if measure == 'time':
                out_shape = METHODS[dims][max_name](x, k, s, p).shape
                floors.update(fair_floors(x, out_shape, fmt, buffer, device, args))
            if not args.no_compile:
                # a fresh compilation per case: dynamo's cache (and its recompile
                # limit, past which it would run the formula eagerly) is per function
                torch._dynamo.reset()
                methods['compiled_formula'] = compiled_formula(
                    F.avg_pool2d if dims == 2 else F.avg_pool3d)
            results = {}
            for name, method in methods.items():
                xg = x.detach().requires_grad_()
                out = method(x, k, s, p)
                grad = torch.randn_like(out)

                def forward():
                    with torch.no_grad():
                        method(x, k, s, p)

                def forward_backward():
                    torch.autograd.grad(method(xg, k, s, p), xg, grad)

                if measure == 'memory':
                    if name == 'compiled_formula':  # compile first: its memory is not the call's
                        forward()
                        forward_backward()
                    forward_peak = peak_memory_mb(forward, device)
                    results[name] = dict(
                        forward_peak_mb=forward_peak,
                        forward_temporary_mb=max(0.0, forward_peak - returned_mb(name, out)),
                        forward_backward_peak_mb=peak_memory_mb(forward_backward, device))
                else:
                    results[name] = dict(
                        forward_ms=timed(forward, device, args.warmup, args.repeats),
                        forward_backward_ms=timed(forward_backward, device, args.warmup,
                                                  args.repeats))
            for name, r in results.items():
                row = dict(dtype=dtype_name, memory_format=memory_format, kernel=k, stride=s,
                           padding=p, method=name, **r, **floors)
                if measure == 'time':
                    for call, fair in (('forward', 't_fair_fwd_ms'),
                                       ('forward_backward', 't_fair_fb_ms')):
                        ms = r[f'{call}_ms']
                        row.update({
                            f'{call}_fair_ratio': ms / floors[fair],
                            f'{call}_exp_ratio': ms / floors['t_exp_ms'],
                            f'{call}_copy_ratio': ms / floors['t_copy_ms'],  # bandwidth
                            f'{call}_ratio': ms / results[max_name][f'{call}_ms'],
                            f'{call}_avg_ratio': ms / results[avg_name][f'{call}_ms'],
                        })
                rows.append(row)
    return rows


def add_float32_ratios(rows):
    """forward_float32_ratio, forward_backward_float32_ratio: each row's times
    over the float32 row of the same case, layout and method, when several
    dtypes are measured, float32 among them."""
    if len({r['dtype'] for r in rows}) < 2:
        return
    key = ('memory_format', 'kernel', 'stride', 'padding', 'method')
    float32 = {tuple(r[k] for k in key): r for r in rows if r['dtype'] == 'float32'}
    for row in rows:
        base = float32.get(tuple(row[k] for k in key))
        if base is not None:
            for call in ('forward', 'forward_backward'):
                row[f'{call}_float32_ratio'] = row[f'{call}_ms'] / base[f'{call}_ms']


def print_table(rows, header):
    print(header)
    columns = ['dtype', 'memory_format', 'kernel', 'stride', 'padding', 'method', 't_exp_ms',
               't_copy_ms', 't_fresh_ms', 't_fair_fwd_ms', 't_fair_fb_ms', 'forward_ms',
               'forward_exp_ratio', 'forward_fair_ratio', 'forward_copy_ratio',
               'forward_ratio', 'forward_avg_ratio', 'forward_backward_ms',
               'forward_backward_exp_ratio', 'forward_backward_fair_ratio',
               'forward_backward_copy_ratio', 'forward_backward_ratio',
               'forward_backward_avg_ratio', 'forward_peak_mb', 'forward_temporary_mb',
               'forward_backward_peak_mb']
    titles = ['dtype', 'format', 'k', 's', 'p', 'method', 't_exp ms', 't_copy ms',
              't_fresh ms', 't_fair fwd ms', 't_fair f+b ms', 'fwd ms', 'fwd/t_exp',
              'fwd/fair', 'fwd/t_copy', 'fwd/max', 'fwd/avg', 'f+b ms', 'f+b/t_exp',
              'f+b/fair', 'f+b/t_copy', 'f+b/max', 'f+b/avg', 'fwd MB', 'fwd temp MB',
              'f+b MB']
    if any('forward_float32_ratio' in row for row in rows):
        columns += ['forward_float32_ratio', 'forward_backward_float32_ratio']
        titles += ['fwd/float32', 'f+b/float32']
    print('| ' + ' | '.join(titles) + ' |')
    print('|' + '---|' * len(titles))
    for row in rows:
        cells = [f'{row[c]:.2f}' if isinstance(row.get(c), float) else str(row.get(c, '-'))
                 for c in columns]
        print('| ' + ' | '.join(cells) + ' |')


def pool_case(text):
    """argparse ``type=`` of --cases: 'kernel,stride,padding'."""
    try:
        k, s, p = (int(v) for v in text.split(','))
    except ValueError:
        k = None
    # torch's pools: padding at most half the kernel
    if k is None or k < 1 or s < 1 or not 0 <= p <= k // 2:
        raise argparse.ArgumentTypeError(
            f'expected kernel,stride,padding with kernel, stride >= 1 and '
            f'0 <= padding <= kernel / 2, got {text!r}')
    return k, s, p


def parse_args():
    parser = ToolParser(description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', type=device_arg, default='cpu')
    parser.add_argument('--dtype', nargs='+', default=['float32'],
                        choices=['float32', 'float64', 'float16', 'bfloat16'],
                        help='one or more dtypes, timed in turn')
    parser.add_argument('--no-compile', action='store_true',
                        help='leave out the torch.compile\'d formula (compiling takes a while)')
    parser.add_argument('--shape', type=positive_int, nargs='+',
                        default=[16, 64, 112, 112],
                        help='N C H W (2-D) or N C D H W (3-D)')
    parser.add_argument('--cases', type=pool_case, nargs='+',
                        default=[(2, 2, 0), (3, 2, 1)],
                        help='kernel,stride,padding triples')
    parser.add_argument('--memory-format', nargs='+', default=['contiguous'],
                        choices=['contiguous', 'channels_last'])
    parser.add_argument('--warmup', type=int_at_least(0), default=3)
    parser.add_argument('--repeats', type=positive_int, default=20)
    parser.add_argument('--threads', type=positive_int,
                        help='torch.set_num_threads (CPU)')
    parser.add_argument('--heap', choices=['default', 'warm'], default='default',
                        help='glibc heap for the timings: as users run it (default), or '
                        'warm, keeping freed memory so that no call pays page faults (CPU)')
    parser.add_argument('--json', help='also write the rows to this JSON file')
    add_overwrite_arg(parser)
    parser.add_argument('--memory-pass', help=argparse.SUPPRESS)  # internal: see measure_memory
    args = parser.parse_args()
    if len(args.shape) not in (4, 5):
        parser.error(f'--shape takes 4 (N C H W) or 5 (N C D H W) sizes, got {args.shape}')
    spatial = args.shape[2:]
    for k, s, p in args.cases:
        if any(size + 2 * p < k for size in spatial):
            parser.error(f'--cases {k},{s},{p}: the kernel does not fit in the '
                         f'padded input of --shape {" ".join(map(str, args.shape))}')
    if args.json and not args.memory_pass:
        output_path(args.json, '--json', args.overwrite)
    return args


def machine_description(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return (f'{platform.processor() or platform.machine()}, '
            f'{torch.get_num_threads()} threads, SoftPool kernels '
            f'{torch.ops.mmsoftpool._cpu_capability()} (ATen '
            f'{torch.backends.cpu.get_cpu_capability()})')


def measure_memory(args):
    """The memory rows, from a second process in which glibc's mmap threshold
    is fixed (see peak_memory_mb). Timings stay in this one, with the
    allocator as users run it: a fixed threshold would make every allocation
    fresh pages, and time page faults."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'memory.json')
        env = {k: v for k, v in os.environ.items() if k not in WARM_HEAP_ENV}
        env['MALLOC_MMAP_THRESHOLD_'] = str(MMAP_THRESHOLD)
        subprocess.run([sys.executable, os.path.abspath(__file__), *sys.argv[1:],
                        '--memory-pass', path], env=env, check=True)
        with open(path) as f:
            return json.load(f)


def use_heap(args):
    """Runs this script again with the warm heap's glibc settings if they are
    asked for and not set yet; returns the heap's description for the header."""
    if args.heap == 'default':
        return 'heap as users run it'
    if any(os.environ.get(k) != v for k, v in WARM_HEAP_ENV.items()):
        # glibc reads its thresholds at start-up: run again with them set.
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
                  dict(os.environ, **WARM_HEAP_ENV))
    return 'warm heap (glibc mmap and trim thresholds 1 GiB: no page faults after warm-up)'


def main():
    args = parse_args()
    heap = use_heap(args) if args.device == 'cpu' and not args.memory_pass else ''
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_pass:
        with open(args.memory_pass, 'w') as f:
            json.dump(benchmark(args, 'memory'), f)
        return
    device = torch.device(args.device)
    machine = machine_description(device)
    header = (f'torch {torch.__version__}, {machine}, {" ".join(args.dtype)}, '
              f'shape {tuple(args.shape)}, median of {args.repeats}' +
              (f', {heap}' if heap else ''))
    rows = benchmark(args, 'time')
    for row, memory in zip(rows, measure_memory(args)):
        row.update(memory)
    add_float32_ratios(rows)
    print_table(rows, header)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(setup=header, args=vars(args), rows=rows), f, indent=2)


if __name__ == '__main__':
    run_tool(main)
