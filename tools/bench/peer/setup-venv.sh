#!/usr/bin/env bash
# Creates the PyTorch peer's virtual environment, idempotently, and prints the torch
# version. Only the benchmark peer needs Python: strata, its build and its tests never do.
#
# Where: ${STRATA_BENCH_VENV:-.venv-bench}, relative to the repo root (git-ignored).
# What:  the current `torch` from PyPI, plus numpy (torch warns at import without it).
#
# PyPI's only Linux x86-64 torch wheel is the CUDA build (~540 MB wheel; with the
# nvidia-* and triton wheels it pulls in, ~5.3 GB installed). It runs on a CPU-only
# machine as is: CUDA is loaded but never initialised. Installing torch --no-deps
# does not work, because libtorch_cuda.so links libcudart, libcublas, libcudnn, ... at
# load time; hand-picking those nvidia-* wheels would save ~1.3 GB (triton, cusolver)
# but breaks with every torch release, so this takes the plain `pip install torch`.
#
# Nothing is installed or upgraded when `import torch` already works in the venv;
# delete the folder to get a newer torch.
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$repo_root"
venv=${STRATA_BENCH_VENV:-.venv-bench}
python=${PYTHON:-python3}

if ! command -v "$python" >/dev/null; then
  echo "strata-bench: $python not found" >&2
  echo "run as root:  apt-get update && apt-get install -y --no-install-recommends python3 python3-venv" >&2
  exit 1
fi
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "strata-bench: $python cannot create virtual environments (python3-venv missing)" >&2
  echo "run as root:  apt-get update && apt-get install -y --no-install-recommends python3-venv" >&2
  exit 1
fi

if [[ ! -x "$venv/bin/python" ]]; then
  echo "strata-bench: creating $venv" >&2
  "$python" -m venv "$venv"
fi

print_version='import torch; print(torch.__version__)'
if ! "$venv/bin/python" -c "$print_version" 2>/dev/null; then
  echo "strata-bench: installing torch from PyPI into $venv (several GB)" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check torch numpy
  "$venv/bin/python" -c "$print_version"
fi
