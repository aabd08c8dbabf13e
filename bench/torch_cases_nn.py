"""PyTorch counterparts of bench/bench_cuda_nn.c (nn kernels): the same names, shapes and byte/flop counts,
bf16. Run through bench/torch_ref.py (the cudacore runner), which reads CASES: a list of dicts with name,
shape, setup (returns a zero-argument callable running the kernel once), bytes or flops, and optionally
quick=False."""
try:  # the runner lists cases without PyTorch; only setup() needs it
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None
    F = None


def _layernorm(n, c, backward):
    def setup():
        x = torch.randn(n, c, device="cuda", dtype=torch.bfloat16, requires_grad=backward)
        w = torch.ones(c, device="cuda", dtype=torch.bfloat16, requires_grad=backward)
        b = torch.zeros(c, device="cuda", dtype=torch.bfloat16, requires_grad=backward)
        if not backward:
            return lambda: F.layer_norm(x, (c,), w, b, 1e-5)
        g = torch.randn(n, c, device="cuda", dtype=torch.bfloat16)
        return lambda: F.layer_norm(x, (c,), w, b, 1e-5).backward(g)
    return setup


def _rmsnorm(n, c):
    def setup():
        x = torch.randn(n, c, device="cuda", dtype=torch.bfloat16)
        w = torch.ones(c, device="cuda", dtype=torch.bfloat16)
        return lambda: F.rms_norm(x, (c,), w, 1e-6)
    return setup


def _softmax(n, c):
    def setup():
        x = torch.randn(n, c, device="cuda", dtype=torch.bfloat16)
        return lambda: torch.softmax(x, dim=-1)
    return setup


def _cross_entropy(n, v):
    def setup():
        x = torch.randn(n, v, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        t = torch.randint(0, v, (n,), device="cuda")
        return lambda: F.cross_entropy(x, t).backward()
    return setup


def _token_logprobs(n, c, v, backward):
    """The straightforward PyTorch way: logits = h @ W^T in bf16 (N x V), log_softmax in f32, gather. Its memory
    is the point: it holds the N x V logits (bf16) and their f32 log-softmax; setup() runs the case once and
    prints the peak memory it allocated (to stderr, so the line format of torch_ref.py is kept)."""
    def setup():
        import sys
        h = torch.randn(n, c, device="cuda", dtype=torch.bfloat16, requires_grad=backward)
        w = (torch.randn(v, c, device="cuda", dtype=torch.bfloat16) * 0.02).requires_grad_(backward)
        t = torch.randint(0, v, (n,), device="cuda")
        g = torch.randn(n, device="cuda", dtype=torch.float32)

        def run():
            logits = h @ w.t()
            logp = torch.log_softmax(logits.float(), dim=-1).gather(1, t[:, None]).squeeze(1)
            if backward:
                logp.backward(g)
            return logp

        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        print(f"  torch token_logprobs {'fwd+bwd' if backward else 'fwd'} {n}x{c} V{v}: peak extra memory "
              f"{peak / 2**20:.1f} MiB (full fp32 logits alone: {n * v * 4 / 2**20:.1f} MiB)", file=sys.stderr)
        return run
    return setup


def _attention(b, h, t, d, backward):
    def setup():
        q, k, v = (torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16, requires_grad=backward)
                   for _ in range(3))
        if not backward:
            return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
        g = torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16)
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(g)
    return setup


def _attention_flops(b, h, t, d):
    return 4.0 * b * h * t * t * d / 2.0


NC = 65536 * 768 * 2  # bytes of one 65536 x 768 bf16 array

CASES = [
    {"name": "layernorm fwd", "shape": "65536x768 bf16", "setup": _layernorm(65536, 768, False), "bytes": 2 * NC},
    {"name": "layernorm fwd+bwd", "shape": "65536x768 bf16", "setup": _layernorm(65536, 768, True), "bytes": 5 * NC},
    {"name": "rmsnorm fwd", "shape": "65536x768 bf16", "setup": _rmsnorm(65536, 768), "bytes": 2 * NC},
    {"name": "softmax fwd", "shape": "98304x1024 bf16", "setup": _softmax(98304, 1024),
     "bytes": 2 * 98304 * 1024 * 2},
    {"name": "cross_entropy fwd+bwd", "shape": "8192x50304 bf16", "setup": _cross_entropy(8192, 50304),
     "bytes": 3 * 8192 * 50304 * 2},
    {"name": "token_logprobs fwd", "shape": "8192x896 V151936 bf16", "setup": _token_logprobs(8192, 896, 151936, False),
     "flops": 2.0 * 8192 * 896 * 151936},
    {"name": "token_logprobs fwd+bwd", "shape": "8192x896 V151936 bf16",
     "setup": _token_logprobs(8192, 896, 151936, True), "flops": 4 * 2.0 * 8192 * 896 * 151936},
    {"name": "attention fwd (causal)", "shape": "B8 H12 T1024 D64", "setup": _attention(8, 12, 1024, 64, False),
     "flops": _attention_flops(8, 12, 1024, 64)},
    {"name": "attention fwd+bwd (causal)", "shape": "B8 H12 T1024 D64", "setup": _attention(8, 12, 1024, 64, True),
     "flops": 3.5 * _attention_flops(8, 12, 1024, 64)},
    {"name": "attention fwd (causal)", "shape": "B4 H16 T4096 D128", "setup": _attention(4, 16, 4096, 128, False),
     "flops": _attention_flops(4, 16, 4096, 128), "quick": False},
    {"name": "attention fwd+bwd (causal)", "shape": "B4 H16 T4096 D128",
     "setup": _attention(4, 16, 4096, 128, True), "flops": 3.5 * _attention_flops(4, 16, 4096, 128), "quick": False},
]
