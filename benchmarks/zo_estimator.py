"""Zero-order estimator step vs its physical limit and vs a naive, reference-style estimator.

Measured side by side in one process, on one device, for conv4 / resnet10 / resnet18 APIs:

* bare:  one batched inference forward of the same B * (q + 1) images (the physical limit)
* ours:  ZOForward.estimate (noise on the device, base point in the same call, chunk from a memory budget)
* naive: the reference's way: directions drawn on the CPU per chunk and copied, a fixed number of
         chunks, the base point in a separate pass, autograd-enabled forwards

Prints ratios ours/bare and naive/ours. Usage:

    python benchmarks/zo_estimator.py [--device cpu|cuda] [--batch 30] [--q 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from dfml_bench.apis import APIInfo, QueryLedger, make_api
from dfml_plugins.estimators.zeroth_order import ZOForward
from dfml_plugins.models.conv4 import build_conv4
from dfml_plugins.models.resnet import build_resnet10, build_resnet18
from dfml_plugins.params import Conv4Params, ResNetParams, ZOParams


def naive_estimate(module, x, targets, q, mu, chunks=10):
    """The reference's structure: CPU noise per chunk, fixed chunk count, separate base pass."""
    b = x.shape[0]
    d = x[0].numel()
    base = F.cross_entropy(module(x), targets, reduction="none")  # separate base-point pass
    grads = torch.zeros_like(x)
    per_chunk = max(1, q // chunks)
    for start in range(0, q, per_chunk):
        k = min(per_chunk, q - start)
        u = torch.randn(b, k, d)  # on the CPU ...
        u = (u / u.norm(dim=2, keepdim=True)).to(x.device)  # ... copied every chunk
        pts = (x.reshape(b, 1, d) + mu * u).reshape(b * k, *x.shape[1:])
        f = F.cross_entropy(module(pts), targets.repeat_interleave(k), reduction="none").view(b, k)
        grads += ((f - base[:, None]) / mu).unsqueeze(2).mul(u).sum(1).view_as(x)
    return grads * d / q


def timed(fn, device, repeats):
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=30)
    ap.add_argument("--q", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-mb", type=int, default=256)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    archs = {"conv4": lambda s: build_conv4(Conv4Params(width=32), 5, s, running_stats=True),
             "resnet10": lambda s: build_resnet10(ResNetParams(width=16), 5, s, running_stats=True),
             "resnet18": lambda s: build_resnet18(ResNetParams(width=16), 5, s, running_stats=True)}
    print(f"device={device} B={args.batch} q={args.q} (B*(q+1) = {args.batch * (args.q + 1)} images per step)")
    print(f"{'api':10s} {'px':>3s} {'bare s':>8s} {'ours s':>8s} {'naive s':>8s} {'ours/bare':>10s} {'naive/ours':>11s}")
    for name, build in archs.items():
        for size in (32, 84):
            module = build(size).to(device).eval()
            info = APIInfo(name, "bench", name, tuple(range(5)), tuple("abcde"), size)
            api = make_api(module, info, (0.5,) * 3, (0.25,) * 3, QueryLedger())
            x = torch.rand(args.batch, 3, size, size, device=device)
            y = torch.arange(args.batch, device=device) % 5
            est = ZOForward(ZOParams(q=args.q, mu=0.005, memory_mb=args.memory_mb), seed=0)
            pts = torch.rand(args.batch * (args.q + 1), 3, size, size, device=device)

            def loss(inputs, scores, index):
                return F.cross_entropy(scores, y[index], reduction="none")

            def bare():
                with torch.inference_mode():
                    api.query(pts)

            mean = torch.tensor((0.5,) * 3, device=device).view(1, -1, 1, 1)

            def naive():
                naive_estimate(lambda z: module((z - mean) / 0.25), x, y, args.q, 0.005)

            t_bare = timed(bare, device, args.repeats)
            t_ours = timed(lambda: est.estimate(api, x, loss), device, args.repeats)
            t_naive = timed(naive, device, args.repeats)
            print(f"{name:10s} {size:3d} {t_bare:8.3f} {t_ours:8.3f} {t_naive:8.3f} {t_ours / t_bare:10.2f}x "
                  f"{t_naive / t_ours:10.2f}x")


if __name__ == "__main__":
    main()
