#!/usr/bin/env python3
"""PyTorch counterpart of bench/bench_rl_step.c (issue 7): one GRPO step for the qwen2.5-0.5b shape (24 layers,
d_model 896, 14 heads / 2 KV heads, head dim 64, d_ff 4864, vocabulary 151,936, tied embedding) with random
weights in bf16, LoRA r = 32 (alpha 64) written by hand (two matrices per module) on q,k,v,o,gate,up,down,
16 prompts x 8 samples, 64 prompt + 512 new tokens, T = 1 sampling with no stop token.

    python3 bench/torch_rl_step.py [--prompts 16] [--group 8] [--prompt-len 64] [--new 512] [--micro 16]
                                   [--full] [--hf] [--warmup 1] [--steps 2] [--device cuda|cpu] [--tiny]

The same step as bench_rl_step, measured the same way:
  rollout  static-KV-cache generation (adapters unmerged, bf16, the whole cache read with a mask so every decode
           step has the same shapes), then the reward (fraction of even token ids in the response):
           rollout tokens/s = new tokens / rollout seconds;
  update   old-policy and reference log-probs under no_grad (the reference: adapters off, or a frozen bf16
           copy with --full), group-normalised advantages (unbiased std, eps 1e-4), the GRPO loss (PPO clip
           0.2, k3 KL beta 0.04, per-sequence token mean then the mean over sequences) with backward in
           micro-batches of --micro sequences (gradient accumulation) and one AdamW step (lr 1e-5, no weight
           decay): update tokens/s = (prompt + response tokens) / update seconds, old and reference
           log-probs included; the gradient pass alone is printed too.
Trainable parameters are fp32 (LoRA A/B, or the whole model with --full) under bf16 autocast, as cgrad keeps
fp32 masters with bf16 working copies. --hf also times Hugging Face generate (random weights, no LoRA) on the
same shape when transformers is importable. --device cpu --tiny is a small shape for a quick check (f32).

Prints "torch not installed: skipped" without torch and "no CUDA device: skipped" without a GPU (unless
--device cpu). Not run in this repository's CI; tooling only."""
import argparse
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

QWEN05 = dict(L=24, C=896, H=14, HKV=2, D=64, FF=4864, V=151936, theta=1e6, eps=1e-6, bias=True)
TINY = dict(L=2, C=64, H=4, HKV=2, D=16, FF=176, V=64, theta=1e4, eps=1e-6, bias=False)
TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


class Model:
    """A Qwen2-shaped decoder; weights in `dtype`, trainable ones fp32 (see the module docstring)."""

    def __init__(self, cfg, dev, dtype, full, rank, alpha):
        self.cfg, self.dev, self.dtype = cfg, dev, dtype
        L, C, H, HKV, D, FF, V = (cfg[k] for k in ("L", "C", "H", "HKV", "D", "FF", "V"))
        base_dtype = torch.float32 if full else dtype
        g = lambda *s: (torch.randn(*s, device=dev) * 0.02).to(base_dtype).requires_grad_(full)
        ones = lambda n: torch.ones(n, device=dev, dtype=base_dtype).requires_grad_(full)
        self.wte = g(V, C)
        shapes = dict(q=(H * D, C), k=(HKV * D, C), v=(HKV * D, C), o=(C, H * D), gate=(FF, C), up=(FF, C), down=(C, FF))
        self.layers = []
        for _ in range(L):
            p = {name: g(*shape) for name, shape in shapes.items()}
            p.update(n1=ones(C), n2=ones(C))
            for b, n in (("qb", H * D), ("kb", HKV * D), ("vb", HKV * D)):
                p[b] = g(n) if cfg["bias"] else None
            self.layers.append(p)
        self.nf = ones(C)
        self.lora, self.lora_on, self.scale = {}, False, alpha / rank
        if not full:  # A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's kaiming-uniform), B = 0
            for i, p in enumerate(self.layers):
                for t in TARGETS:
                    out_f, in_f = p[t].shape
                    a = ((torch.rand(rank, in_f, device=dev) * 2 - 1) / in_f ** 0.5).requires_grad_(True)
                    self.lora[(i, t)] = (a, torch.zeros(out_f, rank, device=dev, requires_grad=True))
            self.lora_on = True

    def params(self):
        if self.lora:
            return [t for ab in self.lora.values() for t in ab]
        ps = [self.wte, self.nf]
        for p in self.layers:
            ps += [t for t in p.values() if t is not None]
        return ps

    def frozen_copy(self):
        """The reference policy of full fine-tuning: the current weights, frozen, in the compute dtype."""
        ref = Model.__new__(Model)
        ref.cfg, ref.dev, ref.dtype, ref.lora, ref.lora_on, ref.scale = self.cfg, self.dev, self.dtype, {}, False, 1.0
        cp = lambda t: None if t is None else t.detach().to(self.dtype).clone()
        ref.wte, ref.nf = cp(self.wte), cp(self.nf)
        ref.layers = [{k: cp(v) for k, v in p.items()} for p in self.layers]
        return ref

    def lin(self, x, i, name, bias=None):
        p = self.layers[i]
        y = F.linear(x, p[name], bias)
        if self.lora_on:
            a, b = self.lora[(i, name)]
            y = y + self.scale * F.linear(F.linear(x, a), b)
        return y

    def rms(self, x, w):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.cfg["eps"])).to(x.dtype) * w.to(x.dtype)

    def rope(self, x, pos):  # x [B, h, T, D], pos [B, T]
        D = self.cfg["D"]
        inv = 1.0 / (self.cfg["theta"] ** (torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D))
        ang = pos.float()[:, None, :, None] * inv
        cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
        rot = torch.cat([-x[..., D // 2:], x[..., : D // 2]], -1)
        return (x.float() * cos + rot.float() * sin).to(x.dtype)

    def attend(self, q, k, v, mask):  # GQA by repeating the KV heads (works on any torch 2.x)
        rep = self.cfg["H"] // self.cfg["HKV"]
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)

    def hidden(self, tok, pos, cache=None, start=0, kmask=None):
        """Final-norm hidden states [B, T, C]. Without a cache: causal attention over tok (training and
        log-probs). With cache = (k, v) [L, B, HKV, S, D]: writes the keys at [start, start + T) and attends
        over the whole cache with kmask [B, S] (True = attend) combined with causality."""
        c = self.cfg
        B, T = tok.shape
        H, HKV, D = c["H"], c["HKV"], c["D"]
        x = F.embedding(tok, self.wte).to(self.dtype)
        am = None
        if cache is not None:
            S = cache[0].shape[3]
            causal = torch.arange(S, device=tok.device)[None, :] <= (start + torch.arange(T, device=tok.device))[:, None]
            am = kmask[:, None, None, :] & causal[None, None]
        for i, p in enumerate(self.layers):
            h = self.rms(x, p["n1"])
            q = self.lin(h, i, "q", p["qb"]).view(B, T, H, D).transpose(1, 2)
            k = self.lin(h, i, "k", p["kb"]).view(B, T, HKV, D).transpose(1, 2)
            v = self.lin(h, i, "v", p["vb"]).view(B, T, HKV, D).transpose(1, 2)
            q, k = self.rope(q, pos), self.rope(k, pos)
            if cache is not None:
                cache[0][i, :, :, start:start + T] = k
                cache[1][i, :, :, start:start + T] = v
                k, v = cache[0][i], cache[1][i]
            a = self.attend(q, k, v, am)
            x = x + self.lin(a.transpose(1, 2).reshape(B, T, H * D), i, "o")
            h = self.rms(x, p["n2"])
            x = x + self.lin(F.silu(self.lin(h, i, "gate")) * self.lin(h, i, "up"), i, "down")
        return self.rms(x, self.nf)

    def logits(self, h):
        return F.linear(h, self.wte.to(h.dtype))


def autocast(dev, dtype):
    return torch.autocast(device_type=dev.split(":")[0], dtype=dtype, enabled=dtype == torch.bfloat16)


def generate(m, prompts, new, gen):
    """T = 1 sampling with a static KV cache, no stop token: [B, new] token ids."""
    with torch.no_grad():
        return _generate(m, prompts, new, gen)


def _generate(m, prompts, new, gen):
    c = m.cfg
    B, P = prompts.shape
    dev = prompts.device
    S = P + new
    kc = torch.zeros(c["L"], B, c["HKV"], S, c["D"], device=dev, dtype=m.dtype)
    vc = torch.zeros_like(kc)
    kmask = torch.zeros(B, S, device=dev, dtype=torch.bool)
    kmask[:, :P] = True
    pos = torch.arange(P, device=dev)[None].expand(B, P)
    with autocast(str(dev), m.dtype):
        logits = m.logits(m.hidden(prompts, pos, (kc, vc), 0, kmask)[:, -1])
        out = []
        for t in range(new):
            tok = torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=gen)
            out.append(tok)
            if t + 1 == new:
                break
            kmask[:, P + t] = True
            h = m.hidden(tok, torch.full((B, 1), P + t, device=dev), (kc, vc), P + t, kmask)
            logits = m.logits(h[:, -1])
    return torch.cat(out, 1)


def response_logprobs(m, seqs, P):
    """log pi(token) of the response tokens of seqs [n, P + N]: [n, N] f32 (graph kept when grad is on)."""
    n, total = seqs.shape
    pos = torch.arange(total - 1, device=seqs.device)[None].expand(n, total - 1)
    with autocast(str(seqs.device), m.dtype):
        h = m.hidden(seqs[:, :-1], pos)[:, P - 1:]  # the positions that predict the response tokens
        logits = m.logits(h).float()
    return logits.log_softmax(-1).gather(-1, seqs[:, P:, None]).squeeze(-1)


def all_logprobs(m, seqs, P, micro):
    with torch.no_grad():
        return torch.cat([response_logprobs(m, seqs[b:b + micro], P) for b in range(0, seqs.shape[0], micro)])


def grpo_step(a, policy, ref, opt, prompts, gen):
    """One step; returns (rollout s, old+ref s, grad s, mean reward, loss, kl)."""
    dev = prompts.device
    G, P, N = a.group, a.prompt_len, a.new
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    t0 = time.time()
    rows = prompts.repeat_interleave(G, 0)  # the G samples of a prompt are contiguous
    resp = generate(policy, rows, N, gen)
    rewards = (resp % 2 == 0).float().mean(1)  # fraction of even token ids
    sync()
    t1 = time.time()
    seqs = torch.cat([rows, resp], 1)
    n = seqs.shape[0]
    old = all_logprobs(policy, seqs, P, a.micro)
    if ref is None:  # LoRA: the reference is the policy with its adapters off
        policy.lora_on = False
        refl = all_logprobs(policy, seqs, P, a.micro)
        policy.lora_on = True
    else:
        refl = all_logprobs(ref, seqs, P, a.micro)
    r = rewards.view(-1, G)
    adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1)
    sync()
    t2 = time.time()
    total_loss, kl_sum = 0.0, 0.0
    for b in range(0, n, a.micro):
        sl = slice(b, b + a.micro)
        logp = response_logprobs(policy, seqs[sl], P)
        ratio = torch.exp(logp - old[sl])
        A = adv[sl, None]
        pg = -torch.minimum(ratio * A, ratio.clamp(1 - 0.2, 1 + 0.2) * A)
        d = refl[sl] - logp
        k3 = torch.exp(d) - d - 1
        per_seq = (pg + 0.04 * k3).mean(1)  # no stop token: every response has N real tokens
        loss = per_seq.sum() / n  # the mean over all n sequences, accumulated over micro-batches
        loss.backward()
        total_loss += loss.item()
        kl_sum += k3.detach().mean(1).sum().item()
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync()
    t3 = time.time()
    return t1 - t0, t2 - t1, t3 - t2, rewards.mean().item(), total_loss, kl_sum / n


def hf_generate(a, cfg, dev):
    try:
        from transformers import Qwen2Config, Qwen2ForCausalLM
    except ImportError:
        print("transformers not importable: HF generate skipped")
        return
    hc = Qwen2Config(vocab_size=cfg["V"], hidden_size=cfg["C"], intermediate_size=cfg["FF"],
                     num_hidden_layers=cfg["L"], num_attention_heads=cfg["H"], num_key_value_heads=cfg["HKV"],
                     rope_theta=cfg["theta"], rms_norm_eps=cfg["eps"], tie_word_embeddings=True,
                     max_position_embeddings=32768)
    hf = Qwen2ForCausalLM(hc).to(dev, torch.bfloat16).eval()
    prompts = torch.randint(0, cfg["V"], (a.prompts * a.group, a.prompt_len), device=dev)
    kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=a.new, min_new_tokens=a.new)
    hf.generate(prompts[:, :8], attention_mask=torch.ones_like(prompts[:, :8]), **dict(kw, max_new_tokens=4,
                min_new_tokens=4))  # warm-up
    torch.cuda.synchronize()
    t0 = time.time()
    out = hf.generate(prompts, attention_mask=torch.ones_like(prompts), **kw)
    torch.cuda.synchronize()
    dt = time.time() - t0
    k = (out.shape[1] - a.prompt_len) * out.shape[0]
    print(f"HF generate (no LoRA): {k} new tokens in {dt:.3f} s: {k / dt:.1f} tokens/s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new", type=int, default=512)
    ap.add_argument("--micro", type=int, default=16, help="sequences per backward (gradient accumulation)")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--alpha", type=float, default=64.0)
    ap.add_argument("--full", action="store_true", help="full fine-tune instead of LoRA")
    ap.add_argument("--hf", action="store_true", help="also time HF transformers generate")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer shape for a quick check")
    a = ap.parse_args()
    if torch is None:
        print("torch_rl_step: torch not installed: skipped")
        return 0
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("torch_rl_step: no CUDA device: skipped")
        return 0
    if min(a.prompts, a.group, a.prompt_len, a.new, a.micro, a.rank, a.steps) <= 0 or a.warmup < 0:
        print("torch_rl_step: sizes must be positive", file=sys.stderr)
        return 2
    dev = torch.device(a.device)
    cfg = TINY if a.tiny else QWEN05
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    torch.manual_seed(1)
    policy = Model(cfg, dev, dtype, a.full, a.rank, a.alpha)
    ref = policy.frozen_copy() if a.full else None
    params = policy.params()
    fused = dict(fused=True) if dev.type == "cuda" else {}
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, **fused)
    prompts = torch.randint(0, cfg["V"], (a.prompts, a.prompt_len), device=dev)
    gen = torch.Generator(device=dev).manual_seed(1)
    n = a.prompts * a.group
    print(f"torch_rl_step: {'qwen2.5-0.5b' if not a.tiny else 'tiny'} shape on {dev}, "
          f"{'bf16' if dtype == torch.bfloat16 else 'f32'} compute, "
          f"{'full fine-tune' if a.full else f'LoRA r={a.rank} alpha {a.alpha:g} on ' + ','.join(TARGETS)} "
          f"({sum(p.numel() for p in params) / 1e6:.2f}M trainable), GRPO, {a.prompts} prompts x {a.group} samples, "
          f"{a.prompt_len} prompt + {a.new} new tokens, T=1, micro-batch {min(a.micro, n)} sequences, torch "
          f"{torch.__version__}")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tot = [0.0, 0.0, 0.0]
    for step in range(a.warmup + a.steps):
        ro, oref, gr, rew, loss, kl = grpo_step(a, policy, ref, opt, prompts, gen)
        measured = step >= a.warmup
        print(f"step {step}{'' if measured else ' (warm-up)'}: rollout {ro:.3f} s, old+ref log-probs {oref:.3f} s, "
              f"loss+backward+step {gr:.3f} s, reward {rew:.4f}, loss {loss:.5f}, kl {kl:.2e}", flush=True)
        if measured:
            tot = [tot[0] + ro, tot[1] + oref, tot[2] + gr]
    roll, upd, grad = tot[0] / a.steps, (tot[1] + tot[2]) / a.steps, tot[2] / a.steps
    new_tok, all_tok = n * a.new, n * (a.prompt_len + a.new)
    print(f"rollout: {new_tok} new tokens in {roll:.3f} s: {new_tok / roll:.1f} tokens/s (mean of {a.steps} steps)")
    print(f"update: {all_tok} tokens (prompt + response) in {upd:.3f} s: {all_tok / upd:.1f} tokens/s, old + "
          f"reference log-probs included (without them: {all_tok / grad:.1f} tokens/s; response tokens only: "
          f"{new_tok / upd:.1f} tokens/s)")
    if dev.type == "cuda":
        print(f"peak memory (torch allocator): {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated, "
              f"{torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved")
        if a.hf:
            hf_generate(a, cfg, dev)
    return 0


if __name__ == "__main__":
    sys.exit(main())
