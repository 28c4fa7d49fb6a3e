"""Zero-order estimator step vs its physical limit and vs a naive, reference-style estimator.

Measured side by side in one process, on one device, for conv4 / resnet10 / resnet18 APIs at
32 and 84 px (repetitions interleaved, one warm-up each, median reported):

* net:   the API's network alone on B * (q + 1) already-normalised images, one pass
* bare:  ``api.query`` of the same B * (q + 1) images (the API's own slicing into cache-sized
         forward passes included): the physical limit of a ZO step
* ours:  ``ZOForward.estimate`` (noise on the device, base point in the same call, chunks from
         the memory budget)
* naive: the reference's way: directions drawn on the CPU per chunk and copied, a fixed number
         of chunks, the base point in a separate pass

The headline first: ours/bare at the profiles' step sizes (quick: B = 30 images, q = 20; paper:
B = 150, q = 100) on the SS APIs' architecture (conv4-w32, 32 px); target <= 1.05. `draws` times
the step's B q d normal draws alone (the estimator's chunks, a seeded generator: one serial
stream on CPU) and `bound` = 1 + draws/bare, the lowest ours/bare that these draws allow. Then the
table: ours/bare and naive/ours (speed-up) per architecture and size at `--batch` / `--q`.
``--ablate`` adds the before/after figures of each optimisation kept in the hot path, each
measured side by side the same way: API forward in one pass vs cache-sized slices
(1pass/sliced), contiguous vs channels-last layout, both in one pass (contig/cl), BatchNorm
kept vs folded into the convolutions (bn/folded).

    python benchmarks/zo_estimator.py                       # CPU, quick-profile sizes
    python benchmarks/zo_estimator.py --ablate --archs conv4 --sizes 32
    python benchmarks/zo_estimator.py --device cuda --batch 150 --q 100 --resnet-width 64 [--bf16]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from bench_util import set_threads, side_by_side
from dfml_bench.apis import APIInfo, QueryLedger, make_api
from dfml_plugins.estimators.zeroth_order import ZOParams
from dfml_plugins.estimators.zeroth_order.estimator import ZOForward
from dfml_plugins.models.conv4 import Conv4Params
from dfml_plugins.models.conv4.model import build_conv4
from dfml_plugins.models.resnet import ResNetParams
from dfml_plugins.models.resnet.model import build_resnet10, build_resnet18

MEAN, STD = (0.5,) * 3, (0.25,) * 3


def naive_estimate(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, targets: torch.Tensor,
                   q: int, mu: float, chunks: int = 10) -> torch.Tensor:
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


def build_api_module(arch: str, size: int, conv4_width: int, resnet_width: int) -> torch.nn.Module:
    if arch == "conv4":
        return build_conv4(Conv4Params(width=conv4_width), 5, size, running_stats=True)
    build = {"resnet10": build_resnet10, "resnet18": build_resnet18}[arch]
    return build(ResNetParams(width=resnet_width), 5, size, running_stats=True)


HEADLINE = {"quick": (30, 20), "paper": (150, 100)}  # profile: (B = per_class x ways, q)


def headline(args: argparse.Namespace, device: torch.device) -> list[dict[str, float]]:
    """ours/bare at each profile's step size, conv4 at `--headline-size` px."""
    rows = []
    for name in (n for n in args.headline.split(",") if n):
        b, q = HEADLINE[name]
        torch.manual_seed(0)
        module = build_api_module("conv4", args.headline_size, args.conv4_width, args.resnet_width).to(device)
        info = APIInfo("conv4", "bench", "conv4", tuple(range(5)), tuple("abcde"), args.headline_size)
        api = make_api(module, info, MEAN, STD, QueryLedger())
        x = torch.rand(b, 3, args.headline_size, args.headline_size, device=device)
        y = torch.arange(b, device=device) % 5
        pts = torch.rand(b * (q + 1), 3, args.headline_size, args.headline_size, device=device)
        est = ZOForward(ZOParams(q=q, mu=0.005, memory_mb=args.memory_mb), seed=0)

        def loss(inputs: torch.Tensor, scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(scores, y[index], reduction="none")

        d = x[0].numel()
        n_img, n_dir = est.chunks(d, reserved=b * d * x.element_size())
        g = torch.Generator(device=device).manual_seed(0)

        def draws() -> None:  # the step's unit directions alone, drawn in the estimator's chunks
            for start in range(0, b, n_img):
                for j in range(0, q, n_dir):
                    torch.randn(min(n_img, b - start), min(n_dir, q - j), d, device=device, generator=g)

        t = side_by_side({"bare": lambda: api.query(pts), "ours": lambda: est.estimate(api, x, loss),
                          "draws": draws}, device, args.headline_repeats)
        print(f"{name:7s} {b:4d} {q:4d} {b * (q + 1):7d} {t['bare']:7.3f} {t['ours']:7.3f} "
              f"{t['ours'] / t['bare']:8.2f}x {t['draws']:7.3f} {1 + t['draws'] / t['bare']:8.2f}x", flush=True)
        rows.append({"profile": name, "batch": b, "q": q, **t})
    return rows


def bench_one(arch: str, size: int, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Times of net / bare / ours / naive (and the ablations) for one API architecture and size."""
    torch.manual_seed(0)
    module = build_api_module(arch, size, args.conv4_width, args.resnet_width).to(device)
    info = APIInfo(arch, "bench", arch, tuple(range(5)), tuple("abcde"), size)
    autocast = torch.bfloat16 if args.bf16 else None
    api = make_api(module, info, MEAN, STD, QueryLedger(), autocast=autocast)
    x = torch.rand(args.batch, 3, size, size, device=device)
    y = torch.arange(args.batch, device=device) % 5
    est = ZOForward(ZOParams(q=args.q, mu=0.005, memory_mb=args.memory_mb), seed=0)
    pts = torch.rand(args.batch * (args.q + 1), 3, size, size, device=device)
    mean = torch.tensor(MEAN, device=device).view(1, -1, 1, 1)
    std = torch.tensor(STD, device=device).view(1, -1, 1, 1)
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    normed = ((pts - mean) / std).contiguous(memory_format=layout)

    def loss(inputs: torch.Tensor, scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(scores, y[index], reduction="none")

    def net() -> None:
        with torch.inference_mode():
            module(normed)

    def naive() -> None:
        with torch.inference_mode():
            naive_estimate(lambda z: module((z - mean) / std), x, y, args.q, 0.005)

    fns: dict[str, Callable[[], object]] = {"net": net, "bare": lambda: api.query(pts),
                                            "ours": lambda: est.estimate(api, x, loss), "naive": naive}
    if args.ablate:
        twin = build_api_module(arch, size, args.conv4_width, args.resnet_width).to(device)
        twin.load_state_dict(module.state_dict())
        contiguous_api = make_api(twin, info, MEAN, STD, QueryLedger(), channels_last=False, autocast=autocast,
                                  slice_mb=0)
        one_pass_api = make_api(module, info, MEAN, STD, QueryLedger(), autocast=autocast, slice_mb=0)
        unfolded_api = make_api(module, info, MEAN, STD, QueryLedger(), autocast=autocast, fold_bn=False)
        fns["bare_contiguous"] = lambda: contiguous_api.query(pts)
        fns["bare_one_pass"] = lambda: one_pass_api.query(pts)
        fns["bare_unfolded"] = lambda: unfolded_api.query(pts)
    return side_by_side(fns, device, args.repeats)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--headline", default="quick,paper", help=f"profiles' step sizes to time first, of "
                    f"{sorted(HEADLINE)} ('' to skip)")
    ap.add_argument("--headline-size", type=int, default=32, help="image size of the headline (glyphs: 32)")
    ap.add_argument("--headline-repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=30, help="images B per ZO step (quick profile: 30)")
    ap.add_argument("--q", type=int, default=20, help="directions per image")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (median reported)")
    ap.add_argument("--memory-mb", type=int, default=256, help="the estimator's chunk budget")
    ap.add_argument("--archs", default="conv4,resnet10,resnet18")
    ap.add_argument("--sizes", default="32,84")
    ap.add_argument("--conv4-width", type=int, default=32, help="quick and paper profiles: 32")
    ap.add_argument("--resnet-width", type=int, default=8, help="quick profile: 8, paper: 64")
    ap.add_argument("--bf16", action="store_true", help="API forwards under bf16 autocast (GPU option)")
    ap.add_argument("--ablate", action="store_true", help="also time each optimisation's 'before'")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default); see bench_util")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    args = parse(argv)
    device = torch.device(args.device)
    set_threads(args.threads, device)
    rows: list[dict[str, object]] = []
    if args.headline:
        print(f"device={device} threads={torch.get_num_threads()}: ZO step vs the bare API forward of its B(q+1) "
              f"images, conv4-w{args.conv4_width} at {args.headline_size} px (target ours/bare <= 1.05)")
        print(f"{'profile':7s} {'B':>4s} {'q':>4s} {'images':>7s} {'bare s':>7s} {'ours s':>7s} {'ours/bare':>9s} "
              f"{'draws s':>7s} {'bound':>9s}")
        rows += headline(args, device)
    if not args.archs:
        return rows
    print(f"device={device} threads={torch.get_num_threads()} B={args.batch} q={args.q} "
          f"(B*(q+1) = {args.batch * (args.q + 1)} images per step) repeats={args.repeats} bf16={args.bf16}")
    head = f"{'api':9s} {'px':>3s} {'net s':>7s} {'bare s':>7s} {'ours s':>7s} {'naive s':>7s} " \
           f"{'ours/bare':>9s} {'naive/ours':>10s}"
    if args.ablate:
        head += f" {'1pass/sliced':>12s} {'contig/cl':>9s} {'bn/folded':>9s}"
    print(head)
    for arch in args.archs.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            t = bench_one(arch, size, args, device)
            line = (f"{arch:9s} {size:3d} {t['net']:7.3f} {t['bare']:7.3f} {t['ours']:7.3f} {t['naive']:7.3f} "
                    f"{t['ours'] / t['bare']:8.2f}x {t['naive'] / t['ours']:9.2f}x")
            if args.ablate:
                line += (f" {t['bare_one_pass'] / t['bare']:11.2f}x {t['bare_contiguous'] / t['bare_one_pass']:8.2f}x"
                         f" {t['bare_unfolded'] / t['bare']:8.2f}x")
            print(line, flush=True)
            rows.append({"arch": arch, "size": size, **t})
    return rows


if __name__ == "__main__":
    main()
