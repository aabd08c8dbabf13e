#!/usr/bin/env python3
"""PyTorch counterpart of `bench_generate --issue`: a plain Qwen2-shaped decoder (qwen2.5-0.5b: 24 layers,
d_model 896, 14 heads / 2 KV heads, head dim 64, d_ff 4864, vocabulary 151,936, tied embedding), random
weights, bf16, a static KV cache, 128 sequences x 64 prompt tokens, 512 new tokens each, T = 1 sampling.
Prints new tokens/s over the whole generation (prefill included), the line bench_generate prints.
With --hf and transformers importable it also times HF generate on the same shape (random weights).

    python3 bench/torch_generate.py [--batch 128] [--prompt 64] [--new 512] [--hf]

Not run in this repository's CI (no GPU here); tooling only."""
import argparse
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    if __name__ == "__main__":
        print("torch_generate: torch not installed: skipped")
        sys.exit(0)
    raise

L, C, H, HKV, D, FF, V, THETA, EPS = 24, 896, 14, 2, 64, 4864, 151936, 1e6, 1e-6


def rms(x, w):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)).to(x.dtype) * w


def rope(x, pos):  # x [B, h, T, D], pos [B, T]
    inv = 1.0 / (THETA ** (torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D))
    ang = pos.float()[:, None, :, None] * inv  # [B, 1, T, D/2]
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    rot = torch.cat([-x2, x1], -1)
    return (x.float() * cos + rot.float() * sin).to(x.dtype)


class Model:
    def __init__(self, dev):
        g = lambda *s: (torch.randn(*s, device=dev) * 0.02).to(torch.bfloat16)
        self.wte = g(V, C)
        self.layers = [dict(n1=torch.ones(C, device=dev, dtype=torch.bfloat16), q=g(H * D, C), qb=g(H * D),
                            k=g(HKV * D, C), kb=g(HKV * D), v=g(HKV * D, C), vb=g(HKV * D), o=g(C, H * D),
                            n2=torch.ones(C, device=dev, dtype=torch.bfloat16), gate=g(FF, C), up=g(FF, C),
                            down=g(C, FF)) for _ in range(L)]
        self.nf = torch.ones(C, device=dev, dtype=torch.bfloat16)

    def forward(self, tok, pos, kcache, vcache, start, mask):
        """tok/pos [B, T]; caches [L, B, HKV, S, D] written at [start, start + T); mask [B, S] (True = attend)
        over the whole static cache, so every decode step has the same shapes (CUDA-graph friendly)."""
        B, T = tok.shape
        x = F.embedding(tok, self.wte)
        S = kcache.shape[3]
        causal = torch.arange(S, device=tok.device)[None, :] <= (start + torch.arange(T, device=tok.device))[:, None]
        am = mask[:, None, None, :] & causal[None, None]  # [B, 1, T, S]
        for i, p in enumerate(self.layers):
            h = rms(x, p["n1"])
            q = F.linear(h, p["q"], p["qb"]).view(B, T, H, D).transpose(1, 2)
            k = F.linear(h, p["k"], p["kb"]).view(B, T, HKV, D).transpose(1, 2)
            v = F.linear(h, p["v"], p["vb"]).view(B, T, HKV, D).transpose(1, 2)
            q, k = rope(q, pos), rope(k, pos)
            kcache[i, :, :, start:start + T] = k
            vcache[i, :, :, start:start + T] = v
            a = F.scaled_dot_product_attention(q, kcache[i], vcache[i], attn_mask=am, enable_gqa=True)
            x = x + F.linear(a.transpose(1, 2).reshape(B, T, H * D), p["o"])
            h = rms(x, p["n2"])
            x = x + F.linear(F.silu(F.linear(h, p["gate"])) * F.linear(h, p["up"]), p["down"])
        return F.linear(rms(x[:, -1], self.nf), self.wte)  # [B, V]


@torch.no_grad()
def generate(m, prompts, new):
    B, P = prompts.shape
    dev = prompts.device
    S = P + new
    kc = torch.zeros(L, B, HKV, S, D, device=dev, dtype=torch.bfloat16)
    vc = torch.zeros_like(kc)
    mask = torch.zeros(B, S, device=dev, dtype=torch.bool)
    mask[:, :P] = True
    pos = torch.arange(P, device=dev)[None].expand(B, P)
    logits = m.forward(prompts, pos, kc, vc, 0, mask)
    out = []
    for t in range(new):
        tok = torch.multinomial(torch.softmax(logits.float(), -1), 1)  # T = 1 sampling
        out.append(tok)
        if t + 1 == new:
            break
        mask[:, P + t] = True
        logits = m.forward(tok, torch.full((B, 1), P + t, device=dev), kc, vc, P + t, mask)
    return torch.cat(out, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=512)
    ap.add_argument("--hf", action="store_true", help="also time HF transformers generate (random weights)")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("torch_generate: no CUDA device: skipped")
        return
    dev = "cuda"
    torch.manual_seed(0)
    m = Model(dev)
    prompts = torch.randint(0, V, (a.batch, a.prompt), device=dev)
    generate(m, prompts[:, :8], 4)  # warm-up
    torch.cuda.synchronize()
    t0 = time.time()
    toks = generate(m, prompts, a.new)
    torch.cuda.synchronize()
    dt = time.time() - t0
    print(f"torch static-cache qwen2.5-0.5b bf16: {toks.numel()} new tokens in {dt:.3f} s: "
          f"{toks.numel() / dt:.1f} tokens/s")
    if a.hf:
        try:
            from transformers import Qwen2Config, Qwen2ForCausalLM
        except ImportError:
            print("transformers not importable: HF generate skipped")
            return
        cfg = Qwen2Config(vocab_size=V, hidden_size=C, intermediate_size=FF, num_hidden_layers=L,
                          num_attention_heads=H, num_key_value_heads=HKV, rope_theta=THETA, rms_norm_eps=EPS,
                          tie_word_embeddings=True, max_position_embeddings=32768)
        hf = Qwen2ForCausalLM(cfg).to(dev, torch.bfloat16).eval()
        torch.cuda.synchronize()
        t0 = time.time()
        out = hf.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True, temperature=1.0,
                          top_k=0, top_p=1.0, max_new_tokens=a.new, min_new_tokens=a.new)
        torch.cuda.synchronize()
        dt = time.time() - t0
        n = (out.shape[1] - a.prompt) * a.batch
        print(f"HF generate qwen2.5-0.5b bf16: {n} new tokens in {dt:.3f} s: {n / dt:.1f} tokens/s")


if __name__ == "__main__":
    main()
