"""Peak memory of one zo_forward step: bounded by the chunk budget, whatever q and B.

The budget (`estimator.zo_forward.memory_mb`, 256 MB in every profile) caps what a step holds:
its gradient estimates (B images), the points of one API call and their unit directions; whole
images with all q + 1 points per call while they fit, otherwise one image with its directions
split. The API adds one forward slice of its own: its normalised copy of the slice and the
network's activations for it (1 MB of input per slice on CPU).

Each case runs in a fresh subprocess and reports its peak above the memory held before the
step (peak RSS on CPU, torch's allocator peak on CUDA). The API here is a probe whose network
costs nothing (global pool + linear), so the figures are the estimator's and the API input's;
`--activations` measures what a real API network adds per image of a call (resnet18 at the
paper width 64, 84 px).

    python benchmarks/zo_memory.py                    # paper case + q sweep, budget vs none
    python benchmarks/zo_memory.py --device cuda
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bench_util import child_args, in_subprocess, peak_above_now, set_threads, side_by_side
from dfml_bench.apis import APIInfo, QueryLedger, make_api
from dfml_plugins.estimators.zeroth_order import ZOParams
from dfml_plugins.estimators.zeroth_order.estimator import ZOForward
from dfml_plugins.models.resnet import ResNetParams
from dfml_plugins.models.resnet.model import build_resnet18

NO_BUDGET_MB = 1 << 20  # 1 TB: never chunked


class _CallLog:
    """Forwards queries to an API and records the largest call (images)."""

    def __init__(self, api: object):
        self.api, self.largest = api, 0

    def query(self, images: torch.Tensor) -> torch.Tensor:
        self.largest = max(self.largest, images.shape[0])
        return self.api.query(images)  # type: ignore[attr-defined]


def _child(a: dict) -> dict[str, object]:
    """One measured case, in this (fresh) process."""
    device = torch.device(a["device"])
    set_threads(int(a["threads"]), device)
    size, b = int(a["size"]), int(a["batch"])
    info = APIInfo("probe", "bench", a["arch"], tuple(range(5)), tuple("abcde"), size)
    if a["arch"] == "resnet18":
        module = build_resnet18(ResNetParams(width=int(a["width"])), 5, size, running_stats=True)
    else:
        module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5))
    api = make_api(module.to(device), info, (0.5,) * 3, (0.25,) * 3, QueryLedger(), slice_mb=a.get("slice_mb"))
    x = torch.rand(b, 3, size, size, device=device)
    y = torch.arange(b, device=device) % 5
    if a["mode"] == "forward":  # the API alone on `batch` images
        return {"peak_mb": peak_above_now(lambda: api.query(x), device)}
    if a["mode"] == "time":  # one forward pass vs slices, side by side
        whole = make_api(module, info, (0.5,) * 3, (0.25,) * 3, QueryLedger(), slice_mb=0)
        t = side_by_side({"whole": lambda: whole.query(x), "sliced": lambda: api.query(x)}, device, int(a["repeats"]))
        return {"sliced_over_whole": t["sliced"] / t["whole"]}
    est = ZOForward(ZOParams(q=int(a["q"]), mu=0.005, memory_mb=int(a["memory_mb"])), seed=0)
    log = _CallLog(api)

    def loss(inputs: torch.Tensor, scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(scores, y[index], reduction="none")

    # warm-up on one image: kernels' one-off set-up (thread pools, JIT buffers) is not the step's
    ZOForward(ZOParams(q=1, mu=0.005, memory_mb=int(a["memory_mb"])), seed=1).estimate(api, x[:1], loss)
    peak = peak_above_now(lambda: est.estimate(log, x, loss), device)
    return {"peak_mb": peak, "largest_call": log.largest,
            "largest_call_mb": log.largest * x[0].numel() * x.element_size() / 2**20}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=84)
    ap.add_argument("--budget-mb", type=int, default=256, help="memory_mb of the paper case (profiles: 256)")
    ap.add_argument("--sweep-budget-mb", type=int, default=64, help="memory_mb of the q sweep")
    ap.add_argument("--sweep-q", default="100,800,3200")
    ap.add_argument("--sweep-batch", type=int, default=2)
    ap.add_argument("--paper-batch", type=int, default=150, help="paper: 30 images x 5 classes")
    ap.add_argument("--api-calls", default="64,512",
                    help="call sizes (images) for the resnet18 API's peak, sliced vs one pass ('' to skip)")
    ap.add_argument("--api-width", type=int, default=8, help="resnet18 width of that API (quick: 8, paper: 64)")
    ap.add_argument("--no-time", action="store_true", help="skip the sliced vs one-pass timing")
    ap.add_argument("--slice-mb", type=float, default=None, help="the API's input MB per forward pass "
                    "(default: the API's own, 1 on CPU)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default); see bench_util")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    child = child_args(argv)
    if child is not None:
        print(__import__("json").dumps(_child(child)))
        return []
    args = parse(argv)
    base = {"device": args.device, "threads": args.threads, "size": args.size, "arch": "probe", "width": 64,
            "mode": "zo"}
    rows: list[dict[str, object]] = []
    print(f"device={args.device} size={args.size}px d={3 * args.size ** 2} (peak above the memory held before "
          "the step; probe API)")
    print(f"{'case':26s} {'B':>4s} {'q':>5s} {'budget MB':>9s} {'largest call':>12s} {'call MB':>8s} "
          f"{'peak MB':>8s} {'peak/budget':>11s}")

    def case(name: str, batch: int, q: int, budget: int) -> None:
        r = in_subprocess(__file__, {**base, "batch": batch, "q": q, "memory_mb": budget})
        shown = "none" if budget == NO_BUDGET_MB else str(budget)
        ratio = "" if budget == NO_BUDGET_MB else f"{r['peak_mb'] / budget:10.2f}x"
        print(f"{name:26s} {batch:4d} {q:5d} {shown:>9s} {r['largest_call']:12d} {r['largest_call_mb']:8.0f} "
              f"{r['peak_mb']:8.0f} {ratio:>11s}", flush=True)
        rows.append({"case": name, "batch": batch, "q": q, "budget_mb": budget, **r})

    case("paper (q=100, B=150)", args.paper_batch, 100, args.budget_mb)
    for q in (int(v) for v in args.sweep_q.split(",")):
        case("sweep, budgeted", args.sweep_batch, q, args.sweep_budget_mb)
        case("sweep, no budget", args.sweep_batch, q, NO_BUDGET_MB)
    if args.api_calls:
        api = {**base, "arch": "resnet18", "width": args.api_width, "mode": "forward"}
        print(f"resnet18-w{args.api_width} API alone at {args.size}px, peak MB above before the call:")
        print(f"{'call (images)':>13s} {'one pass':>9s} {'sliced':>9s}")
        for n in (int(v) for v in args.api_calls.split(",")):
            whole = in_subprocess(__file__, {**api, "batch": n, "slice_mb": 0})["peak_mb"]
            sliced = in_subprocess(__file__, {**api, "batch": n, "slice_mb": args.slice_mb})["peak_mb"]
            print(f"{n:13d} {whole:9.0f} {sliced:9.0f}", flush=True)
            rows.append({"case": "api call", "images": n, "one_pass_mb": whole, "sliced_mb": sliced})
    if args.api_calls and not args.no_time:
        api = {**base, "arch": "resnet18", "width": args.api_width, "mode": "forward"}
        n = max(int(v) for v in args.api_calls.split(","))
        r = in_subprocess(__file__, {**api, "mode": "time", "batch": n, "slice_mb": args.slice_mb, "repeats": 3},
                          faithful_rss=False)
        print(f"time of a {n}-image call, slices / one pass: {r['sliced_over_whole']:.2f}x")
        rows.append({"case": "api call time", "images": n, **r})
    return rows


if __name__ == "__main__":
    main()
