"""PyTorch counterparts of bench/bench_cuda.c (core ops): the same names, shapes and byte/flop counts."""
try:  # the runner lists cases without PyTorch; only setup() needs it
    import torch
except ImportError:
    torch = None

N_COPY = 256 << 20


def _copy():
    src = torch.ones(N_COPY, device="cuda", dtype=torch.float32)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def _cast():
    src = torch.ones(N_COPY, device="cuda", dtype=torch.float32)
    dst = torch.empty(N_COPY, device="cuda", dtype=torch.bfloat16)
    return lambda: dst.copy_(src)


def _broadcast_add(dtype_name):
    def setup():
        dtype = getattr(torch, dtype_name)
        x = torch.ones(65536, 768, device="cuda", dtype=dtype)
        b = torch.ones(768, device="cuda", dtype=dtype)
        out = torch.empty_like(x)
        return lambda: torch.add(x, b, out=out)
    return setup


def _sum(dim):
    def setup():
        x = torch.ones(65536, 768, device="cuda", dtype=torch.float32)
        return lambda: x.sum(dim=dim)
    return setup


def _matmul(m, n, k):
    def setup():
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16) * 0.1
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.1
        out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        return lambda: torch.matmul(x, w.t(), out=out)
    return setup


def _adamw():
    n = 124_000_000
    p = torch.zeros(n, device="cuda", dtype=torch.float32, requires_grad=True)
    p.grad = torch.full_like(p, 1e-3)
    opt = torch.optim.AdamW([p], lr=1e-4, weight_decay=0.1, fused=True)
    return lambda: opt.step()


CASES = [
    dict(name="copy f32 (d2d)", shape=str(N_COPY), setup=_copy, bytes=2 * 4 * N_COPY),
    dict(name="cast f32->bf16", shape=str(N_COPY), setup=_cast, bytes=6 * N_COPY),
    dict(name="broadcast_add f32", shape="65536x768 + 768", setup=_broadcast_add("float32"), bytes=2 * 4 * 65536 * 768),
    dict(name="broadcast_add bf16", shape="65536x768 + 768", setup=_broadcast_add("bfloat16"), bytes=2 * 2 * 65536 * 768),
    dict(name="sum rows f32", shape="65536x768 -> 65536", setup=_sum(1), bytes=4 * 65536 * 768),
    dict(name="sum cols f32 (dbias)", shape="65536x768 -> 768", setup=_sum(0), bytes=4 * 65536 * 768),
    dict(name="matmul bf16 square", shape="4096x4096x4096", setup=_matmul(4096, 4096, 4096), flops=2 * 4096 ** 3),
    dict(name="matmul bf16 qkv", shape="65536x2304x768", setup=_matmul(65536, 2304, 768), flops=2 * 65536 * 2304 * 768),
    dict(name="matmul bf16 lm_head", shape="65536x50304x768", setup=_matmul(65536, 50304, 768),
         flops=2 * 65536 * 50304 * 768, quick=False),
    # AdamW: read p, g, m, v and write p, m, v (f32): 7 x 4 bytes per parameter
    dict(name="adamw f32 fused", shape="124M params", setup=_adamw, bytes=7 * 4 * 124_000_000),
]
