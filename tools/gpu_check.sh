#!/usr/bin/env bash
# The CUDA kernels on a GPU, with torch alone (no OpenMMLab stack needed):
#   1. builds the extension in place, CUDA kernels for this GPU's architecture;
#   2. runs the op's CUDA tests (tests/test_soft_pool.py's CUDA cases and
#      tests/test_cuda_path.py, whose test_cuda_path_gpu_* compare the kernels
#      with the same code run on the CPU);
#   3. prints the benchmark tables on the GPU: times as ratios to max_pool,
#      avg_pool and a copy of the input (the memory bandwidth);
#   4. runs test_cuda_path_gpu_* again under compute-sanitizer's memcheck and
#      racecheck, where compute-sanitizer is installed.
# Each step has a time limit within one budget (GPU_CHECK_SECONDS, 460 s), so
# the whole check ends in under 8 minutes; a step the budget had no time for
# is reported as not run, and fails the check. On a machine without a CUDA
# device it prints "no CUDA device" and exits 0.
#
# Usage, from anywhere: bash tools/gpu_check.sh   (PYTHON: the interpreter with torch)
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# Every step's time comes out of this budget (seconds), so that the whole
# check ends in under 8 minutes even where a step would take longer.
BUDGET=${GPU_CHECK_SECONDS:-460}
START=$SECONDS
FAILED=()

step() { echo; echo "== gpu_check [$((SECONDS - START)) s] $*"; }

# run NAME LIMIT COMMAND...: runs a step for at most LIMIT seconds (less if
# the budget has less left), recording a failure, a timeout or a step the
# budget had no time for, instead of stopping: one report shows every step.
run() {
  local name=$1 limit=$2 rc=0
  shift 2
  local left=$((BUDGET - (SECONDS - START)))
  [ "$limit" -le "$left" ] || limit=$left
  step "$name"
  if [ "$limit" -le 0 ]; then
    echo "gpu_check: $name: not run, the ${BUDGET} s budget is spent"
    FAILED+=("$name (not run)")
    return
  fi
  timeout "$limit" "$@" || rc=$?
  if [ "$rc" -eq 124 ]; then
    echo "gpu_check: $name: timed out after $limit s"
  fi
  [ "$rc" -eq 0 ] || FAILED+=("$name (exit $rc)")
}

# Exit 3: no device; a torch that does not import is an error, not "no device".
"$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)'
case $? in
  0) ;;
  3) echo "no CUDA device (torch.cuda.is_available() is False): nothing to check"; exit 0 ;;
  *) echo "gpu_check: $PYTHON could not import torch"; exit 1 ;;
esac
"$PYTHON" -c 'import torch; p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), {p.name}, "
      f"sm_{p.major}{p.minor}, {p.multi_processor_count} multiprocessors")'

# The build: this GPU's architecture only (the shortest compile); CUDA headers
# that torch's wheels keep under site-packages/nvidia/*/include (cusparse.h).
export FORCE_CUDA=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$("$PYTHON" -c 'import torch
print("%d.%d" % torch.cuda.get_device_capability(0))')}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
SITE=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for include in "$SITE"/nvidia/*/include; do
  [ -d "$include" ] && CPATH="$include${CPATH:+:$CPATH}"
done
export CPATH=${CPATH:-}
run "build (sm ${TORCH_CUDA_ARCH_LIST}, ${MAX_JOBS} jobs)" 240 \
  "$PYTHON" setup.py -q build_ext --inplace
if [ ${#FAILED[@]} -ne 0 ]; then
  echo "gpu_check: the build failed; nothing else to run"
  exit 1
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

# -k cuda: the CUDA cases of the device-parametrised tests, and every
# test_cuda_path_* test (those on the CPU executor too).
run "CUDA tests" 150 \
  "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_soft_pool.py tests/test_cuda_path.py \
  -k cuda

BENCHMARK=(tools/analysis_tools/benchmark_pool.py --device cuda --warmup 5 --repeats 50)
run "benchmark, 2-D (the ResNet stem)" 60 "$PYTHON" "${BENCHMARK[@]}" \
  --shape 32 64 112 112 --cases 2,2,0 3,2,1 --memory-format contiguous channels_last
run "benchmark, 3-D" 40 "$PYTHON" "${BENCHMARK[@]}" \
  --shape 8 64 16 56 56 --cases 2,2,0 3,2,1

SANITIZER=$(command -v compute-sanitizer || true)
if [ -z "$SANITIZER" ] && [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" ]; then
  SANITIZER=${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer
fi
if [ -n "$SANITIZER" ]; then
  for tool in memcheck racecheck; do
    # Without the caching allocator every tensor is its own allocation, so an
    # access past a tensor's end is outside any allocation, as memcheck sees it.
    run "compute-sanitizer --tool $tool" 120 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
      "$SANITIZER" --tool "$tool" --error-exitcode 99 --target-processes all \
      "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda_path.py -k cuda_path_gpu
  done
else
  step "compute-sanitizer: not installed, memcheck and racecheck skipped"
fi

step "done"
if [ ${#FAILED[@]} -ne 0 ]; then
  printf 'gpu_check: FAILED: %s\n' "${FAILED[@]}"
  exit 1
fi
echo "gpu_check: every step passed"
