#!/usr/bin/env python3
"""PyTorch peer for strata's training benchmark: trains one of strata's benchmark
shapes (gpt-mini, gpt2-small, llama-60m) on the CPU and prints one JSON line with
its throughput.

The models are written the way a PyTorch user would write GPT-2 and LLaMA: plain
torch.nn, scaled_dot_product_attention(is_causal=True), the default AdamW. Keep them
the same models as strata's presets (shapes, init, optimizer settings) or the
comparison means nothing; a change to one side is a change to both.

One step = zero_grad, forward, cross-entropy loss, backward, optimizer.step. The
batch is one fixed random batch: throughput does not depend on the data, and on a
fixed batch loss_last < loss_first shows that the step really trains.

    tools/bench/peer/setup-venv.sh
    .venv-bench/bin/python tools/bench/peer/torch_gpt.py --mode bf16 --threads 2 --config gpt2-small
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# strata's presets (lib/model/config.cpp) at the benchmark's batch shape
# (tools/bench/bench_train.cpp).
CONFIGS = {
    "gpt-mini": dict(arch="gpt", layers=4, width=256, heads=4, seq_len=256, batch=8, vocab=256),
    "gpt2-small": dict(arch="gpt", layers=12, width=768, heads=12, seq_len=256, batch=4, vocab=50257),
    "llama-60m": dict(arch="llama", layers=8, width=512, heads=8, mlp=1376, seq_len=256, batch=4, vocab=32000),
}


class CausalSelfAttention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(width, 3 * width)  # fused qkv, with bias
        self.c_proj = nn.Linear(width, width)
        self.c_proj.residual_projection = True

    def forward(self, x):
        B, T, C = x.shape
        qkv = self.c_attn(x)                                         # (B, T, 3C)
        q, k, v = qkv.split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2)
                   for t in (q, k, v))                               # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)
        self.c_proj.residual_projection = True

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, layers, width, heads, seq_len, vocab, **_):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(seq_len, width)
        self.h = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one parameter, two uses
        # GPT-2 init: N(0, 0.02) everywhere, residual projections scaled down by
        # sqrt(2 * layers) because each layer adds two of them to the residual stream.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)) and m is not self.lm_head:
                std = 0.02
                if getattr(m, "residual_projection", False):
                    std = 0.02 / math.sqrt(2 * layers)
                nn.init.normal_(m.weight, mean=0.0, std=std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, idx):                                          # idx (B, T)
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)                            # (B, T, C)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))                            # (B, T, V)


class RMSNorm(nn.Module):
    def __init__(self, width, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x):
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight).type_as(x)


def rope(x, cos, sin):                                               # x (B, H, T, D)
    """Rotary embedding, "rotate half" pairing (element i with i + D/2), as strata's."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class LlamaBlock(nn.Module):
    def __init__(self, width, heads, mlp):
        super().__init__()
        self.heads = heads
        self.attn_norm = RMSNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.o = nn.Linear(width, width, bias=False)
        self.o.residual_projection = True
        self.mlp_norm = RMSNorm(width)
        self.gate_up = nn.Linear(width, 2 * mlp, bias=False)
        self.down = nn.Linear(mlp, width, bias=False)
        self.down.residual_projection = True

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(rope(q, cos, sin), rope(k, cos, sin), v, is_causal=True)
        x = x + self.o(y.transpose(1, 2).contiguous().view(B, T, C))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class Llama(nn.Module):
    def __init__(self, layers, width, heads, mlp, seq_len, vocab, theta=10000.0, **_):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.h = nn.ModuleList(LlamaBlock(width, heads, mlp) for _ in range(layers))
        self.norm = RMSNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)           # untied
        d = width // heads
        inv = theta ** (-torch.arange(0, d // 2, dtype=torch.float64) * 2 / d)
        angle = torch.arange(seq_len, dtype=torch.float64)[:, None] * inv[None, :]
        self.register_buffer("cos", angle.cos().float(), persistent=False)  # (T, D/2)
        self.register_buffer("sin", angle.sin().float(), persistent=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                std = 0.02 / math.sqrt(2 * layers) if getattr(m, "residual_projection", False) else 0.02
                nn.init.normal_(m.weight, mean=0.0, std=std)

    def forward(self, idx):                                          # idx (B, T)
        T = idx.shape[1]
        cos, sin = self.cos[:T], self.sin[:T]
        x = self.embed(idx)                                          # (B, T, C)
        for block in self.h:
            x = block(x, cos, sin)
        return self.lm_head(self.norm(x))                            # (B, T, V)


def make_optimizer(model, impl):
    # GPT-2 / llm.c convention: decay the matrices and embeddings, not biases and
    # LayerNorm parameters.
    params = list(model.parameters())  # the tied weight appears once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1},
              {"params": no_decay, "weight_decay": 0.0}]
    kwargs = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[impl]
    return torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, **kwargs)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("fp32", "bf16"), default="fp32",
                   help="fp32: eager f32; bf16: autocast(cpu, bfloat16) around forward+loss")
    p.add_argument("--config", choices=sorted(CONFIGS), default="gpt-mini",
                   help="model and batch shape (strata's preset of that name)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model; falls back to eager if that fails")
    p.add_argument("--adamw", choices=("default", "foreach", "fused"), default="default",
                   help="AdamW implementation (default: what torch picks on CPU)")
    p.add_argument("--seed", type=int, default=1337)
    return p.parse_args()


def first_step_compiled(model, step, idx, targets):
    """Runs the first step through torch.compile(model). Returns the module to use,
    its loss and an error string (None when compilation worked). A failure comes
    from the forward, before optimizer.step, so the parameters are still untouched."""
    try:
        compiled = torch.compile(model)
        return compiled, step(compiled, idx, targets), None
    except Exception as e:  # noqa: BLE001 -- any failure means "not on this machine"
        message = str(e).strip().splitlines()
        return model, None, f"{type(e).__name__}: {message[0] if message else ''}"


def main():
    args = parse_args()
    if args.steps < 1:
        sys.exit("torch_gpt: --steps must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = CONFIGS[args.config]
    B, T, V = cfg["batch"], cfg["seq_len"], cfg["vocab"]

    model = (Llama if cfg["arch"] == "llama" else GPT)(**cfg)
    optimizer = make_optimizer(model, args.adamw)
    tokens = torch.randint(0, V, (B, T + 1))
    idx, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()  # (B, T)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.mode == "bf16")

    def step(net, idx, targets):
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = net(idx)                                        # (B, T, V)
            loss = F.cross_entropy(logits.view(-1, V), targets.view(-1))
        loss.backward()
        optimizer.step()
        return loss.item()

    net, compile_error, losses, times = model, None, [], []
    if args.compile:  # compiling happens in the first step, an untimed warm-up step
        net, loss, compile_error = first_step_compiled(model, step, idx, targets)
        if loss is not None:
            losses.append(loss)
    for i in range(len(losses), args.warmup + args.steps):
        t0 = time.perf_counter()
        losses.append(step(net, idx, targets))
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)

    step_s = statistics.median(times)
    report = {
        "peer": "pytorch",
        "version": torch.__version__,
        "mode": args.mode,
        "threads": args.threads,
        "config": args.config,
        "batch": B,
        "seq_len": T,
        "params": sum(p.numel() for p in model.parameters()),
        "adamw": args.adamw,
        "compiled": args.compile and compile_error is None,
        "steps": args.steps,
        "warmup": args.warmup,
        "tokens_per_s": round(B * T / step_s, 1),
        "step_ms": round(step_s * 1e3, 2),
        "step_ms_min": round(min(times) * 1e3, 2),
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
    }
    if compile_error:
        report["compile_error"] = compile_error
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    sys.exit(main())
