#!/usr/bin/env python3
"""PyTorch (CUDA) side of bench/gpu.cu: the same work, timed the same way (CUDA events, one warm-up call,
mean over the timed calls), so that the two programs' lines can be read side by side on one GPU.

  1. the elementwise chain tanh(a * b + c) * 0.5 + a on 1e8 floats, eager (one kernel per op) and, where
     torch.compile works, compiled (fused), beside a device-to-device copy;
  2. torch.mm at 1024^3, 4096^3 and 64x784x256 (TF32 off, as cublasSgemm's default);
  3. the MLP 784-256-10 training step (forward, cross-entropy, backward, Adam, zero_grad) at batch 1 / 64 / 512;
  4. causal attention (scaled_dot_product_attention; q, k, v [B, T, H * dh] split into heads), forward and
     forward + backward;
  5. with a data folder as the first argument: one epoch of the small CNN of examples/fashion_mnist --model cnn
     (bench/cnn_epoch_torch.cpp's model), batch 64, Adam 1e-3, and its test accuracy.

Debian's python3-torch is CPU-only: run this where a CUDA build of PyTorch is (the GPU machine's python3).
  python3 bench/gpu_torch.py [/usr/share/datasets/fashion-mnist]
"""
import gzip
import sys
import time

import numpy as np
import torch
import torch.nn as nn

dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def time_ms(f, iters):
    f()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(iters):
        f()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / iters


def chain():
    n = 100_000_000
    g = torch.Generator(device=dev).manual_seed(1)
    a, b, c = (torch.rand(n, device=dev, generator=g) * 2 - 1 for _ in range(3))
    f = lambda a, b, c: torch.tanh(a * b + c) * 0.5 + a
    eager = time_ms(lambda: f(a, b, c), 20)
    dst = torch.empty_like(a)
    copy = time_ms(lambda: dst.copy_(a), 20)
    gbs = lambda ms, k: k * n * 4 / ms / 1e6
    line = (f"torch chain, 1e8 floats: eager {eager:.3f} ms ({gbs(eager, 4):.0f} GB/s effective); copy {copy:.3f} ms "
            f"({gbs(copy, 2):.0f} GB/s); eager fraction {gbs(eager, 4) / gbs(copy, 2):.2f}")
    try:
        fc = torch.compile(f)
        fc(a, b, c)
        comp = time_ms(lambda: fc(a, b, c), 20)
        line += f"; torch.compile {comp:.3f} ms, fraction {gbs(comp, 4) / gbs(copy, 2):.2f}"
    except Exception as e:  # noqa: BLE001 - report and go on
        line += f"; torch.compile failed: {type(e).__name__}"
    print(line, flush=True)


def mm(m, k, n):
    g = torch.Generator(device=dev).manual_seed(2)
    a = torch.rand(m, k, device=dev, generator=g) * 2 - 1
    b = torch.rand(k, n, device=dev, generator=g) * 2 - 1
    c = torch.empty(m, n, device=dev)
    ms = time_ms(lambda: torch.mm(a, b, out=c), 20)
    print(f"torch.mm {m}x{k}x{n}: {ms:.3f} ms ({2.0 * m * k * n / ms / 1e9:.1f} TFLOP/s)", flush=True)


def mlp(batch):
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(batch, 784, device=dev)
    y = (torch.arange(batch, device=dev) % 10).long()
    loss_fn = nn.CrossEntropyLoss()

    def step():
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()

    ms = time_ms(step, 200)
    print(f"torch MLP 784-256-10 step (Adam), batch {batch}: {ms * 1e3:.1f} us", flush=True)


def attention(B, T, H, dh):
    g = torch.Generator(device=dev).manual_seed(5)
    q, k, v = (torch.randn(B, T, H * dh, device=dev, generator=g).requires_grad_() for _ in range(3))
    heads = lambda t: t.view(B, T, H, dh).transpose(1, 2)
    sdpa = lambda: torch.nn.functional.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True).transpose(
        1, 2).reshape(B, T, H * dh)
    iters = 5 if T >= 1024 else 20
    f = time_ms(sdpa, iters)  # (records the graph for a backward, as loom's forward keeps what its backward reads)
    fb = time_ms(lambda: sdpa().sum().backward(), iters)
    flop = 2.0 * 2.0 * B * H * dh * T * T / 2
    print(f"torch attention (causal, scaled_dot_product_attention) B {B}, T {T}, {H} heads of {dh}: forward {f:.3f} ms "
          f"({flop / f / 1e9:.2f} TFLOP/s), forward + backward {fb:.3f} ms ({3.5 * flop / fb / 1e9:.2f} TFLOP/s)", flush=True)


def idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def cnn_epoch(folder):
    def load(split):
        x = idx(f"{folder}/{split}-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
        y = idx(f"{folder}/{split}-labels-idx1-ubyte.gz", 8)
        x = (torch.from_numpy(x.copy()).float() / 255 - 0.2860) / 0.3530
        return x.to(dev), torch.from_numpy(y.copy()).long().to(dev)

    xtr, ytr = load("train")
    xte, yte = load("t10k")
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10)).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    n, batch = xtr.shape[0], 64
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    net.train()
    perm = torch.randperm(n, device=dev)
    for i in range(0, n - batch + 1, batch):
        idx_b = perm[i:i + batch]
        opt.zero_grad()
        loss = loss_fn(net(xtr[idx_b]), ytr[idx_b])
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    net.eval()
    with torch.no_grad():
        acc = sum((net(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item() for i in range(0, 10000, 1000)) / 100
    print(f"torch CNN epoch (batch 64, Adam, data already on the GPU): {secs:.2f} s, test accuracy {acc:.2f} %", flush=True)


if __name__ == "__main__":
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    chain()
    for s in (1024, 4096):
        mm(s, s, s)
    mm(64, 784, 256)
    for b in (1, 64, 512):
        mlp(b)
    attention(32, 128, 4, 32)
    attention(8, 256, 8, 64)
    attention(8, 1024, 8, 64)
    if len(sys.argv) > 1:
        cnn_epoch(sys.argv[1])
