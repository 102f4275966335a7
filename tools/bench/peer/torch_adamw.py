#!/usr/bin/env python3
"""PyTorch peer for strata's optimizer/offload benchmark: times torch.optim.AdamW
on CPU f32 parameters and prints one JSON line per size and implementation variant,
then one line per size naming the fastest variant.

Sizes run one at a time: each size's tensors are freed before the next. Each variant
gets its own parameters, gradients and optimizer state (so nothing is shared or
already warm in cache), is stepped --warmup times untimed (the first step allocates
m and v), then --steps times timed. params_per_s = parameter count / median step
time; params_per_s_best = parameter count / fastest step (strata-bench adamw's
measure: best of k after a warm-up). The gradients stay fixed: AdamW's cost does not
depend on them.

    .venv-bench/bin/python tools/bench/peer/torch_adamw.py --params 64M,256M --threads 2
"""
import argparse
import gc
import json
import statistics
import sys
import time

import torch

VARIANTS = {
    "foreach": {"foreach": True},
    "fused": {"fused": True},
    "forloop": {"foreach": False},  # single-tensor path, torch's CPU default
}


def parse_count(text):
    """'64M' -> 64 * 2**20; also K and G, or a plain integer."""
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    if text and text[-1] in scale:
        return int(float(text[:-1]) * scale[text[-1]])
    return int(text)


def count_list(text):
    """'64M,256M' -> [64 * 2**20, 256 * 2**20]."""
    return [parse_count(t) for t in text.split(",")]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--params", type=count_list,
                   default=[parse_count("64M")],
                   help="parameter counts, comma-separated, e.g. 64M,256M,1G or 1000000 "
                        "(K/M/G are powers of 2); run one at a time")
    p.add_argument("--tensors", type=int, default=1,
                   help="split the parameters into this many equal tensors")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--variants", default="foreach,fused",
                   help=f"comma-separated, from: {', '.join(VARIANTS)}")
    return p.parse_args()


def make_params(count, tensors):
    sizes = [count // tensors] * tensors
    sizes[-1] += count - sum(sizes)
    params = []
    for n in sizes:
        p = torch.nn.Parameter(torch.randn(n) * 0.02)
        p.grad = torch.randn(n) * 1e-3
        params.append(p)
    return params


def time_variant(name, count, args):
    """Step times in seconds, or an error string."""
    params = make_params(count, args.tensors)
    try:
        optimizer = torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.95), eps=1e-8,
                                      weight_decay=0.1, **VARIANTS[name])
        for _ in range(args.warmup):
            optimizer.step()
    except (RuntimeError, ValueError) as e:  # e.g. fused not supported on this build
        return None, str(e).strip().splitlines()[0]
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    return times, None


def report_variant(name, count, args):
    times, error = time_variant(name, count, args)
    gc.collect()  # this variant's tensors go before the next variant allocates its own
    report = {
        "peer": "pytorch",
        "version": torch.__version__,
        "bench": "adamw",
        "variant": name,
        "threads": args.threads,
        "params": count,
        "tensors": args.tensors,
    }
    if error:
        report["error"] = error
    else:
        step_s = statistics.median(times)
        report.update({
            "steps": args.steps,
            "params_per_s": round(count / step_s),
            "params_per_s_best": round(count / min(times)),
            "step_ms": round(step_s * 1e3, 2),
            "step_ms_min": round(min(times) * 1e3, 2),
        })
    print(json.dumps(report), flush=True)
    return report


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    variants = args.variants.split(",")
    for name in variants:
        if name not in VARIANTS:
            sys.exit(f"torch_adamw: unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    for count in args.params:
        reports = [report_variant(name, count, args) for name in variants]
        timed = [r for r in reports if "error" not in r]
        fastest = max(timed, key=lambda r: r["params_per_s_best"]) if timed else None
        print(json.dumps({
            "peer": "pytorch",
            "version": torch.__version__,
            "bench": "adamw",
            "variant": "fastest",
            "params": count,
            "fastest_variant": fastest["variant"] if fastest else None,
            "params_per_s_best": fastest["params_per_s_best"] if fastest else None,
            "params_per_s": fastest["params_per_s"] if fastest else None,
        }), flush=True)


if __name__ == "__main__":
    main()
