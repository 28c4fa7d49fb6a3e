"""glibc's default allocator vs keeping freed memory (dfml_bench.allocator), on a recovery's parts.

Each mode runs in fresh subprocesses (the allocator is set per process), alternating
default / keep for `--rounds` rounds; each child times, side by side, at the quick profile's
step size (B = 30 images, q = 20: calls of 630 images, 32 px):

* api:      `api.query` of one call (conv4-w32 API: folded BatchNorm, channels-last, sliced)
* student:  the boundary term's student forward on the same call (the conv4-w32 meta model with
            batch-statistics BatchNorm, no grad, `inference_weights`), as BiDf-MKD runs it
* recovery: one generator recovery with the boundary term (zo_forward, `--iterations` steps)

and prints medians over rounds, the default/keep ratio per part, and student/api per mode.

    python benchmarks/allocator.py [--rounds 3] [--iterations 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence

from bench_util import child_args


def _child(a: dict) -> dict[str, float]:
    from dfml_bench.allocator import keep_freed_memory

    if a["mode"] == "keep":
        keep_freed_memory(children=False)
    import time

    import torch
    from torch.func import functional_call

    from bench_util import side_by_side
    from dfml_bench.apis import APIInfo, QueryLedger, make_api
    from dfml_plugins.estimators.zeroth_order import ZOParams
    from dfml_plugins.estimators.zeroth_order.estimator import ZOForward
    from dfml_plugins.methods.bidf_mkd.method import inference_weights
    from dfml_plugins.models.conv4 import Conv4Params
    from dfml_plugins.models.conv4.model import build_conv4
    from dfml_plugins.recoverers.generator import GeneratorRecovererParams
    from dfml_plugins.recoverers.generator.recoverer import GeneratorRecoverer

    torch.set_num_threads(int(a["threads"]))
    torch.manual_seed(0)
    size, per_class, q, device = 32, int(a["per_class"]), int(a["q"]), torch.device("cpu")
    api_net = build_conv4(Conv4Params(width=32), 5, size, running_stats=True).train()
    with torch.no_grad():  # running statistics away from the initial 0 / 1
        api_net(torch.randn(64, 3, size, size))
    info = APIInfo("api", "bench", "conv4", tuple(range(5)), tuple("abcde"), size)
    api = make_api(api_net, info, (0.5,) * 3, (0.25,) * 3, QueryLedger())
    meta = build_conv4(Conv4Params(width=32), 5, size).train()
    weights = inference_weights(dict(meta.named_parameters()), device)
    mean = torch.tensor((0.5,) * 3).view(1, -1, 1, 1)
    std = torch.tensor((0.25,) * 3).view(1, -1, 1, 1)

    def student(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return functional_call(meta, weights, ((x - mean) / std,))

    x = torch.rand(5 * per_class * (q + 1), 3, size, size)
    t = side_by_side({"api": lambda: api.query(x), "student": lambda: student(x)}, device, int(a["repeats"]))
    recoverer = GeneratorRecoverer(GeneratorRecovererParams(iterations=int(a["iterations"]), width=32, lr=0.01,
                                                            flip=False))
    t0 = time.perf_counter()
    recoverer.recover(api, ZOForward(ZOParams(q=q), 0), per_class, size, torch.Generator().manual_seed(0), student)
    return {**t, "recovery": time.perf_counter() - t0}


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    child = child_args(argv)
    if child is not None:
        print(__import__("json").dumps(_child(child)))
        return {}
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="default/keep subprocess pairs")
    ap.add_argument("--iterations", type=int, default=30, help="generator steps of the timed recovery (quick: 30)")
    ap.add_argument("--per-class", type=int, default=6, help="images per class (quick: 6, so B = 30)")
    ap.add_argument("--q", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5, help="timed api / student calls per child")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "DFML_BENCH_MALLOC"}
    runs: dict[str, list[dict[str, float]]] = {"default": [], "keep": []}
    for _ in range(args.rounds):
        for mode in runs:
            child_arg = {"mode": mode, "iterations": args.iterations, "per_class": args.per_class, "q": args.q,
                         "repeats": args.repeats, "threads": args.threads}
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(child_arg)], capture_output=True,
                                 text=True, check=True, env=env)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
    calls = 5 * args.per_class * (args.q + 1)
    print(f"threads={args.threads} calls of {calls} images at 32 px, recovery of {args.iterations} steps; "
          f"medians of {args.rounds} fresh processes per mode")
    print(f"{'part':9s} {'default s':>9s} {'keep s':>8s} {'default/keep':>12s}")
    for k in ("api", "student", "recovery"):
        print(f"{k:9s} {med['default'][k]:9.3f} {med['keep'][k]:8.3f} {med['default'][k] / med['keep'][k]:11.2f}x")
    for m in runs:
        print(f"student/api per image, {m}: {med[m]['student'] / med[m]['api']:.2f}x")
    return med


if __name__ == "__main__":
    main()
