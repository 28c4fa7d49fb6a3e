"""Query efficiency: BiDf-MKD's meta-test accuracy against the API queries it spent, per estimator.

One `dfml-bench run` per (estimator, q): `bidf_mkd` with `estimator.zo_forward.q=Q` (q + 1 queries
per recovered image per generator step) and `bidf_mkd_central` with `estimator.zo_central.q=Q`
(2q + 1: q antithetic pairs and the base point); everything else is the profile's. The default q
lists pair the two estimators at about equal queries per step (forward 5/10/20/50 = 6/11/21/51,
central 3/5/10/25 = 7/11/21/51). Total queries also depend on how often the patience trigger
calls for a new recovery, so they are read from each run, not computed. Runs go to `--results` like any `dfml-bench run` (a finished run with the same
resolved config is reused, not repeated), `--jobs` at a time, each a single-threaded subprocess.
Writes `table.csv`, `table.md` and `curve.png` (accuracy with its 95% CI against total queries)
to `--out` and prints the table.

    python benchmarks/query_efficiency.py --results runs --out out/query-efficiency \
        [--forward-q 5,10,20,50] [--central-q 3,5,10,25] [--scenario SS] [--shots 1] [--seed 0] \
        [--profile quick] [--jobs 2] [--set KEY=VALUE ...]

A quick SS 1-shot cell takes 10-20 minutes on one CPU core; the smoke test runs the smoke profile.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ESTIMATORS = {"zo_forward": "bidf_mkd", "zo_central": "bidf_mkd_central"}


@dataclasses.dataclass
class Cell:
    """One point of the curve: an estimator at one q, and where its run lives."""

    estimator: str
    q: int
    method: str
    run_path: Path
    result: dict | None = None


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def plan(args: argparse.Namespace) -> list[Cell]:
    """The cells to run, each with the run directory `dfml-bench run` will use for it."""
    from dfml_bench import store
    from dfml_bench.config import build_raw_config, resolve_runs, run_id, run_label
    from dfml_bench.plugins import load_registry

    registry = load_registry()

    def run_path(method: str, sets: list[str], common: list[str]) -> Path:
        flags = {"method": method, "scenario": args.scenario, "shots": [args.shots], "seeds": [args.seed],
                 "device": args.device}
        (resolved,) = resolve_runs(build_raw_config(args.profile, None, [*common, *sets], flags), registry)
        return store.run_dir(Path(args.results), run_label(resolved), run_id(resolved))

    cells = []
    for estimator, qs in (("zo_forward", _ints(args.forward_q)), ("zo_central", _ints(args.central_q))):
        for q in qs:
            method = ESTIMATORS[estimator]
            cells.append(Cell(estimator, q, method, run_path(method, [f"estimator.{estimator}.q={q}"], args.set)))
    if args.reference:  # the same settings, less those of bidf_mkd's own method section
        common = [item for item in args.set if not item.startswith("method.")]
        cells.append(Cell("reference", 0, args.reference, run_path(args.reference, [], common)))
    return cells


def command(cell: Cell, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-c", "from dfml_bench.cli import main; main()", "run", "-m", cell.method,
           "-s", args.scenario, "--shots", str(args.shots), "--seeds", str(args.seed), "-p", args.profile,
           "--device", args.device, "--results", args.results, "--no-progress",
           "--set", f"estimator.{cell.estimator}.q={cell.q}"]
    for item in args.set:
        cmd += ["--set", item]
    if args.pool_dir:
        cmd += ["--pool-dir", args.pool_dir]
    return cmd


def run_all(cells: list[Cell], args: argparse.Namespace) -> None:
    """Run the unfinished cells, `args.jobs` at a time; fill each cell's result."""
    from dfml_bench import store

    points = [c for c in cells if c.estimator != "reference"]
    todo = [c for c in points if store.read_result(c.run_path) is None]
    print(f"{len(points)} cells, {len(points) - len(todo)} finished earlier, {len(todo)} to run "
          f"({args.jobs} at a time, 1 thread each)", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running: list[tuple[Cell, subprocess.Popen, float]] = []
    while todo or running:
        while todo and len(running) < args.jobs:
            cell = todo.pop(0)
            with open(Path(args.log_dir) / f"{cell.estimator}-q{cell.q}.log", "w") as log:  # the child keeps its copy
                proc = subprocess.Popen(command(cell, args), stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((cell, proc, time.perf_counter()))
        time.sleep(0.5)
        for item in list(running):
            cell, proc, t0 = item
            if proc.poll() is not None:
                running.remove(item)
                state = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}; see {args.log_dir})"
                print(f"  {cell.estimator} q={cell.q}: {state} in {time.perf_counter() - t0:.0f} s", flush=True)
    for cell in cells:
        cell.result = store.read_result(cell.run_path)


def rows(cells: list[Cell]) -> list[dict]:
    out = []
    for c in cells:
        if c.result is None or c.estimator == "reference":
            continue
        per_step = c.q + 1 if c.estimator == "zo_forward" else 2 * c.q + 1
        out.append({"estimator": c.estimator, "q": c.q, "queries_per_image_step": per_step,
                    "total_queries": c.result["queries"], "accuracy": round(c.result["accuracy"], 2),
                    "ci95": round(c.result["ci95"], 2), "best_val": round(c.result["best_val_accuracy"], 2),
                    "wall_s": round(c.result["wall_time_s"]), "run": c.run_path.name})
    return out


def table_md(table: list[dict], header: str) -> str:
    cols = ["estimator", "q", "queries_per_image_step", "total_queries", "accuracy", "ci95", "best_val", "wall_s"]
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in table:
        lines.append("| " + " | ".join(f"{r[c]:,}" if c == "total_queries" else str(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def curve_png(table: list[dict], title: str, reference: tuple[str, dict] | None = None) -> bytes:
    """Accuracy ± 95% CI against total API queries, one line per estimator (Agg canvas); a
    finished `reference` run (e.g. random, which queries nothing) is a dashed line with its CI band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for estimator, marker in (("zo_forward", "o"), ("zo_central", "s")):
        pts = sorted((r for r in table if r["estimator"] == estimator), key=lambda r: r["total_queries"])
        if not pts:
            continue
        ax.errorbar([r["total_queries"] for r in pts], [r["accuracy"] for r in pts], yerr=[r["ci95"] for r in pts],
                    marker=marker, capsize=3, label=estimator)
        for r in pts:
            ax.annotate(f"q={r['q']}", (r["total_queries"], r["accuracy"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    if reference is not None:
        name, res = reference
        ax.axhline(res["accuracy"], color="grey", linestyle="--", label=f"{name} (no queries)")
        ax.axhspan(res["accuracy"] - res["ci95"], res["accuracy"] + res["ci95"], color="grey", alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("total API queries (images)")
    ax.set_ylabel("meta-test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="runs", help="run store, as `dfml-bench run --results`")
    ap.add_argument("--out", default=None, help="directory for table.csv / table.md / curve.png (none: print only)")
    ap.add_argument("--forward-q", default="5,10,20,50")
    ap.add_argument("--central-q", default="3,5,10,25")
    ap.add_argument("--scenario", default="SS")
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pool-dir", default=None)
    ap.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each")
    ap.add_argument("--reference", default="random",
                    help="method drawn as a line when its run (same profile/scenario/shots/seed) is in --results "
                         "(not run by this script; '' for none)")
    ap.add_argument("--log-dir", default=None, help="per-run logs (default: --results/query-efficiency-logs)")
    ap.add_argument("--set", action="append", default=[], help="extra setting for every run")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse(argv)
    args.log_dir = args.log_dir or str(Path(args.results) / "query-efficiency-logs")
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    cells = plan(args)
    run_all(cells, args)
    table = rows(cells)
    title = (f"bidf_mkd, {args.profile} profile, {args.scenario} {args.shots}-shot, seed {args.seed}"
             + (f", {' '.join(args.set)}" if args.set else ""))
    text = table_md(table, f"Query efficiency: {title}")
    for c in cells:
        if c.estimator == "reference":
            text += (f"\nreference: {c.method} {c.result['accuracy']:.2f} ± {c.result['ci95']:.2f} (no queries)\n"
                     if c.result else f"\nreference: no finished {c.method} run in {args.results}\n")
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(text)
        with open(out / "table.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(table[0]) if table else ["estimator"])
            writer.writeheader()
            writer.writerows(table)
        ref = next(((c.method, c.result) for c in cells if c.estimator == "reference" and c.result), None)
        if table:
            (out / "curve.png").write_bytes(curve_png(table, title, ref))
    return table


if __name__ == "__main__":
    main()
