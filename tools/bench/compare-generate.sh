#!/usr/bin/env bash
# Side-by-side generation speed: strata (`strata-bench generate`: KV-cache decode, batch 1)
# and transformers' generate() (tools/bench/peer/hf_generate.py) on the same models
# (gpt-mini and gpt2-small, GPT-2 layout, max_seq 1088, random weights), greedy, the same prompt lengths
# (16, 1024) and decoded-token count (32), fp32 and bf16, in one run, on the same threads
# (strata-bench uses every core; transformers is given as many: `nproc`),
# alternating the two sides each round so drift in the machine's speed hits both alike.
# Prints decode tokens/s of each (the median over rounds of each round's best of 3) and
# strata/transformers.
# Usage: tools/bench/compare-generate.sh [build-dir] [rounds]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
rounds=${2:-2}
threads=$(nproc)
. tools/bench/peer/peer.sh
peer_setup compare-generate "strata bench generate"
peer_require transformers

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

models=(gpt-mini gpt2-small)
declare -A strata_runs peer_runs
peer_version=
for ((r = 0; r < rounds; ++r)); do
  # strata's table rows: "gpt-mini  fp32  16  11.71 ms  85  ..." (model, precision, context,
  # time / token, tokens/s)
  while read -r model precision context value; do
    strata_runs[$model.$precision.$context]+=" $value"
  done < <("$build/tools/strata-bench" generate |
    awk '$1 ~ /^(gpt-mini|gpt2-small)$/ && $2 ~ /^(fp32|bf16)$/ && $3 ~ /^[0-9]+$/ {print $1, $2, $3, $6}')
  for model in "${models[@]}"; do
    while read -r line; do
      key=$("$venv/bin/python" -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["model"] + "." + r["precision"] + "." + str(r["context"]), r["tokens_per_s"], r["version"])' "$line")
      read -r k v peer_version <<<"$key"
      peer_runs[$k]+=" $v"
    done < <("$venv/bin/python" tools/bench/peer/hf_generate.py --model "$model" --threads "$threads" 2>/dev/null | grep '^{')
  done
done

echo
echo "decode tokens/s after the prompt (prefill excluded), batch 1, greedy, $threads threads,"
echo "median of $rounds alternating rounds (each round: best of 2-3 runs of 32 tokens)"
printf "%-11s %-9s %7s %10s %22s %8s %7s\n" model precision context strata "transformers $peer_version" ratio target
for model in "${models[@]}"; do
  for precision in fp32 bf16; do
    for context in 16 1024; do
      s=$(median <<<"${strata_runs[$model.$precision.$context]:-}")
      t=$(median <<<"${peer_runs[$model.$precision.$context]:-}")
      if [[ -z $s || -z $t ]]; then
        echo "compare-generate: no figure for $model $precision context $context (strata '$s', transformers '$t')" >&2
        exit 1
      fi
      printf "%-11s %-9s %7s %10.1f %22.1f %7.2fx %7s\n" "$model" "$precision" "$context" "$s" "$t" \
        "$(awk "BEGIN{print $s / $t}")" 1.5x
      echo "RESULT compare_generate_${model}_${precision}_${context} strata=$s transformers=$t ratio=$(awk "BEGIN{printf \"%.2f\", $s / $t}")"
    done
  done
done
echo "(transformers: generate(do_sample=False) with its default KV cache and SDPA attention; strata: Model::decode)"
