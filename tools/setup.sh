#!/usr/bin/env bash
# Idempotent set-up for libai_vit; every entry point (train.sh, test.sh) calls it.
#   bash tools/setup.sh            -> installs/verifies, prints the python to use on the last line
#   bash tools/setup.sh --onnx     -> the same, plus the optional ONNX export extra (5. below)
# 1. An active environment that already imports oneflow, libai and flowvision is used as it is.
# 2. Otherwise .venv/ is made from a Python 3.10 (PATH, then pyenv) and the exact pins installed.
# A stamp holding the hash of the pins makes a second run take about a second.
# 3. OneFlow's OpenBLAS core type: the fastest one this CPU can run is measured once per machine
#    (tools/openblas_coretype.py, ~40 s, cached in ~/.cache/libai_vit) and written as a .pth file into
#    .venv, so that every python of it applies it; train.sh and test.sh also export it. An active
#    environment is not written to: `python tools/openblas_coretype.py --install-pth` does it (README).
# 4. Our CPU kernels for OneFlow's ops (libai_vit/kernels, README "CPU kernels"): built into
#    .kernels/ once per machine, stamped by their sources and oneflow's version.
# 5. --onnx: requirements/onnx.txt (oneflow-onnx, onnx, onnxruntime) --no-deps into .onnx-extra/, a
#    folder only libai_vit.onnx_export puts on sys.path: the stack's protobuf and numpy never change
#    (the file says why those pins). Stamped like the stack; never part of the default path.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
ONNX_EXTRA="$ROOT/.onnx-extra"
say() { echo "[setup] $*" >&2; }
pip_quiet() {  # pip's notes about this machine's unused extra index folders are noise
  "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
want_onnx=0
for arg in "$@"; do
  case "$arg" in
    --onnx) want_onnx=1 ;;
    *) echo "[setup] error: unknown argument $arg (the only one is --onnx)" >&2; exit 2 ;;
  esac
done

openblas_choice() {  # $1: a python with the stack; the rest: tools/openblas_coretype.py's flags
  "$1" "$ROOT/tools/openblas_coretype.py" "${@:2}" >/dev/null || say "warning: could not choose an OpenBLAS core type"
}

onnx_extra() {  # $1: the stack's python; installs the ONNX extra once per requirements/onnx.txt
  local stamp; stamp="$(sha256sum "$ROOT/requirements/onnx.txt" | cut -c1-16)"
  if [ "$(cat "$ONNX_EXTRA/.libai_vit_stamp" 2>/dev/null)" != "$stamp" ]; then
    say "installing the ONNX export extra into $ONNX_EXTRA (~40 MB download)"
    rm -rf "$ONNX_EXTRA"
    pip_quiet "$1" -m pip install --disable-pip-version-check -q --no-deps --only-binary=:all: \
      --target "$ONNX_EXTRA" -r "$ROOT/requirements/onnx.txt"
    if ! out="$(PYTHONPATH="$ONNX_EXTRA" "$1" -c 'import onnx, onnxruntime, oneflow_onnx' 2>&1)"; then
      echo "[setup] error: the ONNX extra installed but does not import:" >&2; echo "$out" | tail -5 >&2
      rm -rf "$ONNX_EXTRA"; exit 1
    fi
    echo "$stamp" > "$ONNX_EXTRA/.libai_vit_stamp"
  fi
}

kernels() {  # $1: the stack's python; builds libai_vit/kernels once per sources and oneflow
  # (~1 min; a missing compiler or a failed build is one line, and OneFlow's own kernels run)
  "$1" "$ROOT/libai_vit/kernels/build.py" || true
}

ready() {  # $1: the stack's python: kernels, the extra if asked for, the python on the last line
  kernels "$1"
  if [ "$want_onnx" = 1 ]; then onnx_extra "$1"; fi
  echo "$1"
  exit 0
}

stack_ok() {  # $1: a python; true when it imports the whole stack
  "$1" - <<'PY' >/dev/null 2>&1
import oneflow, libai, flowvision, omegaconf
PY
}

active="${VIRTUAL_ENV:-${CONDA_PREFIX:-}}"
if [ -n "$active" ] && [ "$active" != "$VENV" ] && [ -x "$active/bin/python" ] && stack_ok "$active/bin/python"; then
  # nothing is installed into it: train.sh and test.sh put the repository on PYTHONPATH
  say "using the active environment $active (it already has oneflow + libai + flowvision)"
  openblas_choice "$active/bin/python"
  ready "$active/bin/python"
fi

stamp_want="$(cat "$ROOT/requirements/stack.txt" "$ROOT/tools/setup.sh" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.libai_vit_stamp" 2>/dev/null)" = "$stamp_want" ]; then
  openblas_choice "$VENV/bin/python" --install-pth
  ready "$VENV/bin/python"
fi

find_py310() {
  for c in python3.10 "$(command -v pyenv >/dev/null 2>&1 && pyenv root 2>/dev/null)/versions/"3.10*/bin/python3.10 \
           "$HOME"/.pyenv/versions/3.10*/bin/python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10; do
    if p="$(command -v "$c" 2>/dev/null)" && "$p" -c 'import sys, venv; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
      echo "$p"; return 0
    fi
  done
  return 1
}
if [ ! -x "$VENV/bin/python" ]; then
  PY310="$(find_py310)" || {
    echo "[setup] error: no Python 3.10 found (looked on PATH and in pyenv's versions)." >&2
    echo "[setup] oneflow 0.9.0 has wheels for Python 3.7-3.10 only. Install one, e.g. 'pyenv install 3.10.13'," >&2
    echo "[setup] or activate an environment that already has oneflow 0.9 + libai 0.1.1 + flowvision 0.2.1." >&2
    exit 1
  }
  say "creating $VENV with $PY310"
  "$PY310" -m venv "$VENV"
fi
PIP=(pip_quiet "$VENV/bin/python" -m pip install --disable-pip-version-check -q)
say "installing the pinned stack (first run downloads ~1.3 GB; later runs take seconds)"
# LiBai 0.1.1 and flowvision 0.2.1 are sdists whose setup.py needs pkg_resources and pybind11:
# build them in the venv itself, with a setuptools that still has pkg_resources.
"${PIP[@]}" "setuptools<70" wheel pybind11==3.1.0
"${PIP[@]}" --no-build-isolation -r "$ROOT/requirements/stack.txt"
"${PIP[@]}" --no-build-isolation --no-deps libai==0.1.1
"${PIP[@]}" --no-build-isolation --no-deps -e "$ROOT"
if ! out="$("$VENV/bin/python" -c 'import oneflow, libai, flowvision, libai_vit' 2>&1)"; then
  echo "[setup] error: the stack installed but does not import:" >&2; echo "$out" | tail -5 >&2; exit 1
fi
openblas_choice "$VENV/bin/python" --install-pth
echo "$stamp_want" > "$VENV/.libai_vit_stamp"
say "ready: $VENV"
ready "$VENV/bin/python"
