#!/usr/bin/env bash
# Usage: tools/dist_run.sh TOOL NPROC [TOOL's arguments]
# What tools/dist_train.sh and tools/dist_test.sh run: NPROC processes of
# tools/TOOL on this node with torchrun. Multi-node: set NNODES, NODE_RANK,
# MASTER_ADDR and PORT on every node. Without CUDA the processes use the gloo
# backend on CPU (see mmsoftpool/tools/launch.py).
TOOL=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/$TOOL" \
    "${@:3}" \
    --launcher pytorch
