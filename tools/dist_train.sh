#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG NPROC [train.py options]
# NPROC processes of tools/train.py with torchrun (tools/dist_run.sh).
exec "$(dirname "$0")/dist_run.sh" train.py "$2" "$1" "${@:3}"
