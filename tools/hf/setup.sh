#!/bin/sh
# Creates tools/hf/.venv for check_hf.py and check_peft.py: transformers, peft and
# safetensors from PyPI. torch is large: when a venv that already has it is given
# (TORCH_VENV, default the benchmark peer's: the repo's ${STRATA_BENCH_VENV:-.venv-bench},
# made by tools/bench/peer/setup-venv.sh), its site-packages are linked in through a
# .pth file instead. Never used by the build or the tests.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
torch_venv=${TORCH_VENV:-$repo_root/${STRATA_BENCH_VENV:-.venv-bench}}
python3 -m venv "$here/.venv"
site=$("$here/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ -x "$torch_venv/bin/python" ]; then
  peer=$("$torch_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$peer" > "$site/torch_peer.pth"
else
  "$here/.venv/bin/pip" install --quiet torch --index-url https://download.pytorch.org/whl/cpu
fi
"$here/.venv/bin/pip" install --quiet transformers peft safetensors numpy
"$here/.venv/bin/python" -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'
