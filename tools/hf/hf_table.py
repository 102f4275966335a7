#!/usr/bin/env python3
"""strata against transformers on the shapes of current open models: one table, one row
per model (Llama-3.2-1B, Qwen2-0.5B, Mistral-7B, SmolLM-135M).

  tools/hf/setup.sh                                   # the venv, once
  tools/hf/.venv/bin/python tools/hf/hf_table.py --strata build/tools/strata \\
      --finetune build/examples/finetune_lora

What the models are: the Hugging Face hub is not reachable from the development machine,
so each model is built by transformers from its published config.json (the dicts below,
transcribed from the hub; the larger ones cut to a few layers, said in the table) with
random weights, saved by save_pretrained (sharded safetensors where the published
checkpoint is sharded), with a tokenizer fixture of tests/data/tokenizers beside it in
the model's style. They are the real shapes, not the real weights.

Per model, every strata step is the CLI (or examples/finetune_lora):
  import   `strata eval --dump-logits` on the HF directory: logits max |diff| against
           transformers (eager attention, f32) on the same window (target <= 1e-4);
  generate `strata sample --temperature 0 --tokens 32` against transformers'
           generate(do_sample=False): the 32 new ids identical;
  export   `strata convert --format hf --dtype f32` (sharded when the source is), loaded
           by transformers' from_pretrained: logits max |diff| against the source model;
  LoRA     finetune_lora --offload nvme (the frozen base paged from NVMe) a few steps, all
           linear layers; PEFT loads the adapter on the transformers model: logits max
           |diff| against `strata eval --lora` (and how far the adapter moves them).
Never used by the tests; the figures go into docs/hf.md. Exit status 1 on a mismatch.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import peft
import torch
import transformers
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "tests", "data", "tokenizers")
T = 32          # window length compared
PROMPT = 8      # prompt tokens for generation
NEW = 32        # greedy tokens generated
LORA_STEPS = 4

# Published config.json of each model (architecture keys only), the layers kept here, the
# published layer count, the tokenizer fixture in its style, and the shards of the
# published safetensors checkpoint (1: a single model.safetensors).
MODELS = {
    "Llama-3.2-1B": dict(layers=2, tokenizer="llama3.json", shards=1, config=dict(
        model_type="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
        rms_norm_eps=1e-5, rope_theta=500000.0, attention_bias=False, mlp_bias=False, hidden_act="silu",
        rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192),
        tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001)),
    "Qwen2-0.5B": dict(layers=4, tokenizer="qwen2.json", shards=1, config=dict(
        model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=131072, rms_norm_eps=1e-6,
        rope_theta=1000000.0, sliding_window=131072, use_sliding_window=False, max_window_layers=24,
        hidden_act="silu", tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151643)),
    "Mistral-7B-v0.3": dict(layers=2, tokenizer="spm.model", shards=3, config=dict(
        model_type="mistral", vocab_size=32768, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768, rms_norm_eps=1e-5,
        rope_theta=1000000.0, sliding_window=None, hidden_act="silu", tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2)),
    "SmolLM-135M": dict(layers=30, tokenizer="gpt2.json", shards=1, config=dict(
        model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, rms_norm_eps=1e-5,
        rope_theta=10000.0, attention_bias=False, mlp_bias=False, hidden_act="silu", tie_word_embeddings=True,
        bos_token_id=0, eos_token_id=0)),
}


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))}\n{r.stderr.strip()}")
    return r.stdout


def shard_tokens(path):
    """llm.c shard: 1024-byte header (magic, version, count), then uint16 or uint32 tokens."""
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(1024), dtype=np.int32)
        width = {20240520: np.uint16, 20240801: np.uint32}[int(header[0])]
        return np.frombuffer(f.read(), dtype=width)[: header[2]].astype(np.int64)


def build(name, spec, out):
    """The random-weight model in the published shape, saved by transformers."""
    torch.manual_seed(sum(map(ord, name)))
    cfg = dict(spec["config"], num_hidden_layers=spec["layers"])
    config = transformers.AutoConfig.for_model(**cfg)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # norms and biases non-trivial, weights larger than init: logits well apart
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.1 if p.dim() == 1 else 0.05))
    size = sum(p.numel() * 4 for p in model.parameters())
    shard = f"{size // (spec['shards'] * 2**20) + 1}MB" if spec["shards"] > 1 else "1000GB"
    model.save_pretrained(out, max_shard_size=shard)
    tok = spec["tokenizer"]
    shutil.copy(os.path.join(FIXTURES, tok), os.path.join(out, "tokenizer.model" if tok.endswith(".model") else "tokenizer.json"))
    return sum(p.numel() for p in model.parameters())


def load_hf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                             attn_implementation="eager").eval()


def logits_of(model, inputs):
    with torch.no_grad():
        return model(inputs).logits.double()


def strata_logits(args, model_dir, data_val, path, extra=()):
    run([args.strata, "eval", "--model", model_dir, "--data", data_val, "--batch", 1, "--seq", T, "--batches", 1,
         "--dump-logits", path, *extra])
    dumped = load_file(path)
    return torch.tensor(dumped["inputs"].astype(np.int64)), torch.tensor(dumped["logits"]).double()


def greedy(args, model, model_dir, prompt):
    out = run([args.strata, "sample", "--model", model_dir, "--prompt-ids", ",".join(map(str, prompt)),
               "--tokens", NEW, "--temperature", 0])
    ours = [int(x) for x in out.strip().splitlines()[-1].split(",")]
    model.generation_config.eos_token_id = None  # 32 tokens on both sides, whatever they are
    model.generation_config.pad_token_id = 0
    with torch.no_grad():
        theirs = model.generate(torch.tensor([prompt]), max_new_tokens=NEW, do_sample=False)[0, len(prompt):].tolist()
    same = sum(a == b for a, b in zip(ours, theirs)) if len(ours) == len(theirs) else 0
    first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
    return ours == theirs, same, first


def pinned_mib(base):
    """finetune_lora's pinned staging pool: two of the largest unit (f32), the embedding or a block."""
    c = base.config
    block = sum(p.numel() for p in base.model.layers[0].parameters())
    return 2 * max(c.vocab_size * c.hidden_size, block) * 4 // 2**20 + 16


def lora(args, work, model_dir, base, data_train, data_val, inputs):
    adapters, nvme = os.path.join(work, "adapters"), os.path.join(work, "nvme")
    os.makedirs(nvme)
    out = run([args.finetune, "--model", model_dir, "--data", data_train, "--val", data_val, "--out", adapters,
               "--precision", "fp32", "--targets", "all", "--rank", 4, "--alpha", 16, "--steps", LORA_STEPS,
               "--batch", 1, "--seq", T, "--lr", "1e-2", "--warmup", 0, "--eval-batches", 1, "--sample-len", 0,
               "--lora-dropout", 0, "--offload", "nvme", "--nvme-path", nvme, "--pinned", pinned_mib(base)])
    tiers = re.search(r"nvme ([0-9.]+) MiB.*host RSS ([0-9.]+) MiB", out)
    _, ours = strata_logits(args, model_dir, data_val, os.path.join(work, "lora_logits.safetensors"),
                            ["--lora", adapters])
    base_logits = logits_of(base, inputs)
    adapted = peft.PeftModel.from_pretrained(base, adapters).eval()
    theirs = logits_of(adapted, inputs)
    return (theirs - ours).abs().max().item(), (theirs - base_logits).abs().max().item(), \
        (float(tiers.group(1)), float(tiers.group(2))) if tiers else (0.0, 0.0)


def check(args, name, spec, root):
    work = os.path.join(root, name)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    hf_dir, exp_dir = os.path.join(work, "hf"), os.path.join(work, "export")
    t0 = time.time()
    params = build(name, spec, hf_dir)
    shards = len([f for f in os.listdir(hf_dir) if f.endswith(".safetensors")])
    # Tokens by the model's tokenizer fixture (ids below 1000, valid in every vocabulary).
    prefix = os.path.join(work, "data")
    run([args.strata, "prepare", "--tokenizer", os.path.join(hf_dir, os.path.basename(
        "tokenizer.model" if spec["tokenizer"].endswith(".model") else "tokenizer.json")), "--out", prefix])
    data_train, data_val = prefix + "_train.bin", prefix + "_val.bin"
    tokens = shard_tokens(data_val)

    inputs, ours = strata_logits(args, hf_dir, data_val, os.path.join(work, "logits.safetensors"))
    assert torch.equal(inputs[0], torch.tensor(tokens[:T])), "window layout differs from strata's loader"
    model = load_hf(hf_dir)
    theirs = logits_of(model, inputs)
    import_diff = (theirs - ours).abs().max().item()
    scale = theirs.abs().max().item()

    same, matched, first = greedy(args, model, hf_dir, tokens[100:100 + PROMPT].tolist())

    convert = [args.strata, "convert", "--from", hf_dir, "--to", exp_dir, "--format", "hf", "--dtype", "f32"]
    if shards > 1:
        convert += ["--max-shard-size", os.path.getsize(os.path.join(hf_dir, sorted(
            f for f in os.listdir(hf_dir) if f.endswith(".safetensors"))[0])) // 2**20 + 1]
    run(convert)
    exp_shards = len([f for f in os.listdir(exp_dir) if f.endswith(".safetensors")])
    exp_tok = [f for f in ("tokenizer.json", "tokenizer.model") if os.path.exists(os.path.join(exp_dir, f))]
    exported = load_hf(exp_dir)  # the same architecture back (a windowless Mistral is not a Llama)
    same_arch = type(exported).__name__ == type(model).__name__
    export_diff = (logits_of(exported, inputs) - theirs).abs().max().item()
    del exported
    shutil.rmtree(exp_dir)

    lora_diff, moved, (nvme_mib, rss_mib) = lora(args, work, hf_dir, model, data_train, data_val, inputs)
    ok = {"import": import_diff <= 1e-4, "generate": same, "export": export_diff <= 1e-4 and bool(exp_tok) and same_arch,
          "lora": lora_diff <= 1e-4 and moved > 1e2 * max(lora_diff, 1e-7) and nvme_mib > 0}
    row = (f"| {name} | {spec['layers']} of {spec['config']['num_hidden_layers']} | {params / 1e6:.0f}M | {shards} | "
           f"{import_diff:.2e} (max \\|logit\\| {scale:.1f}) | "
           f"{'yes' if same else f'no: {matched}/{NEW}, first differs at {first}'} | "
           f"{export_diff:.2e} ({type(model).__name__ if same_arch else 'architecture changed'}; "
           f"{exp_shards} file{'s' if exp_shards > 1 else ''} + {', '.join(exp_tok) or 'no tokenizer'}) | "
           f"{lora_diff:.2e} (moved {moved:.2f}; base {nvme_mib:.0f} MiB on NVMe, RSS {rss_mib:.0f} MiB) | "
           f"{'PASS' if all(ok.values()) else 'FAIL: ' + ', '.join(k for k, v in ok.items() if not v)} | "
           f"{time.time() - t0:.0f} s |")
    print(row, flush=True)
    if not args.keep:
        shutil.rmtree(work)
    return all(ok.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strata", default="build/tools/strata")
    ap.add_argument("--finetune", default="build/examples/finetune_lora")
    ap.add_argument("--work", default="/tmp/strata-hf-table", help="scratch directory (each model's removed after it)")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from: {', '.join(MODELS)}")
    ap.add_argument("--keep", action="store_true", help="keep each model's directory under --work")
    args = ap.parse_args()
    names = args.models.split(",")
    for n in names:
        if n not in MODELS:
            sys.exit(f"hf_table: unknown model '{n}'; known: {', '.join(MODELS)}")
    args.strata, args.finetune = os.path.abspath(args.strata), os.path.abspath(args.finetune)
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"transformers {transformers.__version__}, peft {peft.__version__}, torch {torch.__version__}; "
          f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores")
    print("Random weights in the published shapes (built by transformers from each config.json; the hub is not "
          "reachable here), tokenizers from tests/data/tokenizers. f32 on both sides.")
    print(f"Logits: one window of {T} tokens; generation: {PROMPT}-token prompt, {NEW} greedy tokens; "
          f"LoRA: all linear layers, rank 4, {LORA_STEPS} steps, base paged from NVMe.")
    print("| model | layers | params | shards | import: logits max \\|diff\\| | greedy 32 identical | "
          "export -> transformers: max \\|diff\\| | LoRA -> PEFT: max \\|diff\\| | result | time |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    failed = []
    for n in names:
        try:
            if not check(args, n, MODELS[n], args.work):
                failed.append(n)
        except Exception as e:  # noqa: BLE001 -- one model's failure is that row's result
            print(f"| {n} | | | | FAILED: {str(e).strip().splitlines()[-1][:300]} | | | | FAIL | |", flush=True)
            failed.append(n)
    print("all match" if not failed else "MISMATCH: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
