#!/usr/bin/env bash
# Installs MMAction2 (the pin in requirements/stack.txt) into the environment of
# $PYTHON (default: python), for the video backbones, configs and demo.
#
# mmaction2 1.2.0 as published cannot import mmaction.models: localizers/__init__.py
# imports .drn, which its wheel does not contain. The wheel is repacked with that import
# removed and cached under ~/.cache/mmsoftpool/wheels; it is installed --no-deps,
# because its requirements opencv-contrib-python (which replaces mmcv's cv2) and decord
# serve video decoding, not the rawframe pipelines used here. What the rawframe path
# does need comes with `pip install mmsoftpool[video]`.
#
# Usage: PYTHON=.venv/bin/python bash tools/install_mmaction2.sh
set -euo pipefail
STACK="$(cd "$(dirname "$0")/.." && pwd)/requirements/stack.txt"
PYTHON=${PYTHON:-python}
MMACTION=$(sed -n 's/^mmaction2==//p' "$STACK")
if [ -z "$MMACTION" ]; then echo "[mmaction2] no mmaction2 pin in $STACK" >&2; exit 1; fi
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/mmsoftpool/wheels/mmaction2-$MMACTION-no-drn"
PIP=("$PYTHON" -m pip --disable-pip-version-check)

if ! ls "$CACHE"/mmaction2-*.whl >/dev/null 2>&1; then
    echo "[mmaction2] repacking mmaction2 $MMACTION without its missing localizers/drn import"
    FIX=$(mktemp -d)
    trap 'rm -rf "$FIX"' EXIT
    "$PYTHON" -c 'import wheel' 2>/dev/null || "${PIP[@]}" install wheel
    "${PIP[@]}" download --no-deps --only-binary :all: -d "$FIX" "mmaction2==$MMACTION"
    "$PYTHON" -m wheel unpack -d "$FIX/unpacked" "$FIX"/mmaction2-*.whl
    INIT=$(ls "$FIX"/unpacked/mmaction2-*/mmaction/models/localizers/__init__.py)
    sed -i -e '/^from \.drn\.drn import DRN$/d' -e "s/, 'DRN'\]/]/" "$INIT"
    if grep -q drn "$INIT"; then echo "[mmaction2] could not remove the drn import from $INIT" >&2; exit 1; fi
    mkdir -p "$FIX/dist"
    "$PYTHON" -m wheel pack -d "$FIX/dist" "$FIX"/unpacked/mmaction2-*
    mkdir -p "$CACHE"
    mv "$FIX"/dist/mmaction2-*.whl "$CACHE"/
fi
"${PIP[@]}" install --no-deps "$CACHE"/mmaction2-*.whl
"$PYTHON" -c "import mmaction.models; print('[mmaction2] mmaction2', mmaction.__version__, 'ready')"
