#!/usr/bin/env bash
# tools/plot/plot.sh LOG.jsonl [OUT_DIR]: renders a strata run log (strata train
# --log, train_gpt --log) to PNGs with gnuplot: loss.png (training and validation
# loss), throughput.png (tokens/s and MFU), memory.png (bytes live per tier),
# time.png (step time split), stats.png (per-unit activation and gradient RMS).
# Needs gnuplot (Debian: apt-get install gnuplot-nox) and python3 (stdlib only, to
# flatten the JSON lines into columns). A dependency of this tool only.
# Invariant: reads the log, writes only OUT_DIR (default: the log's directory).
set -euo pipefail

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
  exit $([[ $# -lt 1 ]] && echo 2 || echo 0)
fi
log=$1
out=${2:-$(dirname "$log")}
command -v gnuplot > /dev/null || { echo "plot.sh: gnuplot is missing; apt-get install gnuplot-nox" >&2; exit 1; }
[[ -r "$log" ]] || { echo "plot.sh: cannot read $log" >&2; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Flatten: steps.tsv (one row per step), eval.tsv, units.tsv (step, unit, stats),
# names.txt (unit names of the last header).
python3 - "$log" "$tmp" <<'PY'
import json, sys
log, tmp = sys.argv[1], sys.argv[2]
cols = ["step", "loss", "tokens_per_second", "mfu", "device_bytes", "pinned_bytes", "host_bytes", "nvme_bytes",
        "step_seconds", "compute_seconds", "comm_seconds", "io_stall_seconds", "optimizer_seconds"]
names = []
with open(log) as f, open(tmp + "/steps.tsv", "w") as s, open(tmp + "/eval.tsv", "w") as e, \
     open(tmp + "/units.tsv", "w") as u:
    for line in f:
        line = line.strip()
        if not line:
            continue
        try:
            o = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash: the rest still plots
        t = o.get("type")
        if t == "header":
            names = o.get("units", [])
        elif t == "step":
            s.write("\t".join(str(o.get(c, 0)) for c in cols) + "\n")
            for x in o.get("units", []):
                u.write("%d\t%d\t%s\t%s\t%s\n" % (o["step"], x["unit"], x["act_rms"], x["act_max_abs"], x["grad_rms"]))
        elif t == "eval":
            e.write("%d\t%s\n" % (o["step"], o["val_loss"]))
with open(tmp + "/names.txt", "w") as n:
    n.write("\n".join(names) + "\n")
PY
[[ -s "$tmp/steps.tsv" ]] || { echo "plot.sh: $log has no step lines" >&2; exit 1; }

title=$(basename "$(dirname "$(readlink -f "$log")")")
nunits=$(wc -l < "$tmp/names.txt")
has_eval=$([[ -s "$tmp/eval.tsv" ]] && echo 1 || echo 0)
has_units=$([[ -s "$tmp/units.tsv" ]] && echo 1 || echo 0)

gnuplot <<GP
set terminal pngcairo size 1000,600 noenhanced font ",11"
set datafile separator "\t"
set grid
set key top right
set xlabel "step"

set output "$out/loss.png"
set title "$title: loss"
set ylabel "loss (nats)"
plot "$tmp/steps.tsv" using 1:2 with lines lc rgb "#bbbbdd" title "training loss", \
     "$tmp/steps.tsv" using 1:2 smooth bezier lw 2 lc rgb "#2040a0" title "training loss (smoothed)" \
     $( ((has_eval)) && echo ", \"$tmp/eval.tsv\" using 1:2 with linespoints pt 7 lw 2 lc rgb \"#c03020\" title \"validation loss\"")

set output "$out/throughput.png"
set title "$title: throughput"
set ylabel "tokens / s"
set y2label "MFU (%)"
set y2tics
set ytics nomirror
set yrange [0:*]
set y2range [0:*]
plot "$tmp/steps.tsv" using 1:3 with lines lc rgb "#208040" title "tokens/s", \
     "$tmp/steps.tsv" using 1:(\$4*100) axes x1y2 with lines lc rgb "#a06020" title "MFU (%)"
unset y2label
unset y2tics
set ytics mirror
set autoscale y

set output "$out/memory.png"
set title "$title: bytes live per tier"
set ylabel "GiB"
set yrange [0:*]
GiB = 1073741824.0
plot "$tmp/steps.tsv" using 1:(\$5/GiB) with lines lw 2 title "device", \
     "$tmp/steps.tsv" using 1:(\$6/GiB) with lines lw 2 title "pinned", \
     "$tmp/steps.tsv" using 1:(\$7/GiB) with lines lw 2 title "host", \
     "$tmp/steps.tsv" using 1:(\$8/GiB) with lines lw 2 title "NVMe"

set output "$out/time.png"
set title "$title: step time split"
set ylabel "seconds"
plot "$tmp/steps.tsv" using 1:9 with lines lw 2 title "step", \
     "$tmp/steps.tsv" using 1:10 with lines title "compute", \
     "$tmp/steps.tsv" using 1:11 with lines title "communication", \
     "$tmp/steps.tsv" using 1:12 with lines title "I/O stall", \
     "$tmp/steps.tsv" using 1:13 with lines title "optimizer"
set autoscale y

if ($has_units) {
  set output "$out/stats.png"
  set multiplot layout 1,2 title "$title: per-unit statistics"
  set logscale y
  set key bottom right font ",9"
  set title "activation RMS"
  set ylabel ""
  plot for [u=0:$nunits-1] "$tmp/units.tsv" every $nunits::u using 1:(\$3>0 ? \$3 : 1/0) with linespoints pt 7 ps 0.5 \
       title system(sprintf("sed -n %dp $tmp/names.txt", u+1))
  set title "gradient RMS"
  plot for [u=0:$nunits-1] "$tmp/units.tsv" every $nunits::u using 1:(\$5>0 ? \$5 : 1/0) with linespoints pt 7 ps 0.5 \
       title system(sprintf("sed -n %dp $tmp/names.txt", u+1))
  unset multiplot
}
GP
ls "$out"/{loss,throughput,memory,time}.png $( ((has_units)) && echo "$out/stats.png")
