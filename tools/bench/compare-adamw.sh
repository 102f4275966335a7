#!/usr/bin/env bash
# Side-by-side CPU AdamW throughput: strata (strata-bench adamw: ops::adamw_step, the
# offloaded optimizer's kernel, and the triad-style bandwidth bound measured in the
# same run) and the PyTorch peer (tools/bench/peer/torch_adamw.py: torch.optim.AdamW,
# foreach and fused, its fastest), f32, 2 threads, back to back one size at a time,
# so only one of them holds memory at once. Prints one table.
# Usage: tools/bench/compare-adamw.sh [build-dir] [sizes]
#   sizes: comma-separated parameter counts (K/M/G = powers of 2), default
#   64M,128M,256M,512M,1G. Peak memory: 16 B/param + 2 B/param (bf16 copy) for strata,
#   16-20 B/param for PyTorch; 1G needs about 20 GiB free.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
sizes=${2:-64M,128M,256M,512M,1G}
threads=2
. tools/bench/peer/peer.sh
peer_setup compare-adamw "strata-bench adamw"

rows=()
IFS=, read -ra size_list <<<"$sizes"
for size in "${size_list[@]}"; do
  out=$("$build/tools/strata-bench" adamw --sizes "$size" --threads "$threads")
  grep -v '^RESULT' <<<"$out" | sed '/^$/d; /^[0-9]* threads\./,$d'  # strata's own table (bf16 copy rows too)
  strata=$(awk '/^RESULT adamw_.*_f32_params_per_s/ {print $3}' <<<"$out")
  bound=$(awk '/^RESULT adamw_.*_f32_bound_params_per_s/ {print $3}' <<<"$out")
  torch=$("$venv/bin/python" tools/bench/peer/torch_adamw.py --params "$size" --threads "$threads" \
    --variants foreach,fused --warmup 1 --steps 5 2>/dev/null | tail -n 1 |
    "$venv/bin/python" -c 'import json,sys; r = json.load(sys.stdin); print(r["params_per_s_best"], r["fastest_variant"])')
  rows+=("$size $strata $bound ${torch% *} ${torch#* }")
done

echo
echo "CPU AdamW, f32, $threads threads, best of 5 after a warm-up (G params/s = 1e9 parameters per second)"
printf "%-6s %10s %10s %13s %20s %13s\n" size strata bound strata/bound "PyTorch $torch_version" strata/torch
for row in "${rows[@]}"; do
  read -r size strata bound torch variant <<<"$row"
  awk -v size="$size" -v s="$strata" -v b="$bound" -v t="$torch" -v variant="$variant" 'BEGIN {
    printf "%-6s %10.3f %10.3f %12.2fx %20s %12.2fx\n", size, s / 1e9, b / 1e9, s / b,
      sprintf("%.3f (%s)", t / 1e9, variant), s / t }'
done
echo "(bound: a triad-style loop touching AdamW's 28 bytes per parameter over the same arrays; targets: strata/bound >= 0.7x, strata/torch >= 3x)"
