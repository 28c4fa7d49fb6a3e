"""Where one BiDf-MKD meta-iteration spends its time: recovery / inner KD / outer / replay.

Runs `bidf_mkd` end to end on a small setting (the smoke pool, with the quick profile's
per-class count, q, generator steps and inner steps; a generator of width 32 and z 64; a few
meta-iterations) and times, with wrappers around the method's components:

* recovery:  GeneratorRecoverer.recover (support and query sets), and within it the ZO
             estimator (API queries and direction algebra) vs the generator's own work
* inner KD:  BilevelKD.adapt on the recovered support set (second order by default)
* outer:     the rest of an API meta-iteration (query-set KD, the meta-gradient through the
             inner loop, Adam, memory writes)
* replay:    replay meta-iterations (MAML on tasks from the memory)

and, side by side, two layout ablations: the generator step, and the boundary term's student
forward on one ZO call's points with `inference_weights` (channels-last kernels on CPU).

Prints each part's share of the API meta-iterations and replay's share of all training time.

    python benchmarks/bidf_iteration.py [--device cpu] [--iterations 6] [--q 20] [--gen-iters 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench_util import set_threads
from dfml_bench.config import build_raw_config, resolve_runs
from dfml_bench.plugins import load_registry
from dfml_bench.runner import Environment, execute_run
from dfml_plugins.estimators.zeroth_order.estimator import ZOForward
from dfml_plugins.meta_learners.kd.learner import BilevelKD
from dfml_plugins.methods.bidf_mkd.method import BidfMkd
from dfml_plugins.recoverers.generator.recoverer import GeneratorRecoverer


def _timed(owner: type, name: str, key: str, totals: dict[str, float], sync: Callable[[], None]) -> Callable[[], None]:
    """Wrap owner.name to add its wall time to totals[key]; returns the function that undoes it."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        sync()
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            sync()
            totals[key] += time.perf_counter() - t0

    setattr(owner, name, wrapper)
    return lambda: setattr(owner, name, original)


def generator_layout(args: argparse.Namespace, device: object) -> float:
    """Seconds of one generator step in channels-last over contiguous layout (quick-profile generator)."""
    import torch

    from bench_util import side_by_side
    from dfml_plugins.recoverers.generator.recoverer import Generator, augment

    def make(channels_last: bool) -> Callable[[], None]:
        g = torch.Generator(device=device).manual_seed(0)
        net = Generator(256, args.image_size, 128).to(device)
        net.reset(g)
        if channels_last:
            net.to(memory_format=torch.channels_last)
        z = torch.randn(5 * args.per_class, 256, device=device, generator=g).requires_grad_(True)
        opt = torch.optim.Adam(list(net.parameters()) + [z], lr=1e-3, betas=(0.5, 0.999))
        grad = torch.randn(5 * args.per_class, 3, args.image_size, args.image_size, device=device, generator=g)

        def step() -> None:
            surrogate = (augment(net(z), 4, True, g) * grad).flatten(1).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            surrogate.backward()
            opt.step()
        return step

    t = side_by_side({"contiguous": make(False), "channels_last": make(True)}, torch.device(device), 5)
    return t["channels_last"] / t["contiguous"]


def student_size(args: argparse.Namespace) -> int:
    """The student ablation's image size: --image-size, at least the 16 px conv4's four poolings need."""
    return max(args.image_size, 16)


def student_layout(args: argparse.Namespace, device: object) -> float:
    """Seconds of one boundary-term student forward with `inference_weights` (channels-last conv
    kernels on CPU) over plain detached weights: the meta model (conv4-w32, batch statistics) on the
    B(q+1) points of one ZO call."""
    import torch
    from torch.func import functional_call

    from bench_util import side_by_side
    from dfml_plugins.methods.bidf_mkd.method import inference_weights
    from dfml_plugins.models.conv4.model import Conv4

    dev = torch.device(device)  # type: ignore[arg-type]
    torch.manual_seed(0)
    size = student_size(args)
    model = Conv4(5, 32, size).to(dev).train()
    points = torch.rand(5 * args.per_class * (args.q + 1), 3, size, size, device=dev)
    plain = {k: v.detach() for k, v in model.named_parameters()}
    fast = inference_weights(dict(model.named_parameters()), dev)

    def forward(weights: dict[str, torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                functional_call(model, weights, (points,))
        return run

    t = side_by_side({"contiguous": forward(plain), "inference_weights": forward(fast)}, dev, 5)
    return t["inference_weights"] / t["contiguous"]


def settings(args: argparse.Namespace) -> list[str]:
    return [f"train.meta_iterations={args.iterations}", f"train.meta_batch_size={args.meta_batch}",
            f"train.val_every={10 * args.iterations}", "train.val_episodes=2", "eval.episodes=2",
            f"method.per_class={args.per_class}", "method.patience=2", f"method.boundary_start={args.boundary_start}",
            f"estimator.zo_forward.q={args.q}", f"recoverer.generator.iterations={args.gen_iters}",
            "recoverer.generator.z_dim=64", "recoverer.generator.width=32",
            f"meta_learner.kd.inner_steps={args.inner_steps}", f"meta_learner.maml.inner_steps={args.inner_steps}"]


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--iterations", type=int, default=6, help="meta-iterations (API ones and replay ones)")
    ap.add_argument("--meta-batch", type=int, default=2)
    ap.add_argument("--per-class", type=int, default=6, help="recovered images per class (quick: 6)")
    ap.add_argument("--q", type=int, default=20, help="ZO directions (quick: 20)")
    ap.add_argument("--gen-iters", type=int, default=30, help="generator steps per recovery (quick: 30)")
    ap.add_argument("--boundary-start", type=int, default=0,
                    help="meta-iteration from which query recovery has the boundary term (0: every API one)")
    ap.add_argument("--inner-steps", type=int, default=5, help="KD and MAML inner steps (quick: 5)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default); see bench_util")
    ap.add_argument("--image-size", type=int, default=32, help="generator ablation: image size (glyphs: 32)")
    ap.add_argument("--no-ablate", action="store_true", help="skip the generator layout ablation")
    ap.add_argument("--pool-dir", default=None, help="pool cache (default: a temporary directory)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse(argv)
    import torch

    device = torch.device(args.device)
    set_threads(args.threads, device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    totals: dict[str, float] = defaultdict(float)
    api_iters = [0]
    original_step = BidfMkd.train_step

    def train_step(self: BidfMkd, iteration: int) -> Any:
        api = self._is_api_iteration(iteration)
        sync()
        t0 = time.perf_counter()
        out = original_step(self, iteration)
        sync()
        totals["api_iteration" if api else "replay_iteration"] += time.perf_counter() - t0
        api_iters[0] += int(api)
        return out

    undo = [_timed(GeneratorRecoverer, "recover", "recovery", totals, sync),
            _timed(ZOForward, "estimate", "zo_estimate", totals, sync),
            _timed(BilevelKD, "adapt", "inner_kd", totals, sync)]
    BidfMkd.train_step = train_step  # type: ignore[method-assign]
    registry = load_registry()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pools = Path(args.pool_dir) if args.pool_dir else Path(tmp) / "pools"
            resolved = resolve_runs(build_raw_config("smoke", sets=settings(args), flags={"method": "bidf_mkd"}),
                                    registry)[0]
            env = Environment(Path(tmp) / "results", device=args.device, pool_dir=pools, workers=1)
            result = execute_run(resolved, registry, env)
    finally:
        BidfMkd.train_step = original_step  # type: ignore[method-assign]
        for u in undo:
            u()
    api_t, replay_t = totals["api_iteration"], totals["replay_iteration"]
    outer = api_t - totals["recovery"] - totals["inner_kd"]
    n_api = api_iters[0]
    n_replay = args.iterations - n_api
    print(f"device={device} bidf_mkd, smoke pool, {args.iterations} meta-iterations x {args.meta_batch} tasks "
          f"({n_api} API, {n_replay} replay), q={args.q}, {args.gen_iters} generator steps, "
          f"{args.per_class} images/class, {args.inner_steps} inner steps; queries={result['queries']:,}")
    print(f"API meta-iteration: {api_t / max(n_api, 1):.2f} s each")
    for name, t in (("recovery", totals["recovery"]), ("  of which ZO estimator", totals["zo_estimate"]),
                    ("  of which generator", totals["recovery"] - totals["zo_estimate"]),
                    ("inner KD", totals["inner_kd"]), ("outer", outer)):
        print(f"  {name:24s} {t:7.2f} s  {100 * t / api_t:5.1f} %")
    print(f"replay meta-iteration: {replay_t / max(n_replay, 1):.3f} s each "
          f"({replay_t / max(n_replay, 1) / (api_t / max(n_api, 1)):.3f}x an API one); "
          f"replay share of training time: {100 * replay_t / (api_t + replay_t):.1f} %")
    if not args.no_ablate:
        ratio = generator_layout(args, device)
        print(f"generator step (width 128, z 256, {5 * args.per_class} images, {args.image_size} px): "
              f"channels-last / contiguous = {ratio:.2f}x")
        ratio = student_layout(args, device)
        print(f"boundary student forward (conv4-w32, {5 * args.per_class * (args.q + 1)} points, {student_size(args)} px): "
              f"inference_weights / detached = {ratio:.2f}x")
    return {**totals, "outer": outer, "api_iterations": n_api}


if __name__ == "__main__":
    main()
