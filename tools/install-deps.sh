#!/usr/bin/env bash
# Installs the Debian packages strata's build, tests and demo need, only when some
# are missing. Idempotent. When not root and something is missing, prints the exact
# apt-get line to run and exits non-zero.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config ccache   # build
  libopenblas-dev libtbb-dev liburing-dev   # library: GEMMs, parallel loops, NVMe I/O
  libpcre2-dev libutf8proc-dev nlohmann-json3-dev  # tokenizers: patterns, NFC, tokenizer.json; JSON
  libsentencepiece-dev                      # tokenizers: SentencePiece tokenizer.model
  libcli11-dev                              # the CLI's and the examples' option parsing
  catch2                                    # tests (Catch2 v2)
  fortunes                                  # the demo's default corpus
  fio                                       # the NVMe benchmark's peer (make bench)
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

line="apt-get install -y --no-install-recommends ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
  echo "strata: missing Debian packages: ${missing[*]}" >&2
  echo "run as root:  apt-get update && $line" >&2
  exit 1
fi
echo "strata: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
