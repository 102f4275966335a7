#!/usr/bin/env bash
# Side-by-side training throughput: strata (strata-bench train) and the PyTorch peer
# (tools/bench/peer/torch_gpt.py), fp32 and bf16, 2 threads, in one run, per model
# alternating the two so drift in the machine's speed hits both alike. Prints
# strata/PyTorch ratios of the medians over rounds, and strata's MFU against the
# FMA-loop peak of its own run.
# Usage: tools/bench/compare-train.sh [build-dir] [rounds] [models]
#   models: space-separated, default "gpt-mini gpt2-small llama-60m"
#   (gpt-mini B 8 x T 256; gpt2-small and llama-60m B 4 x T 256; the larger two
#   take a few minutes a round on two cores)
#   STRATA_BENCH_TRAIN_STEPS: timed steps a side (default 10 for gpt-mini, 4 otherwise)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
rounds=${2:-2}
models=${3:-gpt-mini gpt2-small llama-60m}
. tools/bench/peer/peer.sh
peer_setup compare-train "strata-bench train"

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

declare -A strata_runs torch_runs mfu_runs
for model in $models; do
  if [[ $model == gpt-mini ]]; then warmup=3 steps=10; else warmup=1 steps=4; fi
  steps=${STRATA_BENCH_TRAIN_STEPS:-$steps}
  for ((r = 0; r < rounds; ++r)); do
    while read -r key value; do
      key=${key#train_${model}_}
      case $key in
        *_tokens_per_s) mode=${key%_tokens_per_s}; strata_runs[$model.$mode]+=" $value" ;;
        *_mfu) mode=${key%_mfu}; mfu_runs[$model.$mode]+=" $value" ;;
      esac
    done < <(STRATA_BENCH_TRAIN_MODELS=$model STRATA_BENCH_TRAIN_STEPS=$steps "$build/tools/strata-bench" train |
      awk '/^RESULT/ {print $2, $3}')
    for mode in fp32 bf16; do
      value=$("$venv/bin/python" tools/bench/peer/torch_gpt.py --config "$model" --mode "$mode" --threads 2 \
        --warmup "$warmup" --steps "$steps" 2>/dev/null |
        tail -n 1 | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_s"])')
      torch_runs[$model.$mode]+=" $value"
    done
  done
done

echo
echo "training throughput, 2 threads, median of $rounds alternating rounds (tokens/s; each round's figure is"
echo "the median step); MFU against the FMA-loop peak measured in strata's run"
printf "%-11s %-9s %10s %16s %8s %7s %8s\n" model precision strata "PyTorch $torch_version" ratio MFU target
for model in $models; do
  for mode in fp32 bf16; do
    s=$(median <<<"${strata_runs[$model.$mode]}")
    t=$(median <<<"${torch_runs[$model.$mode]}")
    m=$(median <<<"${mfu_runs[$model.$mode]}")
    case $model.$mode in
      gpt-mini.fp32) target=1.5x ;; gpt-mini.bf16) target=1.0x ;; gpt2-small.*) target=2.0x ;; *) target=- ;;
    esac
    printf "%-11s %-9s %10.0f %16.0f %7.2fx %6.1f%% %8s\n" "$model" "$mode" "$s" "$t" \
      "$(awk "BEGIN{print $s / $t}")" "$(awk "BEGIN{print 100 * $m}")" "$target"
    echo "RESULT compare_${model}_${mode} strata=$s torch=$t ratio=$(awk "BEGIN{printf \"%.2f\", $s / $t}")"
  done
done
echo "(PyTorch bf16 is torch.autocast on CPU; strata bf16 keeps bf16 params and activations, f32 master and moments)"
