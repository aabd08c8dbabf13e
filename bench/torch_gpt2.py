#!/usr/bin/env python3
"""The issue-6 training step in plain PyTorch, to compare with `cgrad train --model gpt2:d12` (bench/bench_train.c).

GPT-2 124M (llm.c's padded vocabulary 50304, 12 layers, 768 channels, 12 heads, tied embeddings), random init,
random tokens, B=64 T=1024, bf16 autocast, fused AdamW (lr 6e-4, weight decay 0.1 on matrices), grad clip 1,
F.scaled_dot_product_attention (causal), torch.compile. Prints per-step tokens/s, then the mean over the
steps after warm-up, MFU (llm.c's 6N + 6LCT FLOPs per token against 989.4 TFLOP/s, H100/H200 bf16 dense) and
the peak memory torch allocated. Without CUDA (or torch) it prints a skip line and exits 0.

    python3 bench/torch_gpt2.py [--steps 30] [--batch 64] [--seq 1024] [--no-compile]
"""
import argparse
import math
import sys
import time

PEAK = 989.4e12


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--no-compile", action="store_true")
    a = ap.parse_args()
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except ImportError:
        print("torch_gpt2: torch not installed: skipped")
        return 0
    if not torch.cuda.is_available():
        print("torch_gpt2: no CUDA device: skipped")
        return 0

    V, L, C, H, T = 50304, 12, 768, 12, a.seq

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

        def forward(self, x):
            B, T_, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T_, H, C // H).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T_, C))
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(1024, C)
            self.h = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(C)
            self.lm_head = nn.Linear(C, V, bias=False)
            self.lm_head.weight = self.wte.weight
            for n, p in self.named_parameters():
                if p.dim() == 2:
                    std = 0.02 / math.sqrt(2 * L) if n.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                    nn.init.normal_(p, 0.0, std)
                elif n.endswith("bias"):
                    nn.init.zeros_(p)

        def forward(self, idx, targets):
            pos = torch.arange(idx.shape[1], device=idx.device)
            x = self.wte(idx) + self.wpe(pos)
            for b in self.h:
                x = b(x)
            logits = self.lm_head(self.ln_f(x))
            return F.cross_entropy(logits.float().view(-1, V), targets.view(-1))

    torch.manual_seed(0)
    dev = "cuda"
    model = GPT().to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), fused=True)
    step_fn = model if a.no_compile else torch.compile(model)
    data = torch.randint(0, 50257, (a.steps, a.batch, T + 1), device=dev)
    flops_per_token = 6 * n_params + 6 * L * C * T  # llm.c's estimate; n_params counts the tied embedding once, wpe included
    torch.cuda.reset_peak_memory_stats()
    rates = []
    for s in range(a.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        x, y = data[s, :, :-1], data[s, :, 1:]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_fn(x, y)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        lv = loss.item()
        dt = time.perf_counter() - t0
        tps = a.batch * T / dt
        if s > 0:
            rates.append(tps)
        print(f"torch step {s + 1:4d}/{a.steps} | loss {lv:.6f} | norm {float(norm):.4f} | {tps:9.0f} tok/s | "
              f"{1e3 * dt:7.1f} ms | MFU {100 * flops_per_token * tps / PEAK:.1f}%")
    mean = sum(rates) / len(rates) if rates else tps
    print(f"torch done: {mean:.0f} tokens/s (steps 2..{a.steps}), MFU {100 * flops_per_token * mean / PEAK:.1f}% of "
          f"H100/H200 bf16 dense; peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated, "
          f"{torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
