"""Error of the kernels' exponential and logarithm (csrc/vec_window.h:
exp_nonpositive on every float32 in [-104, 0], log_normaliser on every
float32 in [1, 32]), in ulp of the result against float64, for the CPU
capability that runs (ATEN_CPU_CAPABILITY lowers it).

    python tools/analysis_tools/exp_error.py
"""
import numpy as np
import torch

import mmsoftpool.ops  # noqa: F401  (loads the operator library)
from mmsoftpool.tools.launch import ToolParser, run_tool

CHUNK = 1 << 24


def sweep(name, function, exact_function, start, end):
    """Every float32 whose bit pattern lies between those of start and end
    (the magnitude grows with the bit pattern, whatever the sign)."""
    first, last = (int(np.float32(v).view(np.uint32)) for v in (start, end))
    worst, worst_at, above_half = 0.0, None, 0
    for begin in range(first, last + 1, CHUNK):
        x = np.arange(begin, min(begin + CHUNK, last + 1), dtype=np.uint32).view(np.float32)
        approx = function(torch.from_numpy(x)).numpy().astype(np.float64)
        exact = exact_function(x.astype(np.float64))
        spacing = np.spacing(np.abs(exact.astype(np.float32))).astype(np.float64)
        error = np.abs(approx - exact) / spacing
        error[exact == 0] = np.abs(approx - exact)[exact == 0]  # exact results must be exact
        above_half += int((error > 0.5).sum())
        if error.max() > worst:
            worst, worst_at = float(error.max()), float(x[error.argmax()])
    total = last - first + 1
    print(f'{name}, kernels {torch.ops.mmsoftpool._cpu_capability()}: {total} arguments, '
          f'max error {worst:.3f} ulp at x = {worst_at!r}, '
          f'{above_half} ({above_half / total:.2%}) not correctly rounded')


def main():
    # no options; a stray argument is refused, not ignored (the sweep is long)
    ToolParser(description=__doc__).parse_args()
    sweep('exp_nonpositive on [-104, 0]', torch.ops.mmsoftpool._exp_nonpositive, np.exp, -0.0,
          -104.0)
    sweep('log_normaliser on [1, 32]', torch.ops.mmsoftpool._log_normaliser, np.log, 1.0, 32.0)


if __name__ == '__main__':
    run_tool(main)
