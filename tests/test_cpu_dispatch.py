"""The CPU kernels' runtime dispatch: one build of the vectorised kernels per
CPU capability (DEFAULT, AVX2, AVX-512 on x86-64), the one ATen picks runs,
each passes the op's tests, the baseline code holds no AVX instruction, and
the exponential they share is within its stated error of float64."""
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mmsoftpool.ops  # noqa: F401  (loads the operator library)
from helpers import run_python

X86 = platform.machine() in ('x86_64', 'AMD64')
TESTS = Path(__file__).resolve().parent

# ATEN_CPU_CAPABILITY values this machine can run, beside its best.
SUPPORTED = ['default'] + (['avx2', 'avx512'] if X86 else [])
BEST = torch.backends.cpu.get_cpu_capability().lower()
LOWER = SUPPORTED[:SUPPORTED.index(BEST)] if BEST in SUPPORTED else []

# vec_window.h's exp_nonpositive, in ulp of the float32 result against the
# float64 exponential rounded to float32 (0.5: correctly rounded), measured on
# every float32 in [-104, 0] with tools/analysis_tools/exp_error.py.
EXP_ULP_BOUND = 1.0
# vec_window.h's log_normaliser, the same way, on every float32 in [1, 32]
# (the normaliser of a window of up to 32 cells); Sleef's logf_u10, which the
# kernels called before, is 0.97 ulp there.
LOG_ULP_BOUND = 0.85


def capability_env(capability):
    return dict(os.environ, ATEN_CPU_CAPABILITY=capability)


@pytest.mark.parametrize('capability', SUPPORTED)
def test_kernels_follow_aten_capability(capability):
    """The kernels that run are the build for the capability ATen runs with,
    which ATEN_CPU_CAPABILITY lowers."""
    result = run_python(
        """
        import torch, mmsoftpool.ops
        print(torch.backends.cpu.get_cpu_capability(), torch.ops.mmsoftpool._cpu_capability())
        """, env=capability_env(capability))
    aten, ours = result.stdout.split()
    assert ours == aten
    if BEST in SUPPORTED and SUPPORTED.index(capability) <= SUPPORTED.index(BEST):
        assert ours == capability.upper()


# The tests of test_soft_pool.py whose inputs reach the vectorised kernels
# (wide and tall rows, both layouts, every dtype, special values, strides past
# the vector limit): what differs between capability builds. The rest of the
# module checks Python rules and the generic kernel, the same in every build.
VECTORISED_KERNEL_TESTS = [
    'test_vectorised_kernels_on_wide_inputs', 'test_vectorised_kernels_on_tall_inputs',
    'test_special_values_agree_across_kernels', 'test_reduced_types_round_once',
    'test_strides_larger_than_the_vector_limit', 'test_backward_op_honours_log_norm_strides',
]


@pytest.mark.slow
@pytest.mark.parametrize('capability', LOWER)
def test_op_tests_pass_with_a_lower_capability(capability):
    """The op's vectorised-kernel tests and the exponential's and logarithm's
    bounds on the kernels built for a capability below this machine's best:
    what a CPU without AVX-512 (or AVX2) runs."""
    env = capability_env(capability)
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-x', '-p', 'no:cacheprovider',
         *[f'{TESTS / "test_soft_pool.py"}::{name}' for name in VECTORISED_KERNEL_TESTS],
         str(TESTS / 'test_cpu_dispatch.py') + '::test_exp_nonpositive_error',
         str(TESTS / 'test_cpu_dispatch.py') + '::test_log_normaliser_error'],
        cwd=TESTS.parent, env=env, capture_output=True, text=True,
        timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def ulp_error(approx: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|approx - exact| in units of the float32 spacing at exact (subnormal
    spacing 2**-149 below the smallest normal)."""
    rounded = exact.astype(np.float32)
    spacing = np.spacing(np.abs(rounded)).astype(np.float64)
    return np.abs(approx.astype(np.float64) - exact) / spacing


def test_exp_nonpositive_error():
    """Every 61st float32 in [-104, 0] (about 18 M values, all exponents),
    and the special arguments."""
    bits = np.arange(np.float32(-0.0).view(np.uint32), np.float32(-104.0).view(np.uint32) + 1, 61,
                     dtype=np.uint32)
    x = bits.view(np.float32)
    approx = torch.ops.mmsoftpool._exp_nonpositive(torch.from_numpy(x)).numpy()
    error = ulp_error(approx, np.exp(x.astype(np.float64)))
    assert error.max() <= EXP_ULP_BOUND, (error.max(), x[error.argmax()])

    special = torch.tensor([0.0, -0.0, -1e-30, -103.97, -104.0, -104.5, -1e30, -float('inf'),
                            float('nan')])
    out = torch.ops.mmsoftpool._exp_nonpositive(special)
    assert out[:2].tolist() == [1.0, 1.0]
    assert out[2].item() == 1.0
    assert out[4:8].tolist() == [0.0, 0.0, 0.0, 0.0]  # e^-104 rounds to 0
    assert torch.isnan(out[8])
    # odd lengths take the partial-vector path
    for size in (1, 7, 17, 33):
        v = -torch.rand(size) * 50
        torch.testing.assert_close(torch.ops.mmsoftpool._exp_nonpositive(v), v.exp(),
                                   rtol=2e-7, atol=0)


def test_log_normaliser_error():
    """Every float32 in [1, 32] (42 M values), and the special arguments."""
    bits = np.arange(np.float32(1.0).view(np.uint32), np.float32(32.0).view(np.uint32) + 1,
                     dtype=np.uint32)
    x = bits.view(np.float32)
    approx = torch.ops.mmsoftpool._log_normaliser(torch.from_numpy(x)).numpy()
    assert approx[0] == 0.0  # log(1): exactly 0, where the ulp measure is meaningless
    error = ulp_error(approx[1:], np.log(x[1:].astype(np.float64)))
    assert error.max() <= LOG_ULP_BOUND, (error.max(), x[1:][error.argmax()])

    out = torch.ops.mmsoftpool._log_normaliser(torch.tensor([float('nan'), 0.5, 1e-30, 1e30]))
    assert torch.isnan(out[0])
    # any positive normal argument, though the kernels only pass [1, cells]
    torch.testing.assert_close(out[1:], torch.tensor([0.5, 1e-30, 1e30]).log(), rtol=2e-7, atol=0)


def functions_using_wide_registers(library: Path):
    """{demangled function name: set of 'ymm'/'zmm'} over the library's code."""
    listing = subprocess.run(['objdump', '-d', '-C', '--no-show-raw-insn', str(library)],
                             capture_output=True, text=True, check=True).stdout
    functions, name = {}, None
    for line in listing.splitlines():
        header = re.match(r'^[0-9a-f]+ <(.*)>:$', line)
        if header:
            name = header.group(1)
            functions.setdefault(name, set())
        elif name is not None:
            functions[name].update(re.findall(r'%(ymm|zmm)\d+', line))
    return functions


@pytest.mark.skipif(not X86 or shutil.which('objdump') is None, reason='x86-64 with objdump')
def test_baseline_code_holds_no_avx_instruction():
    """In the built library, only the AVX2 and AVX-512 builds of the kernels
    touch ymm/zmm registers: the baseline code (the DEFAULT build, the
    generic kernels, the op's glue, and every inline function the builds
    share) runs on any x86-64 CPU."""
    library = next(Path(mmsoftpool.ops.__file__).parent.parent.glob('_C*.so'))
    functions = functions_using_wide_registers(library)

    def built_for(capability):
        return [n for n in functions if f'mmsoftpool::{capability}::' in n]

    for capability in ('DEFAULT', 'AVX2', 'AVX512'):
        assert built_for(capability), f'no {capability} build of the kernels in {library}'
    wide = {n: regs for n, regs in functions.items() if regs}
    outside = [n for n in wide if not re.search(r'::(AVX2|AVX512)::', n)]
    assert not outside, f'baseline functions using AVX registers: {outside[:10]}'
    assert any('zmm' in wide.get(n, ()) for n in built_for('AVX512'))
    assert not any('zmm' in wide.get(n, ()) for n in built_for('AVX2'))
