#!/usr/bin/env bash
# Creates .venv at the repository root with the stack pinned in requirements/stack.txt.
# mmcv 2.1.0 has no wheel for torch 2.14, so it is built from its PyPI sdist with ops
# (its setup.py asks for C++14/17; torch 2.14's headers need C++20) and the wheel is cached
# under ~/.cache/mmsoftpool, keyed by mmcv, torch and Python versions.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
STACK=requirements/stack.txt
pin() { sed -n "s/^$1==//p" "$STACK"; }

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -c "$STACK")

echo "[setup] installing torch and the pinned Python stack (a few minutes on first use)"
"${PIP[@]}" $(grep -Ev '^(#|$|mmcv|mmdet|mmpretrain|mmaction2)' "$STACK" | sed 's/==.*//')

MMCV=$(pin mmcv)
TORCH=$(pin torch)
PYTAG=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/mmsoftpool/wheels/mmcv-$MMCV-torch$TORCH-$PYTAG"
if ! ls "$CACHE"/mmcv-*.whl >/dev/null 2>&1; then
    echo "[setup] building mmcv $MMCV with ops from its sdist (about 15 minutes on 2 cores)"
    BUILD=$(mktemp -d)
    trap 'rm -rf "$BUILD"' EXIT
    "$VENV/bin/python" -m pip download --disable-pip-version-check --no-deps --no-binary :all: \
        -d "$BUILD" "mmcv==$MMCV"
    tar -xzf "$BUILD"/mmcv-"$MMCV".tar.gz -C "$BUILD"
    sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$BUILD/mmcv-$MMCV/setup.py"
    (cd "$BUILD/mmcv-$MMCV" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} \
        "$OLDPWD/$VENV/bin/python" -m pip wheel --disable-pip-version-check --no-deps \
        --no-build-isolation -w "$BUILD/dist" .)
    mkdir -p "$CACHE"
    mv "$BUILD"/dist/mmcv-*.whl "$CACHE"/
fi

echo "[setup] installing mmcv (cached wheel), mmdet and mmpretrain"
"${PIP[@]}" "$CACHE"/mmcv-*.whl "mmdet==$(pin mmdet)" "mmpretrain==$(pin mmpretrain)"
# MMAction2, repacked and installed --no-deps (see the script)
PYTHON="$VENV/bin/python" bash tools/install_mmaction2.sh
"$VENV/bin/python" -c "import mmcv.ops, mmdet, mmpretrain, mmaction.models; print('[setup] stack ready: mmcv', mmcv.__version__, 'mmdet', mmdet.__version__, 'mmaction2', mmaction.__version__)"
