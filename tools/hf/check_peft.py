#!/usr/bin/env python3
"""Checks that strata's LoRA adapter files are what PEFT reads (the real client).

  tools/hf/setup.sh                                   # the venv, once
  tools/hf/.venv/bin/python tools/hf/check_peft.py --strata build/tools/strata \\
      --finetune build/examples/finetune_lora

A small random GPT-2 is built and saved by transformers (save_pretrained); strata
fine-tunes LoRA adapters on it (examples/finetune_lora, which imports the HF
directory) so every B is non-zero, and saves them in PEFT's format. Then
peft.PeftModel.from_pretrained(base, adapters) and `strata eval --lora` compute the
logits of the same windows; their max |diff| must be within f32 rounding, and the
adapters must move the logits away from the base's (else the check proves nothing).
Done for the default q/v targets and for all linear layers. Never used by the tests;
the figures go into reports. Exit status 1 on a mismatch.
"""
import argparse
import os
import sys

import numpy as np
import peft
import torch
import transformers
from safetensors.numpy import load_file

from check_hf import B, BATCHES, T, hf_loss, load_hf, prepare_work, run, windows


def make_base(path):
    torch.manual_seed(11)
    config = transformers.GPT2Config(vocab_size=256, n_positions=128, n_embd=64, n_layer=2, n_head=4,
                                     activation_function="gelu_new")
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():  # norms and biases non-trivial, weights larger than init
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.1 if p.dim() == 1 else 0.05))
    model.save_pretrained(path, safe_serialization=True)


def check(args, targets, base_dir, data_train, data_val, tokens, failures):
    adapters = os.path.join(args.work, f"adapters_{targets}")
    run([args.finetune, "--model", base_dir, "--data", data_train, "--val", data_val, "--out", adapters,
         "--precision", "fp32", "--targets", targets, "--rank", "4", "--alpha", "16", "--steps", "30",
         "--batch", "8", "--seq", "64", "--lr", "1e-2", "--warmup", "3", "--eval-batches", "4",
         "--sample-len", "0"])
    saved = load_file(os.path.join(adapters, "adapter_model.safetensors"))
    b_max = max(float(np.abs(v).max()) for k, v in saved.items() if "lora_B" in k)

    logits_path = os.path.join(args.work, f"logits_{targets}.safetensors")
    run([args.strata, "eval", "--model", base_dir, "--lora", adapters, "--data", data_val, "--batch", str(B),
         "--seq", str(T), "--batches", str(BATCHES), "--dump-logits", logits_path])
    dumped = load_file(logits_path)
    inputs, targets_t = windows(tokens)
    assert torch.equal(torch.tensor(dumped["inputs"].astype(np.int64)), inputs[:B]), "window layout differs"

    base = load_hf(base_dir)
    _, base_logits = hf_loss(base, inputs, targets_t)
    model = peft.PeftModel.from_pretrained(base, adapters).eval()
    _, peft_logits = hf_loss(model, inputs, targets_t)
    strata_logits = torch.tensor(dumped["logits"]).double()
    diff = (peft_logits[:B] - strata_logits).abs().max().item()
    moved = (peft_logits[:B] - base_logits[:B]).abs().max().item()
    scale = peft_logits[:B].abs().max().item()
    ok = diff <= 1e-4 * max(1.0, scale) and moved > 1e3 * max(diff, 1e-6) and b_max > 0
    print(f"{targets:4s}: {len(saved)} adapter tensors, max |B| {b_max:.3e}; logits max |PEFT - strata| {diff:.3e} "
          f"(max |logit| {scale:.2f}; the adapters move them by up to {moved:.3e}) {'PASS' if ok else 'FAIL'}")
    if not ok:
        failures.append(targets)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strata", default="build/tools/strata")
    ap.add_argument("--finetune", default="build/examples/finetune_lora")
    ap.add_argument("--work", default="/tmp/strata-peft-check")
    args = ap.parse_args()
    args.strata, args.finetune = os.path.abspath(args.strata), os.path.abspath(args.finetune)
    data_train, data_val, tokens = prepare_work(args.strata, args.work)
    base_dir = os.path.join(args.work, "hf_gpt2")
    make_base(base_dir)
    print(f"peft {peft.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")
    failures = []
    for targets in ("qv", "all"):
        check(args, targets, base_dir, data_train, data_val, tokens, failures)
    print("PASS" if not failures else "FAIL: " + ", ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
