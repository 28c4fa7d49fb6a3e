"""conv4's block order: ReLU after the max-pooling (shipped) vs before it (the textbook order).

max(relu(x)) = relu(max(x)), and both orders send a pooling window's gradient to its largest
input or to none, so the two give bit-identical outputs and gradients; the shipped order runs
the ReLU and its backward on a quarter of the elements. One process, side by side (warm-up,
interleaved rounds, median): a test-time fine-tuning episode (10 SGD steps on the support set,
then the query set) and a second-order MAML meta-gradient of 2 tasks (5 inner steps), at the
quick profile's sizes (32 px 1- and 5-shot) and MH's largest domain (48 px, global pooling).
Prints seconds per call, the before/after ratio and whether the results are bit-identical.

    python benchmarks/conv4_block.py [--device cpu] [--threads 1] [--repeats 7] [--cases 32:1,32:5,48:5]
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from bench_util import set_threads, side_by_side
from dfml_bench.evaluation import channels_last, finetune
from dfml_plugins.models.conv4.model import Conv4


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--width", type=int, default=32, help="conv4 width (quick and paper: 32)")
    ap.add_argument("--cases", default="32:1,32:5,48:5", help="SIZE:SHOTS, comma-separated (a size other than 32: global pooling, as in MH)")
    ap.add_argument("--queries", type=int, default=15)
    ap.add_argument("--steps", type=int, default=10, help="fine-tuning steps (eval.steps)")
    ap.add_argument("--repeats", type=int, default=7)
    return ap.parse_args(argv)


def textbook_order(model: Conv4) -> Conv4:
    """A copy of `model` with each block's ReLU before its max-pooling (same parameters)."""
    other = copy.deepcopy(model)
    for block in other.features:
        pool, relu = block[2], block[3]
        assert isinstance(pool, nn.MaxPool2d) and isinstance(relu, nn.ReLU), "conv4's block layout changed"
        block[2], block[3] = relu, pool
    return other


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    a = parse(argv)
    device = torch.device(a.device)
    set_threads(a.threads, device)
    print(f"device={device} threads={torch.get_num_threads()} conv4 width={a.width} 5-way queries={a.queries} "
          f"steps={a.steps} repeats={a.repeats}: textbook order (ReLU, pool) -> shipped (pool, ReLU)")
    print(f"{'case':>12} {'part':>14} {'before s':>9} {'after s':>8} {'ratio':>6} {'bit-identical':>13}")
    rows = []
    for case in a.cases.split(","):
        size, shots = (int(v) for v in case.split(":"))
        torch.manual_seed(0)
        shipped = Conv4(5, a.width, None if size != 32 else size, global_pool=size != 32).to(device)
        before = textbook_order(shipped)
        g = torch.Generator().manual_seed(1)
        xs = torch.randn(5 * shots, 3, size, size, generator=g).to(device)
        xq = torch.randn(5 * a.queries, 3, size, size, generator=g).to(device)
        ys = torch.arange(5, device=device).repeat_interleave(shots)
        yq = torch.arange(5, device=device).repeat_interleave(a.queries)
        cl = device.type == "cpu"  # evaluation's layout on CPU
        weights = {k: v.detach() for k, v in shipped.named_parameters()}
        weights = channels_last(weights) if cl else weights
        xs_e, xq_e = (x.contiguous(memory_format=torch.channels_last) if cl else x for x in (xs, xq))

        def episode(model: nn.Module) -> torch.Tensor:
            fast = finetune(model, weights, xs_e, ys, a.steps, 0.01)
            with torch.no_grad():
                return functional_call(model, fast, (xq_e,))

        def meta_gradient(model: nn.Module) -> tuple[torch.Tensor, ...]:
            params = dict(model.named_parameters())
            losses = []
            for _ in range(2):
                fast = dict(params)
                for _ in range(5):
                    loss = F.cross_entropy(functional_call(model, fast, (xs,)), ys)
                    grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
                    fast = {k: v - 0.01 * gr for (k, v), gr in zip(fast.items(), grads)}
                losses.append(F.cross_entropy(functional_call(model, fast, (xq,)), yq))
            return torch.autograd.grad(torch.stack(losses).mean(), list(params.values()))

        for part, fn in (("eval episode", episode), ("meta-gradient", meta_gradient)):
            out_before, out_after = fn(before), fn(shipped)
            pairs = zip(out_before, out_after) if isinstance(out_before, tuple) else [(out_before, out_after)]
            same = all(torch.equal(x, y) for x, y in pairs)
            t = side_by_side({"before": lambda: fn(before), "after": lambda: fn(shipped)}, device, a.repeats)
            ratio = t["before"] / t["after"]
            label = f"{size}px {shots}-shot"
            print(f"{label:>12} {part:>14} {t['before']:>9.4f} {t['after']:>8.4f} {ratio:>5.2f}x {str(same):>13}")
            rows.append({"case": label, "part": part, "before_s": t["before"], "after_s": t["after"], "ratio": ratio,
                         "bit_identical": same})
    return rows


if __name__ == "__main__":
    main()
