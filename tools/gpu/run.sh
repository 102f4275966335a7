#!/usr/bin/env bash
# run.sh [REPORT]: the GPU kit's one command (copied into the kit by tools/gpu/make-kit.sh).
# On the GPU machine it writes one report (REPORT, else $OUT/gpu-report.txt, else
# ./gpu-report.txt beside this script) in about 8 minutes at most:
#   1 nvidia-smi   2 where cuBLAS(Lt) / NCCL come from, ldd: every library resolved
#   3 strata-selftest, one op family per process (a sticky CUDA fault stays in its
#     family), one line per check as it runs; a failing family again with
#     STRATA_CUDA_SYNC=1, so the failing kernel is named
#   4 strata-bench --device cuda:0 kernels   5 strata-bench --device cuda:0 train
#   6 the selftest's GPU-vs-CPU training runs
#   7 on any failure: compute-sanitizer --tool memcheck over the failing families
# Every stage runs under `timeout`, sized from what is left of the budget. Without a
# GPU each stage says so and the script still finishes (exit 2).
# Invariant: the report is complete whatever fails; exit 0 all passed, 1 a failure, 2 no GPU.
set -uo pipefail
KIT=$(cd "$(dirname "$0")" && pwd)
REPORT=${1:-${OUT:+$OUT/gpu-report.txt}}
REPORT=${REPORT:-$KIT/gpu-report.txt}
BUDGET=${STRATA_KIT_BUDGET:-470}  # seconds, for all stages
START=$SECONDS
mkdir -p "$(dirname "$REPORT")"
: >"$REPORT"
status=0

say() { echo "$*" | tee -a "$REPORT"; }
left() { echo $((BUDGET - (SECONDS - START))); }
# stage LIMIT TITLE CMD...: runs CMD under timeout min(LIMIT, time left), output to
# the report as it comes; sets rc.
stage() {
  local limit=$1 title=$2
  shift 2
  local t
  t=$(left)
  ((t > limit)) && t=$limit
  say ""
  say "== $title  [$(date -u +%T), timeout ${t}s, $(left)s of the budget left]"
  say "\$ $*"
  if ((t < 5)); then
    say "skipped: the time budget is spent"
    rc=124
    return
  fi
  timeout --kill-after=10 "$t" "$@" 2>&1 | tee -a "$REPORT"
  rc=${PIPESTATUS[0]}
  ((rc == 124 || rc == 137)) && say "TIMEOUT after ${t}s"
  say "-- exit $rc"
}

say "strata GPU kit report, $(date -u +%FT%TZ), host $(hostname)"
[ -f "$KIT/MANIFEST" ] && head -4 "$KIT/MANIFEST" | tee -a "$REPORT"

# 1. the GPU
gpu=1
if command -v nvidia-smi >/dev/null; then
  stage 20 "nvidia-smi" nvidia-smi
  ((rc == 0)) || gpu=0
  stage 10 "nvidia-smi (clocks, memory)" nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv
else
  say ""
  say "== nvidia-smi: not found"
  gpu=0
fi
((gpu)) || say "NO GPU: nvidia-smi finds no usable GPU here; the GPU stages below report 'no CUDA device'"

# 2. libraries: the kit's, then the CUDA toolkit's, then PyTorch's nvidia-* wheels
dirs=("$KIT/lib")
for d in ${CUDA_HOME:+$CUDA_HOME/lib64} /usr/local/cuda/lib64 /usr/local/cuda-13*/targets/x86_64-linux/lib /usr/local/cuda/lib; do
  [ -d "$d" ] && dirs+=("$d")
done
for py in python3 python; do
  command -v $py >/dev/null || continue
  site=$(timeout 20 $py -c 'import nvidia, os; print(" ".join(os.path.abspath(p) for p in nvidia.__path__))' 2>/dev/null) || continue
  for s in $site; do
    for d in "$s"/*/lib "$s"/cu13/lib; do [ -d "$d" ] && dirs+=("$d"); done
  done
  break
done
declare -A listed=()
path=""
for d in "${dirs[@]}"; do
  d=$(readlink -f "$d")
  [[ -n ${listed[$d]:-} ]] && continue
  listed[$d]=1
  path=${path:+$path:}$d
done
LD_LIBRARY_PATH=$path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
say ""
say "== libraries: LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
missing=0
for b in "$KIT"/bin/*; do
  out=$(ldd "$b" 2>&1)
  echo "$out" | grep -Eq 'not found|version .* not found' && {
    # the machine's C++ runtime is missing or older than the build's: the kit's fallback
    if echo "$out" | grep -Eq 'lib(stdc\+\+|gcc_s)'; then
      LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$KIT/lib/fallback
      export LD_LIBRARY_PATH
      say "using the kit's libstdc++ / libgcc_s (lib/fallback)"
      out=$(ldd "$b" 2>&1)
    fi
  }
  say "$(basename "$b"):"
  echo "$out" | sed 's/^/  /' | tee -a "$REPORT" >/dev/null
  if echo "$out" | grep -Eq 'not found'; then
    say "  UNRESOLVED: $(echo "$out" | grep 'not found' | tr -s ' \t' ' ' | tr '\n' ';')"
    missing=1
  fi
done
if ((missing)); then
  say "LDD FAIL: a library is missing (see above); the binaries cannot start"
  status=1
else
  say "ldd: every library resolved"
fi

SELFTEST=$KIT/bin/strata-selftest
BENCH=$KIT/bin/strata-bench
failed_families=()

# 3. the op checks, one family per process
if ((!missing)); then
  stage 20 "selftest: op families" "$SELFTEST" --list
  families=$( "$SELFTEST" --list 2>/dev/null)
  for f in $families; do
    stage 45 "selftest --only $f" "$SELFTEST" --only "$f"
    if ((rc == 2)); then
      say "no CUDA device: the remaining selftest families are skipped"
      gpu=0
      break
    fi
    if ((rc != 0)); then
      failed_families+=("$f")
      status=1
      stage 45 "selftest --only $f again, synchronized after each kernel (names the failing kernel)" \
        env STRATA_CUDA_SYNC=1 "$SELFTEST" --only "$f"
    fi
  done
fi

# 4-6. benchmarks and the training comparison
if ((!missing)); then
  if ((gpu)); then
    stage 100 "kernel benchmark" "$BENCH" --device cuda:0 kernels
    ((rc == 0)) || status=1
    stage 150 "training benchmark (gpt2-small, gpt2-medium; device, host offload, optimizer on host at 4 micro-batches; tokens/s, MFU, overlap)" "$BENCH" --device cuda:0 train
    ((rc == 0)) || status=1
    stage 90 "selftest: GPU-vs-CPU training runs" "$SELFTEST" --train-only
    ((rc == 0)) || { status=1; failed_families+=(train); }
  else
    stage 20 "kernel benchmark (no GPU: the work per kernel, not timed)" "$BENCH" kernels
    stage 20 "kernel benchmark on cuda:0 (expected: no CUDA device)" "$BENCH" --device cuda:0 kernels
  fi
fi

# 7. memcheck over what failed
if ((gpu && ${#failed_families[@]})); then
  if command -v compute-sanitizer >/dev/null; then
    for f in "${failed_families[@]}"; do
      if [ "$f" = train ]; then args=(--train-only); else args=(--only "$f"); fi
      stage $(($(left) - 5)) "compute-sanitizer memcheck: selftest ${args[*]}" \
        compute-sanitizer --tool memcheck --print-limit 20 "$SELFTEST" "${args[@]}"
    done
  else
    say "compute-sanitizer not found: memcheck skipped"
  fi
fi

((gpu)) || status=2
say ""
say "== done in $((SECONDS - START))s: $( ((status == 0)) && echo PASS || { ((status == 2)) && echo 'NO GPU'; } || echo FAIL)${failed_families[*]:+ (failed: ${failed_families[*]})}"
say "report: $REPORT"
exit $status
