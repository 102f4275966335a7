#!/bin/sh
# Creates tools/hf/.venv for check_hf.py: transformers and safetensors from PyPI.
# torch is large: when a venv that already has it is given (TORCH_VENV, default the
# benchmark peer's), its site-packages are linked in through a .pth file instead.
# Never used by the build or the tests.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
torch_venv=${TORCH_VENV:-/work/wt/torchpeer/.venv-bench}
python3 -m venv "$here/.venv"
site=$("$here/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ -d "$torch_venv" ]; then
  peer=$("$torch_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$peer" > "$site/torch_peer.pth"
else
  "$here/.venv/bin/pip" install --quiet torch --index-url https://download.pytorch.org/whl/cpu
fi
"$here/.venv/bin/pip" install --quiet transformers safetensors numpy
"$here/.venv/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
