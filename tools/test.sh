#!/usr/bin/env bash
# Run the test suite (sets the environment up first):  bash tools/test.sh [pytest args]
# Multi-process cases are marked `slow` and run too; `bash tools/test.sh -m "not slow"` skips them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$(bash "$ROOT/tools/setup.sh" | tail -n 1)"
eval "$("$PY" "$ROOT/tools/openblas_coretype.py" --export)"  # OneFlow's fastest matmul kernel here
cd "$ROOT"
export GLOG_minloglevel=${GLOG_minloglevel:-2} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export PYTHONPATH="$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m pytest -ra "$@"
