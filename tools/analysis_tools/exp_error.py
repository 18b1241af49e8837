"""Error of the kernels' exponential (csrc/vec_window.h, exp_nonpositive) on
every float32 in [-104, 0], in ulp of the result against the float64
exponential, for the CPU capability that runs (ATEN_CPU_CAPABILITY lowers it).

    python tools/analysis_tools/exp_error.py
"""
import numpy as np
import torch

import mmsoftpool.ops  # noqa: F401  (loads the operator library)

CHUNK = 1 << 24


def main():
    first = np.float32(-0.0).view(np.uint32)
    last = np.float32(-104.0).view(np.uint32)
    worst, worst_at, above_half = 0.0, None, 0
    for begin in range(int(first), int(last) + 1, CHUNK):
        x = np.arange(begin, min(begin + CHUNK, int(last) + 1), dtype=np.uint32).view(np.float32)
        approx = torch.ops.mmsoftpool._exp_nonpositive(torch.from_numpy(x)).numpy()
        exact = np.exp(x.astype(np.float64))
        spacing = np.spacing(np.abs(exact.astype(np.float32))).astype(np.float64)
        error = np.abs(approx.astype(np.float64) - exact) / spacing
        above_half += int((error > 0.5).sum())
        if error.max() > worst:
            worst, worst_at = float(error.max()), float(x[error.argmax()])
    total = int(last) - int(first) + 1
    print(f'kernels {torch.ops.mmsoftpool._cpu_capability()}: {total} arguments, '
          f'max error {worst:.3f} ulp at x = {worst_at!r}, '
          f'{above_half} ({above_half / total:.2%}) not correctly rounded')


if __name__ == '__main__':
    main()
