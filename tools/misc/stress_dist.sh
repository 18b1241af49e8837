#!/usr/bin/env bash
# Usage: tools/misc/stress_dist.sh [N]
# Runs tests/test_tools.py::test_dist_train_two_cpu_processes (tools/dist_train.sh,
# 2 CPU processes, gloo) N times (default 20) while every core is kept busy by
# a busy-loop process, as on a loaded machine; prints "K of N passed" and exits
# 1 if any run failed. Not part of `make test`: a run takes about a minute
# under load. The log of each failed run is kept in LOG_DIR (default: a new
# directory under /tmp); BURNERS (default: the number of cores) and PYTHON
# (default: .venv/bin/python) can be set.
set -u
REPO=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-20}
case $N in
    '' | *[!0-9]* | 0) echo "usage: $0 [N]   (N: a number of runs, 1 or more)" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
BURNERS=${BURNERS:-$(nproc)}
LOG_DIR=${LOG_DIR:-$(mktemp -d /tmp/stress_dist.XXXXXX)}
mkdir -p "$LOG_DIR"

burners=()
cleanup() {
    for pid in "${burners[@]}"; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for _ in $(seq "$BURNERS"); do
    "$PYTHON" -c 'while True: pass' &
    burners+=($!)
done
echo "[stress_dist] $N runs, $BURNERS busy-loop processes on $(nproc) cores; logs of failed runs in $LOG_DIR"

passed=0
for i in $(seq "$N"); do
    log=$LOG_DIR/run_$i.log
    start=$SECONDS
    (cd "$REPO" && "$PYTHON" -m pytest -q -p no:cacheprovider \
        tests/test_tools.py::test_dist_train_two_cpu_processes) >"$log" 2>&1
    rc=$?
    took=$((SECONDS - start))
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1))
        rm -f "$log"
        echo "[stress_dist] run $i/$N: passed (${took}s)"
    else
        why=''
        grep -q 'terminate called' "$log" && why=' (terminate called: SIGABRT)'
        echo "[stress_dist] run $i/$N: FAILED$why (${took}s), log: $log"
    fi
done

echo "[stress_dist] $passed of $N passed"
[ "$passed" -eq "$N" ]
