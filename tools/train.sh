#!/usr/bin/env bash
# LiBai's launcher convention:  bash tools/train.sh FILE CONFIG NPROC [key=value ...] [--resume]
# Multi-node: NODE (nodes), NODE_RANK, ADDR (master address), PORT (master port; on one node a free
# port is taken when unset, so concurrent runs do not meet). libai_vit/launch.py starts the ranks and
# ends them all, from any parent, when one fails or this script gets SIGINT/SIGTERM/SIGHUP;
# LIBAI_VIT_RENDEZVOUS_TIMEOUT (s, default 600) bounds the wait for the other nodes' ranks.
# Sets up the environment first (idempotent; seconds when already done).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 3 ]; then
  echo "usage: bash tools/train.sh FILE CONFIG NPROC [key=value ...]" >&2; exit 2
fi
FILE=$1; CONFIG=$2; NPROC=$3; shift 3
[ ! -d "$FILE" ] || { echo "error: $FILE is a folder: give the script to run, e.g. tools/train_net.py" >&2; exit 2; }
[ -f "$FILE" ] || { echo "error: $FILE does not exist" >&2; exit 2; }
[ ! -d "$CONFIG" ] || { echo "error: config $CONFIG is a folder: give a config file in it, e.g. configs/demo_digits_3d.py" >&2; exit 2; }
[ -f "$CONFIG" ] || { echo "error: config $CONFIG does not exist" >&2; exit 2; }
[[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || { echo "error: NPROC must be a positive number of processes, got '$NPROC'" >&2; exit 2; }
PY="$(bash "$ROOT/tools/setup.sh" | tail -n 1)"
eval "$("$PY" "$ROOT/tools/openblas_coretype.py" --export)"  # OneFlow's fastest matmul kernel here
NODE=${NODE:-1}; NODE_RANK=${NODE_RANK:-0}; ADDR=${ADDR:-127.0.0.1}; PORT=${PORT:-}
# OneFlow's CPU kernels are single-threaded matmuls: one process per core scales, threads do not.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export GLOG_minloglevel=${GLOG_minloglevel:-2}  # silence OneFlow's C++ warnings (no CUDA driver, no RDMA)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PY" "$ROOT/tools/check_config.py" "$CONFIG" $((NPROC * NODE)) "$@" || exit $?
exec "$PY" "$ROOT/libai_vit/launch.py" --nproc_per_node "$NPROC" --nnodes "$NODE" --node_rank "$NODE_RANK" \
  --master_addr "$ADDR" ${PORT:+--master_port "$PORT"} "$FILE" --config-file "$CONFIG" "$@"
