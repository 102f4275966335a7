#!/bin/sh
# Creates tools/hf/.venv for check_hf.py, check_peft.py and hf_table.py: transformers,
# peft and safetensors from PyPI. torch is large (~5 GB), so there is one copy: the
# site-packages of a venv that has it (TORCH_VENV, default the benchmark peer's: the
# repo's ${STRATA_BENCH_VENV:-.venv-bench}, made here by tools/bench/peer/setup-venv.sh
# when it is missing) are linked in through a .pth file. Never used by the build or the tests.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
torch_venv=${TORCH_VENV:-$repo_root/${STRATA_BENCH_VENV:-.venv-bench}}
python3 -m venv "$here/.venv"
site=$("$here/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ -z "${TORCH_VENV:-}" ] && ! "$torch_venv/bin/python" -c 'import torch' 2>/dev/null; then
  "$repo_root/tools/bench/peer/setup-venv.sh"
fi
peer=$("$torch_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$peer" > "$site/torch_peer.pth"
"$here/.venv/bin/pip" install --quiet transformers peft safetensors numpy
"$here/.venv/bin/python" -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'
