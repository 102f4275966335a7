#!/usr/bin/env bash
# Side-by-side training throughput: strata (strata-bench train) and the PyTorch peer
# (tools/bench/peer/torch_gpt.py) on gpt-mini, fp32 and bf16, 2 threads, in one run,
# alternating the two so drift in the machine's speed hits both alike. Prints
# strata/PyTorch ratios. Usage: tools/bench/compare-train.sh [build-dir] [rounds]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
rounds=${2:-2}
. tools/bench/peer/peer.sh
peer_setup compare-train "strata-bench train"

declare -A strata_best torch_best
for ((r = 0; r < rounds; ++r)); do
  while read -r key value; do
    mode=${key#train_}; mode=${mode%_tokens_per_s}
    if [[ -z "${strata_best[$mode]:-}" ]] || awk "BEGIN{exit !($value > ${strata_best[$mode]})}"; then
      strata_best[$mode]=$value
    fi
  done < <("$build/tools/strata-bench" train | awk '/^RESULT/ {print $2, $3}')
  for mode in fp32 bf16; do
    value=$("$venv/bin/python" tools/bench/peer/torch_gpt.py --mode "$mode" --threads 2 --warmup 3 --steps 10 2>/dev/null |
      tail -n 1 | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_s"])')
    if [[ -z "${torch_best[$mode]:-}" ]] || awk "BEGIN{exit !($value > ${torch_best[$mode]})}"; then
      torch_best[$mode]=$value
    fi
  done
done

echo
echo "gpt-mini training throughput, 2 threads, best of $rounds alternating rounds (tokens/s)"
printf "%-10s %12s %16s %10s %8s\n" precision strata "PyTorch $torch_version" ratio target
for mode in fp32 bf16; do
  target=$([[ $mode == fp32 ]] && echo "1.5x" || echo "1.0x")
  printf "%-10s %12.0f %16.0f %9.2fx %8s\n" "$mode" "${strata_best[$mode]}" "${torch_best[$mode]}" \
    "$(awk "BEGIN{print ${strata_best[$mode]} / ${torch_best[$mode]}}")" "$target"
done
echo "(PyTorch bf16 is torch.autocast on CPU; strata bf16 keeps bf16 params and activations, f32 master and moments)"
