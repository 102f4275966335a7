#!/usr/bin/env python3
"""transformers peer for strata's generation benchmark (`strata bench generate`): greedy
decoding with transformers' generate() and its KV cache on the same model, batch 1, CPU;
one JSON line per precision and context. --model gpt-mini (GPT-2 layout: 4 layers,
width 256, 4 heads, vocabulary 256, tied head, tanh GELU, max_seq 1088, random weights)
or gpt2-small (12 layers, width 768, 12 heads, vocabulary 50,257, max_seq 1088).

The measure is strata's: seconds per token decoded after a prompt of `context` tokens,
the prefill excluded, best of --runs. transformers' generate() does the prefill inside,
so a run generates 1 + steps tokens with a logits processor that stamps the clock each
time it is called (once per generated token, after that token's forward): the time from
the first stamp (the prefill's token) to the last, over `steps`, is the decode alone.
(Subtracting a prefill-only run instead lets the prefill's noise swamp the decode at
context 1024.) eos is off: every run generates all its tokens.

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
    p.add_argument("--model", default="gpt-mini", choices=("gpt-mini", "gpt2-small"),
                   help="strata's preset of that name, max_seq 1088")
    p.add_argument("--precisions", default="fp32,bf16", help="fp32 and/or bf16 (weights and activations)")
    return p.parse_args()


SHAPES = {"gpt-mini": dict(vocab_size=256, n_embd=256, n_layer=4, n_head=4),
          "gpt2-small": dict(vocab_size=50257, n_embd=768, n_layer=12, n_head=12)}


def gpt_model(name, dtype):
    """strata's preset `name` with max_seq 1088 (tools/bench/bench_generate.cpp)."""
    config = transformers.GPT2Config(**SHAPES[name], n_positions=1088, activation_function="gelu_new",
                                     tie_word_embeddings=True, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config).to(dtype).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


class ClockStamps(transformers.LogitsProcessor):
    """Leaves the logits alone; records when each generated token's logits were ready."""

    def __init__(self):
        self.stamps = []

    def __call__(self, input_ids, scores):
        self.stamps.append(time.perf_counter())
        return scores


def decode_seconds_per_token(model, prompt, steps):
    stamps = ClockStamps()
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=1 + steps, do_sample=False,
                             logits_processor=transformers.LogitsProcessorList([stamps]))
    assert out.shape[1] == prompt.shape[1] + 1 + steps, "generate stopped early"
    assert len(stamps.stamps) == 1 + steps, "the logits processor ran once per generated token"
    return (stamps.stamps[-1] - stamps.stamps[0]) / steps


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    for name in args.precisions.split(","):
        if name not in dtypes:
            sys.exit(f"hf_generate: unknown precision '{name}' (fp32 or bf16)")
        model = gpt_model(args.model, dtypes[name])
        for context in (int(c) for c in args.contexts.split(",")):
            prompt = torch.randint(0, model.config.vocab_size, (1, context))
            decode_seconds_per_token(model, prompt, 2)  # warm-up: first-call allocations and dispatch
            best = min(decode_seconds_per_token(model, prompt, args.steps) for _ in range(args.runs))
            print(json.dumps({"peer": "transformers", "version": transformers.__version__,
                              "torch": torch.__version__, "bench": "generate", "model": args.model, "precision": name,
                              "threads": args.threads, "context": context, "steps": args.steps,
                              "seconds_per_token": best, "tokens_per_s": round(1.0 / best, 1)}), flush=True)


if __name__ == "__main__":
    main()
