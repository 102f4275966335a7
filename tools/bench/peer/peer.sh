# Sourced by tools/bench/compare-*.sh (from the repo root): makes sure the PyTorch
# peer's virtual environment exists and sets `venv` and `torch_version`; without a
# peer it says why and ends the calling script with status 0 (strata's own figures
# stand alone). peer_require installs the extra modules a peer script needs (transformers).
peer_setup() {  # $1: the calling script's name, $2: the command with strata's own figures
  venv=${STRATA_BENCH_VENV:-.venv-bench}
  local log
  log=$(mktemp)
  if ! tools/bench/peer/setup-venv.sh >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "$1: no PyTorch peer (see above); strata's own figures are in '$2'" >&2
    exit 0
  fi
  torch_version=$(tail -n 1 "$log")
  rm -f "$log"
}

peer_require() {  # $@: python modules a peer script needs beyond torch (PyPI names), installed when missing
  local module
  for module in "$@"; do
    if ! "$venv/bin/python" -c "import $module" 2>/dev/null; then
      echo "strata-bench: installing $module from PyPI into $venv" >&2
      "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$module" >&2
    fi
  done
}
