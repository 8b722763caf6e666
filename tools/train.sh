#!/usr/bin/env bash
# LiBai's launcher convention:  bash tools/train.sh FILE CONFIG NPROC [key=value ...] [--resume]
# Multi-node: NODE (nodes), NODE_RANK, ADDR (master address), PORT (master port).
# Sets up the environment first (idempotent; seconds when already done).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 3 ]; then
  echo "usage: bash tools/train.sh FILE CONFIG NPROC [key=value ...]" >&2; exit 2
fi
FILE=$1; CONFIG=$2; NPROC=$3; shift 3
[ -f "$FILE" ] || { echo "error: $FILE does not exist" >&2; exit 2; }
[ -f "$CONFIG" ] || { echo "error: config $CONFIG does not exist" >&2; exit 2; }
[[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || { echo "error: NPROC must be a positive number of processes, got '$NPROC'" >&2; exit 2; }
PY="$(bash "$ROOT/tools/setup.sh" | tail -n 1)"
eval "$("$PY" "$ROOT/tools/openblas_coretype.py" --export)"  # OneFlow's fastest matmul kernel here
NODE=${NODE:-1}; NODE_RANK=${NODE_RANK:-0}; ADDR=${ADDR:-127.0.0.1}; PORT=${PORT:-12345}
# OneFlow's CPU kernels are single-threaded matmuls: one process per core scales, threads do not.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export GLOG_minloglevel=${GLOG_minloglevel:-2}  # silence OneFlow's C++ warnings (no CUDA driver, no RDMA)
export ONEFLOW_FUSE_OPTIMIZER_UPDATE_CAST=true
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PY" "$ROOT/tools/check_config.py" "$CONFIG" $((NPROC * NODE)) "$@" || exit $?
# A failing rank already printed its one-line error; drop the launcher's own traceback about it.
drop_launcher_traceback() {
  awk '/^Traceback \(most recent call last\):/ { block = $0; inside = 1; next }
       inside { block = block "\n" $0
                if ($0 ~ /^[A-Za-z_.]*(Error|Exception|Interrupt)/) {
                  if (block !~ /oneflow\/distributed\/launch\.py/) print block
                  inside = 0; fflush() }
                next }
       { print; fflush() }
       END { if (inside) print block }'
}
exec "$PY" -m oneflow.distributed.launch --nproc_per_node "$NPROC" --nnodes "$NODE" --node_rank "$NODE_RANK" \
  --master_addr "$ADDR" --master_port "$PORT" "$FILE" --config-file "$CONFIG" "$@" 2> >(drop_launcher_traceback >&2)
