#!/usr/bin/env python3
"""Checks strata's Hugging Face interop against the real client (transformers).

  tools/hf/setup.sh                                   # the venv, once
  tools/hf/.venv/bin/python tools/hf/check_hf.py --strata build/tools/strata

For GPT-2 and LLaMA layouts:
  strata -> HF: a tiny model trained by `strata train` is exported with
     `strata convert`, loaded with transformers' from_pretrained, and its logits and
     loss on the same windows compared with `strata eval --dump-logits`;
  HF -> strata: a tiny model built and saved by transformers (save_pretrained,
     safetensors) is evaluated by `strata eval` and by transformers; losses compared.
Never used by the tests; the figures go into reports. Exit status 1 on a mismatch.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import torch
import transformers
from safetensors.numpy import load_file

B, T, BATCHES = 2, 64, 4


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return out


def shard_tokens(path):
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(1024), dtype=np.int32)
        assert header[0] == 20240520, "not an llm.c shard"
        return np.frombuffer(f.read(), dtype=np.uint16)[: header[2]].astype(np.int64)


def windows(tokens):
    """strata's sequential BatchLoader: slot j starts at j*T and holds T+1 tokens."""
    rows = [tokens[j * T: j * T + T + 1] for j in range(B * BATCHES)]
    x = torch.tensor(np.stack(rows))
    return x[:, :-1], x[:, 1:]


def prepare_work(strata, work):
    """A fresh work directory with `strata prepare`'s shards: (train, val, val tokens)."""
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "data"))
    prefix = os.path.join(work, "data", "text")
    run([strata, "prepare", "--out", prefix])
    return prefix + "_train.bin", prefix + "_val.bin", shard_tokens(prefix + "_val.bin")


def hf_loss(model, inputs, targets):
    with torch.no_grad():
        logits = model(inputs).logits.double()
    logp = torch.log_softmax(logits, dim=-1)
    return float(-logp.gather(-1, targets.unsqueeze(-1)).mean()), logits


def strata_loss(strata, model_dir, data, extra=()):
    out = run([strata, "eval", "--model", model_dir, "--data", data, "--batch", str(B), "--seq", str(T),
               "--batches", str(BATCHES), *extra])
    return float(re.search(r"^loss ([0-9.eE+-]+)$", out, re.M).group(1))


def load_hf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                             attn_implementation="eager").eval()


def strata_to_hf(args, arch, data_train, data_val, tokens, failures):
    run_dir = os.path.join(args.work, f"strata_{arch}")
    shape = ["--preset", "demo", "--n-layers", "2", "--d-model", "64", "--n-heads", "4", "--d-mlp", "256",
             "--max-seq", "128"]
    if arch == "llama":
        shape = ["--preset", "llama-60m", "--n-layers", "2", "--d-model", "64", "--n-heads", "4", "--d-mlp", "172",
                 "--vocab-size", "256", "--max-seq", "128"]
    run([args.strata, "train", "--data", data_train, "--out", run_dir, "--steps", "30", "--batch", "8", "--seq", "64",
         "--lr", "3e-3", "--warmup", "5", *shape])
    hf_dir = os.path.join(args.work, f"hf_{arch}")
    run([args.strata, "convert", "--from", run_dir, "--to", hf_dir, "--format", arch, "--dtype", "f32"])
    logits_path = os.path.join(args.work, f"logits_{arch}.safetensors")
    loss_s = strata_loss(args.strata, run_dir, data_val, ["--dump-logits", logits_path])
    dumped = load_file(logits_path)
    model = load_hf(hf_dir)
    inputs, targets = windows(tokens)
    loss_h, logits_h = hf_loss(model, inputs, targets)
    first = torch.tensor(dumped["inputs"].astype(np.int64))
    assert torch.equal(first, inputs[:B]), "window layout differs from strata's loader"
    diff = (logits_h[:B] - torch.tensor(dumped["logits"]).double()).abs()
    scale = logits_h[:B].abs().max().item()
    print(f"strata -> HF {arch:5s}: logits max |diff| {diff.max().item():.3e} (max |logit| {scale:.2f}), "
          f"loss strata {loss_s:.6f} transformers {loss_h:.6f} (diff {abs(loss_s - loss_h):.2e})")
    if diff.max().item() > 1e-3 * max(1.0, scale) or abs(loss_s - loss_h) > 1e-4:
        failures.append(f"strata -> HF {arch}")


def hf_to_strata(args, arch, data_val, tokens, failures):
    torch.manual_seed(7)
    if arch == "gpt2":
        config = transformers.GPT2Config(vocab_size=256, n_positions=128, n_embd=64, n_layer=2, n_head=4,
                                         activation_function="gelu_new")
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                                          rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False)
        model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():  # make norms and biases non-trivial, weights larger than init
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.1 if p.dim() == 1 else 0.05))
    model.eval()
    hf_dir = os.path.join(args.work, f"from_hf_{arch}")
    model.save_pretrained(hf_dir, safe_serialization=True)
    inputs, targets = windows(tokens)
    loss_h, _ = hf_loss(load_hf(hf_dir), inputs, targets)
    loss_s = strata_loss(args.strata, hf_dir, data_val)
    print(f"HF -> strata {arch:5s}: loss transformers {loss_h:.6f} strata {loss_s:.6f} (diff {abs(loss_s - loss_h):.2e})")
    if abs(loss_s - loss_h) > 1e-4:
        failures.append(f"HF -> strata {arch}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strata", default="build/tools/strata")
    ap.add_argument("--work", default="/tmp/strata-hf-check")
    args = ap.parse_args()
    args.strata = os.path.abspath(args.strata)
    data_train, data_val, tokens = prepare_work(args.strata, args.work)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    failures = []
    for arch in ("gpt2", "llama"):
        strata_to_hf(args, arch, data_train, data_val, tokens, failures)
        hf_to_strata(args, arch, data_val, tokens, failures)
    print("all match" if not failures else "MISMATCH: " + ", ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
