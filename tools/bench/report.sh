#!/usr/bin/env bash
# `make bench`: every benchmark, and one markdown report of them in
# $build/bench-report.md — the machine (CPU model, cores, load, measured FMA peaks),
# the command, a summary of every ratio, and each benchmark's full output. Output
# also goes to the terminal as it comes.
# Usage: tools/bench/report.sh [build-dir]
#   STRATA_BENCH_TRAIN_ROUNDS  rounds of compare-train.sh (default 2)
#   STRATA_BENCH_SKIP          space-separated sections to leave out: ops, train, adamw, gpu
#   STRATA_BENCH_FILTERS       benchmarks of the ops section (strata-bench filters; default all)
# Invariant: the report holds only what this run measured; nothing is copied in
# from elsewhere.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
report=$build/bench-report.md
skip=" ${STRATA_BENCH_SKIP:-} "
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

section() {  # $1: file name, $2..: the command; runs it, keeps its output
  local name=$1
  shift
  echo "+ $*" | tee "$work/$name.cmd"
  "$@" 2>&1 | tee "$work/$name.out"
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u '+%Y-%m-%d %H:%M UTC')
# shellcheck disable=SC2086  # the filters are words
[[ $skip == *" ops "* ]] || section ops "$build/tools/strata-bench" ${STRATA_BENCH_FILTERS:-}
[[ $skip == *" train "* ]] || section train tools/bench/compare-train.sh "$build" "${STRATA_BENCH_TRAIN_ROUNDS:-2}"
[[ $skip == *" adamw "* ]] || section adamw tools/bench/compare-adamw.sh "$build"
if [[ $skip != *" gpu "* ]] && nvidia-smi -L >/dev/null 2>&1; then
  section gpu "$build/tools/strata-bench" --device cuda:0 train
elif [[ $skip != *" gpu "* ]]; then
  echo "make bench: no CUDA device (nvidia-smi finds no GPU): GPU training benchmark skipped"
fi
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

result() { cat "$work"/*.out 2>/dev/null | awk -v k="$1" '$1 == "RESULT" && $2 == k {print $3; exit}'; }
{
  echo "# strata benchmark report"
  echo
  echo "- date: $started"
  echo "- machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1) (family $(lscpu | sed -n 's/^CPU family: *//p')," \
    "model $(lscpu | sed -n 's/^Model: *//p')), $(nproc) cores" \
    "($(lscpu | sed -n 's/^Thread(s) per core: *//p') thread(s) a core), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM," \
    "$(uname -sr)"
  echo "- load average (1, 5, 15 min) at start: $load_start; at end: $load_end" \
    "(other work on the cores makes every figure here noisy)"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "- command: \`make bench\` (tools/bench/report.sh $build)$([[ -n ${STRATA_BENCH_SKIP:-}${STRATA_BENCH_FILTERS:-} ]] &&
    echo " with STRATA_BENCH_SKIP='${STRATA_BENCH_SKIP:-}' STRATA_BENCH_FILTERS='${STRATA_BENCH_FILTERS:-}'")"
  if [[ -n $(result peak_f32_gflops) ]]; then
    echo "- measured FMA peak (strata-bench peak, this run): f32 $(result peak_f32_gflops) GFLOP/s," \
      "bf16 $(result peak_bf16_gflops) GFLOP/s; every CPU GFLOP/s and MFU below is against these"
  fi
  echo
  echo "## Summary: every ratio"
  echo
  echo "| what | ratio |"
  echo "| --- | --- |"
  cat "$work"/*.out 2>/dev/null | awk '
    $1 == "RESULT" && $2 ~ /^compare_/ {
      split($5, r, "="); name = substr($2, 9); sub(/_/, " ", name)
      printf "| %s training, strata / PyTorch tokens/s | %sx |\n", name, r[2] }
    $1 == "RESULT" && $2 ~ /_mfu$/ && !seen[$2]++ {
      name = substr($2, 7); sub(/_mfu$/, "", name); sub(/_/, " ", name)
      printf "| %s training MFU (of the FMA peak) | %.1f%% |\n", name, 100 * $3 }
    $1 == "RESULT" && $2 ~ /^matmul_/ {
      name = substr($2, 8); sub(/_f32_vs_openblas$/, "", name); gsub(/_/, " ", name)
      printf "| matmul %s f32, strata / OpenBLAS | %.2fx |\n", name, $3 }
    $1 == "RESULT" && $2 ~ /^io_/ {
      name = substr($2, 4); gsub(/_/, " ", name); sub(/ vs fio huge$/, ", strata / fio (huge pages)", name)
      sub(/ vs fio$/, ", strata / fio (4 KiB pages)", name)
      printf "| NVMe %s | %.2fx |\n", name, $3 }'
  for name in ops train adamw gpu; do
    [[ -f $work/$name.out ]] || continue
    echo
    echo "## $(sed 's/^+ //' "$work/$name.cmd")"
    echo
    echo '```'
    grep -v '^RESULT ' "$work/$name.out" | sed '/^$/N;/^\n$/D'
    echo '```'
  done
} >"$report"
echo
echo "report: $report"
