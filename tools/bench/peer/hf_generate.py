#!/usr/bin/env python3
"""transformers peer for strata's generation benchmark (`strata bench generate`): greedy
decoding with transformers' generate() and its KV cache on the same model, gpt-mini
(GPT-2 layout: 4 layers, width 256, 4 heads, vocabulary 256, tied head, tanh GELU,
max_seq 1088, random weights), batch 1, CPU; one JSON line per precision and context.

The measure is strata's: seconds per token decoded after a prompt of `context` tokens,
the prefill excluded, best of --runs. transformers' generate() does the prefill inside,
so a run times generate(max_new_tokens=1 + steps) and generate(max_new_tokens=1) on the
same prompt and takes the difference over `steps` tokens. eos is off: every run
generates all its tokens.

    .venv-bench/bin/python tools/bench/peer/hf_generate.py --threads 2
"""
import argparse
import json
import sys
import time

import torch
import transformers


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--contexts", default="16,1024", help="prompt lengths, comma-separated")
    p.add_argument("--steps", type=int, default=32, help="decoded tokens timed per context (strata's kSteps)")
    p.add_argument("--runs", type=int, default=3, help="best of this many runs")
    p.add_argument("--precisions", default="fp32,bf16", help="fp32 and/or bf16 (weights and activations)")
    return p.parse_args()


def gpt_mini(dtype):
    """strata's gpt-mini preset with max_seq 1088 (tools/bench/bench_generate.cpp)."""
    config = transformers.GPT2Config(vocab_size=256, n_positions=1088, n_embd=256, n_layer=4, n_head=4,
                                     activation_function="gelu_new", tie_word_embeddings=True,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config).to(dtype).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def generate_seconds(model, prompt, new_tokens):
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model.generate(prompt, max_new_tokens=new_tokens, do_sample=False)
        seconds = time.perf_counter() - t0
    assert out.shape[1] == prompt.shape[1] + new_tokens, "generate stopped early"
    return seconds


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    for name in args.precisions.split(","):
        if name not in dtypes:
            sys.exit(f"hf_generate: unknown precision '{name}' (fp32 or bf16)")
        model = gpt_mini(dtypes[name])
        for context in (int(c) for c in args.contexts.split(",")):
            prompt = torch.randint(0, 256, (1, context))
            generate_seconds(model, prompt, 2)  # warm-up: first-call allocations and dispatch
            best = float("inf")
            for _ in range(args.runs):
                full = generate_seconds(model, prompt, 1 + args.steps)
                prefill = generate_seconds(model, prompt, 1)
                best = min(best, (full - prefill) / args.steps)
            print(json.dumps({"peer": "transformers", "version": transformers.__version__,
                              "torch": torch.__version__, "bench": "generate", "precision": name,
                              "threads": args.threads, "context": context, "steps": args.steps,
                              "seconds_per_token": best, "tokens_per_s": round(1.0 / best, 1)}), flush=True)


if __name__ == "__main__":
    main()
