#!/usr/bin/env bash
# Converts a run log and reads it back with TensorBoard's own reader, value by value.
# The tensorboard package (PyPI) lives in its own virtual environment, created on
# first use: $STRATA_TB_VENV, default build/tb-venv. Nothing else in strata uses it.
#   tools/tensorboard/check.sh run/log.jsonl
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
log=${1:?usage: check.sh LOG.jsonl}
venv=${STRATA_TB_VENV:-$here/../../build/tb-venv}
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c "import tensorboard" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q tensorboard
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
python3 "$here/jsonl_to_tensorboard.py" "$log" "$out"
"$venv/bin/python" "$here/check.py" "$log" "$out"
