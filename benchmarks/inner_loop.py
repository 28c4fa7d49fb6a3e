"""Second-order vs first-order inner loops: time and peak memory of one task's meta-gradient.

For the two meta-learners of BiDf-MKD (bi-level KD on an API task, MAML on a replay task),
one task = inner adaptation + query loss + backward to the meta parameters, on a conv4 meta
model. Time: side by side in one process (interleaved, warm-up, median). Peak memory: each
case in a fresh subprocess (peak RSS above the memory held before it on CPU, torch's
allocator peak on CUDA). Prints second-order / first-order ratios.

    python benchmarks/inner_loop.py [--device cpu] [--size 32] [--support 50] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence

import torch

from bench_util import child_args, in_subprocess, peak_above_now, set_threads, side_by_side
from dfml_bench.data import Task
from dfml_plugins.meta_learners.kd import KDParams
from dfml_plugins.meta_learners.kd.learner import BilevelKD
from dfml_plugins.meta_learners.maml import MamlParams
from dfml_plugins.meta_learners.maml.learner import MAML
from dfml_plugins.models.conv4 import Conv4Params
from dfml_plugins.models.conv4.model import build_conv4

LEARNERS = ("kd", "maml")


def task_step(learner: str, first_order: bool, a: dict) -> tuple[Callable[[], None], torch.device]:
    """A closure computing one task's meta-gradient, and its device."""
    device = torch.device(a["device"])
    set_threads(int(a["threads"]), device)
    torch.manual_seed(0)
    model = build_conv4(Conv4Params(width=int(a["width"])), 5, int(a["size"])).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    s, q, size = int(a["support"]), int(a["query"]), int(a["size"])
    xs = torch.randn(s, 3, size, size, device=device, generator=g)
    xq = torch.randn(q, 3, size, size, device=device, generator=g)
    ys, yq = torch.arange(s, device=device) % 5, torch.arange(q, device=device) % 5
    ts = torch.rand(s, 5, device=device, generator=g).softmax(1)
    tq = torch.rand(q, 5, device=device, generator=g).softmax(1)
    steps = int(a["steps"])
    meta = (BilevelKD(KDParams(inner_steps=steps, first_order=first_order)) if learner == "kd"
            else MAML(MamlParams(inner_steps=steps, first_order=first_order)))
    task = Task(xs, ys, xq, yq, ts, tq)
    params = dict(model.named_parameters())

    def step() -> None:
        loss = meta.task_outcome(model, params, task).loss
        torch.autograd.grad(loss, list(params.values()))

    return step, device


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=32, help="image size (glyphs: 32)")
    ap.add_argument("--width", type=int, default=32, help="conv4 width (quick and paper: 32)")
    ap.add_argument("--support", type=int, default=50, help="support images (KD: 5 classes x 10 recovered)")
    ap.add_argument("--query", type=int, default=50, help="query images")
    ap.add_argument("--steps", type=int, default=5, help="inner steps (quick: 5; paper KD: 10)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default); see bench_util")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    child = child_args(argv)
    if child is not None:
        step, device = task_step(str(child["learner"]), bool(child["first_order"]), child)
        step()  # warm-up: one-time allocations are not the inner loop's
        print(json.dumps({"peak_mb": peak_above_now(step, device)}))
        return {}
    args = parse(argv)
    a = {k: getattr(args, k) for k in ("device", "threads", "size", "width", "support", "query", "steps")}
    fns, device = {}, torch.device(args.device)
    for learner in LEARNERS:
        for fo in (False, True):
            fns[f"{learner}_{'fo' if fo else 'so'}"] = task_step(learner, fo, a)[0]
    t = side_by_side(fns, device, args.repeats)
    print(f"device={device} conv4-w{args.width} {args.size}px, support {args.support}, query {args.query}, "
          f"{args.steps} inner steps; one task's meta-gradient")
    print(f"{'learner':8s} {'SO s':>7s} {'FO s':>7s} {'time SO/FO':>10s} {'SO MB':>7s} {'FO MB':>7s} {'mem SO/FO':>9s}")
    out: dict[str, float] = dict(t)
    for learner in LEARNERS:
        so, fo = t[f"{learner}_so"], t[f"{learner}_fo"]
        mem = ""
        if not args.no_memory:
            m = [in_subprocess(__file__, {**a, "learner": learner, "first_order": f})["peak_mb"] for f in (False, True)]
            mem = f"{m[0]:7.0f} {m[1]:7.0f} {m[0] / max(m[1], 1e-9):8.2f}x"
            out[f"{learner}_so_mb"], out[f"{learner}_fo_mb"] = m
        print(f"{learner:8s} {so:7.3f} {fo:7.3f} {so / fo:9.2f}x {mem}", flush=True)
    return out


if __name__ == "__main__":
    main()
