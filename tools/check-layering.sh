#!/usr/bin/env bash
# Checks every #include of the library and tools against the layer order of
# DESIGN.md §1:
#   lib/core -> kernels -> lib/model -> offload, lib/dist, lib/data -> lib/train -> lib/io -> tools
# A file may include its own folder and the folders before it; the three beside the
# store (offload, lib/dist, lib/data) may not include one another. Public headers
# (lib/include/strata/*.h) belong to the layer that implements them (the table
# below). examples/ and tests/ may include anything and are not checked.
# Each violation prints as "file:line: layer includes file (layer, why)"; those known
# and kept for now are listed with a reason in tools/layering-allow.txt.
# Exit status: 0 when every include is in order or allowed, 1 otherwise (a stale
# allow-list entry counts too, so the list shrinks as violations are fixed).
# Plain bash and awk (CI has no Python guarantee). Usage: tools/check-layering.sh [-v]
set -euo pipefail
cd "$(dirname "$0")/.."
verbose=${1:-}
allow_file=tools/layering-allow.txt

# Rank of each layer; layers of the same rank are peers and may not include each other.
declare -A rank=([core]=0 [kernels]=1 [model]=2 [offload]=3 [dist]=3 [data]=3 [train]=4 [io]=5 [tools]=6)
# Public headers, by the layer that implements them.
declare -A public=([device.h]=core [tensor.h]=core [dtype.h]=core [error.h]=core [ops.h]=kernels
                   [model.h]=model [unit.h]=model [gradcheck.h]=model [lora.h]=model [optim.h]=model [offload.h]=offload [state.h]=offload [dist.h]=dist [data.h]=data [tokenizer.h]=data
                   [train.h]=train [plan.h]=train [run_log.h]=train [checkpoint.h]=io [strata.h]=tools)

# layer_of PATH: sets `layer` to the layer of a repository path, "" when it is in
# none (tests, examples), "unknown" for a public header missing from the table.
layer_of() {
  case "$1" in
    lib/include/strata/*) layer=${public[${1#lib/include/strata/}]:-unknown} ;;
    lib/core/*) layer=core ;;
    kernels/*) layer=kernels ;;
    lib/model/* | lib/optim/*) layer=model ;;  # lib/optim: AdamW over a Model's units
    offload/*) layer=offload ;;
    lib/dist/*) layer=dist ;;
    lib/data/*) layer=data ;;
    lib/train/*) layer=train ;;
    lib/io/*) layer=io ;;
    tools/*) layer=tools ;;
    *) layer="" ;;
  esac
}

# normalize PATH: sets `path` with "." and ".." segments folded.
normalize() {
  local IFS=/ part
  local -a out=()
  for part in $1; do
    case "$part" in
      "" | .) ;;
      ..) ((${#out[@]})) && unset 'out[${#out[@]}-1]' ;;
      *) out+=("$part") ;;
    esac
  done
  path="${out[*]}"
}

# resolve DIR NAME: sets `target` to the repository path an include names, searched as
# the compiler does (the including file's folder, then root, kernels, lib/include),
# or "" for a system or generated header.
resolve() {
  local dir
  target=""
  for dir in "$1" . kernels lib/include; do
    if [[ -f "$dir/$2" ]]; then
      normalize "$dir/$2"
      target=$path
      return
    fi
  done
}

declare -A allowed=() used_allow=()
if [[ -f $allow_file ]]; then
  while IFS= read -r line; do
    line=${line%%#*}
    read -r file arrow include _ <<<"$line" || true
    [[ -n ${file:-} && ${arrow:-} == "->" && -n ${include:-} ]] && allowed["$file -> $include"]=1
  done <"$allow_file"
fi

violations=0 allowed_hits=0 checked=0 stale=0
# One awk pass prints "file<TAB>line<TAB>name" for every #include "name" or <strata/...>.
while IFS=$'\t' read -r src line name; do
  layer_of "$src"
  from=$layer
  [[ -z $from ]] && continue
  resolve "${src%/*}" "$name"
  [[ -z $target ]] && continue
  layer_of "$target"
  to=$layer
  [[ -z $to || $to == "$from" ]] && continue
  checked=$((checked + 1))
  if [[ $to == unknown ]]; then
    why="a public header missing from the table in tools/check-layering.sh"
  elif ((rank[$to] < rank[$from])); then
    continue
  elif ((rank[$to] == rank[$from])); then
    why="a peer layer"
  else
    why="a later layer"
  fi
  key="$src -> $target"
  if [[ -n ${allowed[$key]:-} ]]; then
    used_allow[$key]=1
    allowed_hits=$((allowed_hits + 1))
    if [[ $verbose == -v ]]; then echo "$src:$line: allowed: $from includes $target ($to)"; fi
    continue
  fi
  echo "$src:$line: $from includes $target ($to, $why)"
  violations=$((violations + 1))
done < <(find lib kernels offload tools -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.cpp' -o -name '*.cu' \
           -o -name '*.cuh' \) -print0 | sort -z | xargs -0 awk '
           /^[ \t]*#[ \t]*include[ \t]*("|<strata\/)/ {
             s = $0; sub(/^[ \t]*#[ \t]*include[ \t]*[<"]/, "", s); sub(/[>"].*/, "", s)
             print FILENAME "\t" FNR "\t" s }')

for key in "${!allowed[@]}"; do
  if [[ -z ${used_allow[$key]:-} ]]; then
    echo "$allow_file: stale entry (that include is gone or now in order): $key"
    stale=$((stale + 1))
  fi
done
echo "check-layering: $checked includes across folders, $violations out of order, $allowed_hits allowed by $allow_file"
((violations == 0 && stale == 0))
