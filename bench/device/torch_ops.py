"""The shapes of kpig_cuda_ops' timings through PyTorch on the same GPU, in the same device run:
the 4096³ bf16 GEMM, causal attention (T = 1024, H = 16, D = 128) eager and through SDPA, RMSNorm
and SwiGLU over 2048 rows. Prints one line per op: µs per call and GFLOP/s or GB/s.

usage: python3 bench/device/torch_ops.py
"""
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:  # the device machine has PyTorch; say so anywhere else
    print(f"no PyTorch here ({e}): nothing run")
    sys.exit(3)

if not torch.cuda.is_available():
    print("no CUDA device for PyTorch here: nothing run")
    sys.exit(3)

dev = torch.device("cuda")
torch.manual_seed(0)


def timed(name, amount, unit, fn, reps=20):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / reps
    print(f"  {name:<32} {ms * 1e3:9.1f} µs  {amount / (ms * 1e-3) / 1e9:8.1f} {unit}")


print(f"PyTorch {torch.__version__} on {torch.cuda.get_device_name(0)}:")
M = N = K = 4096
a = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
w = torch.randn(N, K, device=dev, dtype=torch.bfloat16)
timed("gemm bf16 4096³ (x·Wᵀ)", 2.0 * M * N * K, "GFLOP/s", lambda: a @ w.t())

T, H, D = 1024, 16, 128
q, k, v = (torch.randn(1, H, T, D, device=dev, dtype=torch.float32) for _ in range(3))
mask = torch.full((T, T), float("-inf"), device=dev).triu(1)


def eager():
    s = (q @ k.transpose(-1, -2)) * D**-0.5 + mask
    return torch.softmax(s, -1) @ v


flops = 2.0 * T * T * D * H
timed("attention eager fp32 T=1024", flops, "GFLOP/s", eager)
timed("attention SDPA fp32 T=1024", flops, "GFLOP/s", lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))

R, C, Fw = 2048, 4096, 11008
x = torch.randn(R, C, device=dev)
g = torch.randn(C, device=dev)
timed("rmsnorm C=4096 (eager)", 2.0 * R * C * 4, "GB/s", lambda: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * g)
ff = torch.randn(R, 2 * Fw, device=dev)
timed("swiglu F=11008 (eager)", 3.0 * R * Fw * 4, "GB/s", lambda: F.silu(ff[:, :Fw]) * ff[:, Fw:])
