"""The `dfml-bench` command line. Imports torch only inside commands that train or evaluate."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from dfml_bench import __version__
from dfml_bench.errors import DfmlError, bounded, shown

DEFAULT_RESULTS = "runs"


def _registry(ctx: click.Context) -> Any:
    from dfml_bench.plugins import load_registry

    obj = ctx.ensure_object(dict)
    if "registry" not in obj:
        obj["registry"] = load_registry(strict=obj.get("strict"))
    return obj["registry"]


def _stderr() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _warn_failed(ctx: click.Context) -> None:
    for failed in _registry(ctx).failed:
        _stderr().print(f"[yellow]warning:[/] plugin '{failed.name}' was skipped: {failed.reason}", highlight=False)


class Cli(click.Group):
    """Turns DfmlError (and any unexpected error) into one line, unless --debug."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            _stderr().print("[red]interrupted[/]; re-run the same command to resume where it stopped.")
            sys.exit(130)
        except Exception as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            if isinstance(exc, DfmlError):
                msg = str(exc)
            else:
                msg = f"unexpected {type(exc).__name__}: {exc} (re-run with --debug for the traceback)"
            msg = bounded(msg)  # values are quoted abbreviated; this bounds any other long text too
            from rich.markup import escape

            _stderr().print(f"[red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
            sys.exit(2)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dfml-bench")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.option("--strict-plugins", is_flag=True, default=None,
              help="A plugin that fails to load is a fatal error (also DFML_BENCH_STRICT_PLUGINS=1).")
@click.pass_context
def main(ctx: click.Context, debug: bool, strict_plugins: bool | None) -> None:
    """Benchmark data-free meta-learning methods (BiDf-MKD and baselines) on black-box API pools."""
    from dfml_bench.allocator import keep_freed_memory

    keep_freed_memory()  # before torch allocates: freed tensor buffers are reused, not given back to the OS
    ctx.ensure_object(dict).update(debug=debug, strict=strict_plugins)


def _split(values: tuple[str, ...]) -> list[str] | None:
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return items or None


def _ints(values: tuple[str, ...], what: str) -> list[int] | None:
    items = _split(values)
    if items is None:
        return None
    try:
        return [int(v) for v in items]
    except ValueError:
        raise DfmlError(f"--{what} takes integers such as 1,5; got {shown(','.join(items))}.") from None


def _config_layers(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options `run` and `tune` share: the profile and config layers, the device and the data
    and cache directories."""
    for option in reversed((
            click.option("--profile", "-p", default="quick", show_default=True, help="smoke | quick | long | paper | FILE.yaml"),
            click.option("--config", "config_file", type=click.Path(dir_okay=False),
                         help="YAML file layered over the profile."),
            click.option("--device", help="auto | cpu | cuda | cuda:N  [default: auto]"),
            click.option("--data-root", type=click.Path(file_okay=False), help="Directory of prepared real datasets."),
            click.option("--cache-dir", type=click.Path(file_okay=False), help="Cache for rendered data."))):
        command = option(command)
    return command


@main.command()
@click.option("--method", "-m", multiple=True, help="Method(s) to run; repeat or comma-separate for a grid.")
@click.option("--scenario", "-s", multiple=True, help="Scenario(s): SS, SH, MH or a plugin's.  [default: SS]")
@click.option("--shots", multiple=True, help="K-shot values, e.g. 1,5 (one run each).")
@click.option("--seeds", multiple=True, help="Seeds, e.g. 0,1,2 (one run each).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a setting, e.g. train.meta_iterations=200.")
@click.option("--budget", type=float, help="API query budget per run, in images (e.g. 2e6).")
@click.option("--pool-dir", type=click.Path(file_okay=False), help="Cache of built API pools  [default: $DFML_BENCH_POOL_DIR, else <cache>/pools].")
@click.option("--instance", help="Data instance of the embedded glyphs: dev (develop and tune) or sealed (a "
                                 "fresh rendering and class split, for published tables; see docs/tuning.md); "
                                 "also `instance:` in a config.  [default: dev]")
@click.option("--tuned", "tuned_dir", type=click.Path(file_okay=False),
              help="Run each method x scenario x shots cell with the winner of its `dfml-bench tune` study "
                   "under DIR (tune's --results directory), layered under --config and --set.")
@click.option("--launcher", help="Where runs execute: local | ray | slurm.  [default: local]")
@click.option("--workers", type=int, help="local launcher: runs at once, each in its own process.  [default: 1]")
@click.option("--ray-address", help="ray launcher: the cluster to join (e.g. auto, ray://head:10001).  "
                                    "[default: a local Ray instance]")
@click.option("--results", "results", type=click.Path(file_okay=False), default=DEFAULT_RESULTS, show_default=True,
              help="Directory for run directories.")
@click.option("--progress/--no-progress", default=None,
              help="A live display of the grid and its runs (default: when stdout and stderr are terminals); "
                   "--no-progress prints plain lines.")
@_config_layers
@click.pass_context
def run(ctx: click.Context, method: tuple[str, ...], scenario: tuple[str, ...], shots: tuple[str, ...],
        seeds: tuple[str, ...], profile: str, config_file: str | None, sets: tuple[str, ...], device: str | None,
        budget: float | None, pool_dir: str | None, launcher: str | None, workers: int | None,
        ray_address: str | None, results: str, data_root: str | None, cache_dir: str | None,
        progress: bool | None, instance: str | None, tuned_dir: str | None) -> None:
    """Run methods x scenarios x shots x seeds and store one result per run.

    Finished runs (same resolved config) are skipped before anything is dispatched; failed
    runs are recorded (error.json), do not stop the others, and are retried by a re-run.
    With --tuned DIR each cell runs its tuned settings: `dfml-bench tune` on dev, then
    `dfml-bench run --tuned DIR --instance sealed` publishes every winner in one grid.
    """
    from dfml_bench import launch, store
    from dfml_bench.config import build_raw_config, component_params, resolve_runs, top_level

    store.checkpoint_interval_s()  # a bad DFML_BENCH_CHECKPOINT_MINUTES fails here, before any run starts
    registry = _registry(ctx)
    _warn_failed(ctx)
    flags: dict[str, Any] = {
        "method": ",".join(_split(method) or []) or None,
        "scenario": ",".join(_split(scenario) or []) or None,
        "shots": _ints(shots, "shots"), "seeds": _ints(seeds, "seeds"), "device": device,
        "data_root": data_root, "cache_dir": cache_dir, "launcher": launcher, "budget": budget,
        "pool_dir": pool_dir, "instance": instance,
    }
    raw = _launcher_flags(build_raw_config(profile, config_file, sets, flags), workers, ray_address)
    console = _stderr()
    if tuned_dir is None:
        runs = resolve_runs(raw, registry)
    else:
        from dfml_bench.tune import tuned_runs

        runs, cells = tuned_runs(registry, Path(tuned_dir), profile=profile, config_file=config_file, sets=sets,
                                 flags=flags)
        for line in cells:
            console.print(f"  tuned: {line}", highlight=False, soft_wrap=True, markup=False)
    top = top_level(raw)
    l_name, l_params = component_params(raw, "launcher", registry)
    chosen = registry.build("launcher", l_name, l_params)  # fails now if its package is missing

    from dfml_bench.progress import Reporter

    env = _environment(top, Path(results), Reporter(progress))
    if not getattr(chosen, "remote", False):  # a device this machine lacks would fail every run
        from dfml_bench.runner import resolve_device

        resolve_device(env.device)
    from dfml_bench.progress import GridMonitor, grid_state

    live = GridMonitor.wants_live(progress)  # the grid display replaces per-run bars
    jobs = launch.make_jobs(runs, env, False if live else progress)
    finished: list[dict[str, Any]] = []
    pending: list[launch.Job] = []
    for job in jobs:
        done = store.read_result(job.run_dir) or _finished_twin(job)
        if done is None:
            pending.append(job)
            earlier = store.read_failure(job.run_dir)
            if earlier is not None:
                console.print(f"  {job.label}: retrying (it failed earlier: {earlier['error']})", highlight=False,
                              soft_wrap=True, markup=False)
            continue
        finished.append(done)
        console.print(f"  {job.label}: {done['accuracy']:.2f} ± {done['ci95']:.2f}  (already done) -> {job.run_dir}",
                      highlight=False, soft_wrap=True, markup=False)
    console.print(f"{len(jobs)} run(s), {len(pending)} to run with launcher '{l_name}' ({len(finished)} finished "
                  f"earlier); profile '{top.profile}', results in {results}/", highlight=False)
    values: list[Any] = []
    if pending:
        with GridMonitor(grid_state(pending), live=live):
            values = chosen.run_all(pending, launch.RunJob(registry, (ctx.obj or {}).get("strict"), quiet=live))
    if len(values) != len(pending):
        raise DfmlError(f"launcher '{l_name}' returned {len(values)} results for {len(pending)} runs; "
                        "fix the launcher plugin.")
    outcomes = [launch.as_outcome(job, value, registry) for job, value in zip(pending, values)]
    finished += [o.result for o in outcomes if o.result is not None]
    failed = [(job, o) for job, o in zip(pending, outcomes) if o.status == "failed"]
    from dfml_bench import report

    if finished or failed:
        failures = [store.read_failure(Path(o.run_dir)) for _, o in failed]
        console.print(report.to_rich(report.aggregate(finished, [f for f in failures if f])))
    if failed:
        from rich.markup import escape

        for job, o in failed:
            console.print(f"  [red]failed[/] {escape(job.label)}: {escape(o.error or '')} -> "
                          f"{Path(o.run_dir) / store.ERROR_FILE}",
                          highlight=False, soft_wrap=True)
        console.print(f"[red]error:[/] {len(failed)} of {len(jobs)} run(s) failed (errors above and in each "
                      "run's error.json); fix the cause and re-run the same command to retry them.",
                      highlight=False, soft_wrap=True)
        ctx.exit(1)


def _launcher_flags(raw: dict[str, Any], workers: int | None, ray_address: str | None) -> dict[str, Any]:
    """Apply --workers / --ray-address to the selected launcher's parameters."""
    from dfml_bench.errors import ConfigError

    section = raw.get("launcher")
    section = dict(section) if isinstance(section, dict) else {"name": section or "local"}
    section.setdefault("name", "local")
    name = section["name"]
    for flag, value, owner, key in (("--workers", workers, "local", "workers"),
                                    ("--ray-address", ray_address, "ray", "address")):
        if value is None:
            continue
        if name != owner:
            raise ConfigError(f"{flag} applies to the {owner} launcher, but launcher '{name}' is selected; "
                              f"add --launcher {owner} or drop {flag}.")
        section[owner] = {**(section.get(owner) or {}), key: value}
    raw["launcher"] = section
    return raw


def _finished_twin(job: Any) -> dict[str, Any] | None:
    """A pool-free job's result taken from another scenario's finished run of the same id (none to dispatch)."""
    from dfml_bench.runner import finished_twin

    return finished_twin(job.config, job.environment(False))


def _environment(top: Any, results: Path, reporter: Any, reuse_roots: Sequence[Path] = ()) -> Any:
    from dfml_bench.runner import Environment

    return Environment.create(results, device=top.device, data_root=top.data_root, cache_dir=top.cache_dir,
                              loggers=top.loggers, reporter=reporter, pool_dir=top.pool_dir, workers=top.workers,
                              reuse_roots=reuse_roots)


@main.command(epilog="""\b
--against METHOD: per cell (instance, scenario, shots), each row's paired difference to METHOD
in accuracy points with a 95% CI. Runs with one eval.seed (all, by default) see the same test
episodes, so the per-episode differences (row - METHOD) of every seed both ran pair up. A
paired bootstrap (4000 resamples, seeded: reruns agree) draws the episodes with replacement
(one draw shared by seeds with the same episodes), then the seeds with replacement; its
variance (seed part rescaled by S/(S-1)) gives the CI mean +- t * sd, with Student's t for the
Satterthwaite degrees of freedom of the seed and episode parts, so 3 seeds are not treated as
many. A * marks a CI that excludes 0. Seeds or rows without a partner, and records without
per-episode accuracies, are reported as unpaired. With one seed the CI covers episode sampling
only. See docs/statistics.md.


--split val: score each run by its selected (best) meta-val validation instead of meta-test,
tuning trials included; --against then pairs the episodes of those validations (every run of
one eval.seed validates on the same episodes). Use it for every comparison that decides a
setting. --at N scores each run by its best validation up to meta-iteration N instead, from
the per-validation episodes every run keeps (val_episodes.jsonl).""")
@click.argument("results", type=click.Path(), default=None, required=False)
@click.option("--results", "results_opt", type=click.Path(), default=None,
              help=f"The results directory (as for `run`; same as the positional argument) [default: {DEFAULT_RESULTS}].")
@click.option("--format", "fmt", type=click.Choice(["rich", "md", "csv", "latex", "html"]), default="rich",
              show_default=True, help="html: one self-contained page, the table and the plots embedded.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the table to this file.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False),
              help="Also write the plots as PNG files into this directory (needs dfml-bench[report]).")
@click.option("--methods", "-m", "methods", multiple=True,
              help="Only these methods, in this order; repeat or comma-separate.")
@click.option("--gap", "gap", metavar="FLOOR:CEILING",
              help="Also give each cell the gap it closes, 100 (acc - FLOOR) / (CEILING - FLOOR), e.g. "
                   "random:maml_oracle.")
@click.option("--against", "against", metavar="METHOD",
              help="Also give each cell its paired difference to METHOD with a 95% paired bootstrap CI "
                   "(see below).")
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="Score runs on meta-test, or on meta-val (each run's selected validation; tuning trials "
                   "included): see below.")
@click.option("--at", "at", type=click.IntRange(min=0), metavar="N",
              help="With --split val: score each run by its best validation up to meta-iteration N, as if it "
                   "had been trained for N (one long run answers every shorter length).")
@click.option("--metric", "metric", metavar="NAME",
              help="Tabulate a training metric instead of accuracy: each run's mean of NAME over its "
                   "metrics.jsonl records (e.g. agreement: how often an API labels the images recovered from "
                   "it as their target; api_task: the share of API meta-iterations).")
def compare(results: str | None, results_opt: str | None, fmt: str, output: str | None, plot_dir: str | None,
            methods: tuple[str, ...], gap: str | None, against: str | None, split: str, at: int | None,
            metric: str | None) -> None:
    """Summarise finished runs: mean ± 95% CI and median API queries per method x instance x scenario x
    shot; failed runs show as FAILED."""
    from dfml_bench import report, store
    from dfml_bench.errors import ConfigError

    if results is not None and results_opt is not None and Path(results) != Path(results_opt):
        raise ConfigError(f"two results directories given ('{results}' and --results '{results_opt}'); pass one.")
    root = Path(results or results_opt or DEFAULT_RESULTS)
    if not root.exists():
        raise DfmlError(f"results directory '{root}' does not exist; run `dfml-bench run` first or pass the right path.")
    from dfml_bench.config import with_current_defaults

    finished = list(store.iter_results(root, trials=split == "val"))
    if metric is not None:
        clash = [flag for flag, given in (("--against", against), ("--gap", gap), ("--at", at is not None),
                                          ("--split val", split == "val"), ("--plot", plot_dir),
                                          ("--format html", fmt == "html")) if given]
        if clash:
            raise ConfigError(f"--metric tabulates a training metric, which {' and '.join(clash)} cannot use "
                              "(they apply to accuracies); drop them or --metric.")
        scored = [report.training_metric(r, metric) for r in finished]
        if finished and not any(scored):
            raise DfmlError(f"no run under '{root}' logged a metric '{metric}'; `dfml-bench show RUN_DIR` "
                            "and the run's metrics.jsonl list the metrics its method logs.")
        finished = [x for x in scored if x is not None]
    if at is not None:
        if split != "val":
            raise ConfigError("--at scores runs by their validations; add --split val.")
        scored = [report.val_at(r, at) for r in finished]
        short = [Path(str(r.get("run_dir", ""))).name for r, x in zip(finished, scored) if x is None]
        if short:
            _stderr().print(f"--at {at}: left out {len(short)} run(s) trained for fewer meta-iterations: "
                            f"{', '.join(short)}", highlight=False)
        finished = [x for x in scored if x is not None]
    registry = _registry(click.get_current_context())
    configs = {str(r["run_dir"]): store.read_config(Path(r["run_dir"])) for r in finished}
    report.label_variants(finished, {run: None if config is None else with_current_defaults(config, registry)
                                     for run, config in configs.items()})
    rows = report.aggregate(finished, store.iter_failures(root), split=split)
    if not rows:
        raise DfmlError(f"no finished or failed runs under '{root}'; run `dfml-bench run` first.")
    if gap is not None:
        floor, sep, ceiling = gap.partition(":")
        if not (sep and floor.strip() and ceiling.strip()):
            raise ConfigError(f"--gap takes FLOOR:CEILING, two method names (e.g. random:maml_oracle), not '{gap}'.")
        report.add_gap_closed(rows, floor.strip(), ceiling.strip())
    if against is not None:
        report.add_paired_differences(rows, finished, against.strip(), split=split)
    if methods:
        rows = report.select_methods(rows, _split(methods) or [])
    if fmt == "html" or plot_dir:
        from dfml_bench import plots

        figures = plots.make_plots(finished, rows)
        if plot_dir:
            written = plots.write_plots(figures, Path(plot_dir))
            _stderr().print(f"{len(written)} plot(s) written to {plot_dir}/", highlight=False)
        if fmt == "html":
            text = report.to_html(rows, figures)
            if output:
                store.atomic_write_text(Path(output), text)
            else:
                click.echo(text, nl=False)
            return
    if fmt == "rich" and output is None:
        from rich.console import Console

        Console().print(report.to_rich(rows))
        return
    text = {"md": report.to_markdown, "csv": report.to_csv, "latex": report.to_latex,
            "rich": report.to_markdown}[fmt](rows)
    if output:
        store.atomic_write_text(Path(output), text)
    else:
        click.echo(text, nl=False)


@main.command()
@click.option("--method", "-m", multiple=True, required=True,
              help="Method(s) to tune; repeat or comma-separate for one study per cell.")
@click.option("--scenario", "-s", multiple=True, help="Scenario(s): SS, SH, MH, a plugin's or FILE.yaml.  [default: SS]")
@click.option("--shots", multiple=True, help="K-shot value(s), e.g. 1,5.  [default: the profile's first]")
@click.option("--trials", type=int, default=8, show_default=True,
              help="Trials of the random search; trial 0 runs the defaults. Give every compared method the same.")
@click.option("--space", "space_file", type=click.Path(dir_okay=False),
              help="YAML search space replacing the method's declared one: KEY: {DIST: VALUES}, e.g. "
                   "'train.meta_lr: {log_uniform: [1e-4, 1e-2]}' (DIST: choice, uniform, log_uniform, int_uniform, "
                   "int_log_uniform).")
@click.option("--seed", "search_seed", type=int, default=0, show_default=True,
              help="Seed of the search (which settings each trial draws); runs use the config's seeds.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a setting of every trial.")
@click.option("--budget", type=float, help="API query budget per trial run, in images.")
@click.option("--pool-dir", type=click.Path(file_okay=False), help="Cache of built API pools  [default: $DFML_BENCH_POOL_DIR, else <cache>/pools].")
@click.option("--launcher", help="Where trials execute: local | ray | slurm.  [default: local]")
@click.option("--workers", type=int, help="local launcher: trials at once, each in its own process.  [default: 1]")
@click.option("--ray-address", help="ray launcher: the cluster to join.")
@click.option("--results", "results", type=click.Path(file_okay=False), default=DEFAULT_RESULTS, show_default=True,
              help="Results root; each study goes to RESULTS/tune/METHOD-SCENARIO-Kshot-HASH/.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: when on a terminal).")
@_config_layers
@click.pass_context
def tune(ctx: click.Context, method: tuple[str, ...], scenario: tuple[str, ...], shots: tuple[str, ...], trials: int,
         space_file: str | None, search_seed: int, profile: str, config_file: str | None, sets: tuple[str, ...],
         device: str | None, budget: float | None, pool_dir: str | None, launcher: str | None,
         workers: int | None, ray_address: str | None, results: str, data_root: str | None,
         cache_dir: str | None, progress: bool | None) -> None:
    """Select settings on meta-val only: a seeded random search per method x scenario x shots cell.

    Every trial is a run scored by its best meta-val accuracy (mean over the config's seeds);
    the meta-test split is never loaded. Trials of every cell run through the launcher like
    `run` and finished ones are skipped on a re-run. Each study writes trials.md / trials.csv
    (every trial's settings and meta-val score, with the per-trial budget) and winner.yaml, a
    config overlay for `dfml-bench run --config winner.yaml` (or `run --tuned RESULTS` for
    every cell at once). Tuning uses the dev instance of the data.
    """
    from dfml_bench import launch, store
    from dfml_bench import tune as T
    from dfml_bench.config import build_raw_config, component_params, selected_names, top_level
    from dfml_bench.errors import ConfigError

    store.checkpoint_interval_s()  # a bad DFML_BENCH_CHECKPOINT_MINUTES fails here, before any trial starts
    registry = _registry(ctx)
    _warn_failed(ctx)
    flags: dict[str, Any] = {"device": device, "data_root": data_root, "cache_dir": cache_dir,
                             "launcher": launcher, "budget": budget, "pool_dir": pool_dir}
    raw = _launcher_flags(build_raw_config(profile, config_file, sets, flags), workers, ray_address)
    top = top_level(raw)
    if top.instance != "dev":
        raise ConfigError(f"tune runs on the dev instance only (instance '{top.instance}' was set): settings chosen "
                          "on an instance would make its tables biased; tune on dev, then run the winner with "
                          "--instance sealed.")
    shot_values = _ints(shots, "shots") or list(top.shots[:1])
    studies = [_plan_study(registry, m, s, k, trials=trials, space_file=space_file, search_seed=search_seed,
                           profile=profile, config_file=config_file, sets=sets, flags=flags, results=Path(results))
               for m in _split(method) or [] for s in _split(scenario) or selected_names(raw, "scenario")
               for k in shot_values]
    l_name, l_params = component_params(raw, "launcher", registry)
    chosen = registry.build("launcher", l_name, l_params)
    console = _stderr()
    for study, declared in studies:
        if not declared and trials > 1:
            console.print(f"method '{study.method}' declares no search space: only trial 0 (its defaults) runs; "
                          "pass --space FILE to search.", highlight=False, soft_wrap=True)

    from dfml_bench.progress import Reporter

    env = _environment(top, Path(results) / "tune", Reporter(progress))
    if not getattr(chosen, "remote", False):
        from dfml_bench.runner import resolve_device

        resolve_device(env.device)
    # a method that reads no pool has the same trials in every scenario sharing its data: a study takes
    # the finished ones from the other studies under the same --results (e.g. SH's from SS's)
    roots = {p for p in (Path(results) / "tune").glob("*") if p.is_dir()} | {s.root for s, _ in studies}
    jobs = [job for study, _ in studies
            for job in launch.make_jobs([run for trial in study.trials for run in trial.runs],
                                        _environment(top, study.root, env.reporter,
                                                     sorted(r for r in roots if r != study.root)), progress)]
    pending = [job for job in jobs if store.read_result(job.run_dir) is None and _finished_twin(job) is None]
    for study, _ in studies:
        console.print(f"tune {study.method} on {study.scenario} {study.shots}-shot: {len(study.trials)} trial(s); "
                      f"study in {study.root}/", highlight=False, soft_wrap=True)
    console.print(f"{len(jobs)} run(s), {len(pending)} to run with launcher '{l_name}' ({len(jobs) - len(pending)} "
                  f"finished earlier); profile '{top.profile}'", highlight=False, soft_wrap=True)
    values: list[Any] = chosen.run_all(pending, launch.RunJob(registry, (ctx.obj or {}).get("strict"))) if pending else []
    if len(values) != len(pending):
        raise DfmlError(f"launcher '{l_name}' returned {len(values)} results for {len(pending)} runs; "
                        "fix the launcher plugin.")
    from dfml_bench.config import run_id

    outcomes: dict[str, Any] = {}
    for job in jobs:
        done = store.read_result(job.run_dir)
        if done is not None:
            outcomes[run_id(job.config)] = done
    for job, value in zip(pending, values):
        o = launch.as_outcome(job, value, registry)
        if o.status == "failed":
            outcomes[run_id(job.config)] = o.error or "failed"
    from rich.markup import escape

    lost = 0
    for study, _ in studies:
        rows = T.trial_rows(study, outcomes)
        path = T.write_study(study, rows)
        click.echo((study.root / "trials.md").read_text())
        if path is None:
            lost += 1
            console.print(f"[red]error:[/] every trial of {escape(study.key)} failed (see its trials.md and each "
                          "run's error.json); fix the cause and re-run the same command.", highlight=False,
                          soft_wrap=True)
            continue
        console.print(f"winner overlay: {escape(str(path))}", highlight=False, soft_wrap=True)
        if any(r["status"] != "done" for r in rows):
            console.print("[yellow]warning:[/] some trials failed (see the table); re-run the same command to retry "
                          "them.", highlight=False, soft_wrap=True)
    if lost:
        ctx.exit(1)


def _plan_study(registry: Any, method: str, scenario: str, shots: int, *, trials: int,
                space_file: str | None, search_seed: int, profile: str, config_file: str | None,
                sets: tuple[str, ...], flags: dict[str, Any], results: Path) -> tuple[Any, bool]:
    """One cell's study (method, scenario, shots) and whether its space is the method's declared
    one and non-empty; the winner overlay records the cell's --config and --set layers."""
    from dfml_bench import tune as T
    from dfml_bench.config import build_raw_config, deep_merge, load_yaml, normalise_sections, parse_set, scenario_file

    raw = build_raw_config(profile, config_file, sets, {**flags, "method": method, "scenario": scenario,
                                                         "shots": [shots]})
    comp_name = registry.get("method", method).name
    if space_file:
        space, where = T.load_space_file(Path(space_file)), f"search space file '{space_file}'"
    else:
        space, where = T.declared_space(registry, comp_name), f"the search space of method '{comp_name}'"
    overlay: dict[str, Any] = {}
    if config_file:
        overlay = normalise_sections(load_yaml(Path(config_file)))
    for item in sets:
        overlay = deep_merge(overlay, normalise_sections(parse_set(item)))
    overlay = deep_merge(overlay, {"method": {"name": comp_name}, "shots": [shots]})
    if scenario.endswith((".yaml", ".yml")):
        s_name, block = scenario_file(Path(scenario))
        overlay = deep_merge(overlay, {"scenario": {"name": s_name, s_name: block}})
    else:
        overlay = deep_merge(overlay, {"scenario": {"name": scenario}})
    if flags.get("budget") is not None:
        overlay["budget"] = flags["budget"]
    study = T.plan_study(raw, registry, trials=trials, space=space, search_seed=search_seed,
                         results_root=results, base_overlay=overlay, where=where)
    return study, bool(space)


@main.command(name="list")
@click.argument("kind", required=False)
@click.pass_context
def list_(ctx: click.Context, kind: str | None) -> None:
    """List installed components, their parameters and plugins, and plugins that failed to load."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from dfml_bench.errors import ConfigError, did_you_mean
    from dfml_bench.params import describe
    from dfml_bench.plugins import KINDS

    registry = _registry(ctx)
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"unknown component kind '{kind}'." + did_you_mean(kind, KINDS))
    console = Console()
    for k in [kind] if kind else KINDS:
        table = Table(title=f"{k.replace('_', ' ')}s", title_justify="left", show_lines=False)
        table.add_column("name", no_wrap=True)
        table.add_column("plugin", no_wrap=True)
        for col in ("description", "parameters (default): help"):
            table.add_column(col, overflow="fold")
        for comp in registry.components(k):
            desc = escape(comp.help)
            if k == "method":  # what it needs and spends, so no oracle or white-box row passes for black-box
                desc += f" [dim]\\[access={comp.meta.get('access', 'black')}, " \
                        f"data-free={'yes' if comp.meta.get('data_free', True) else 'NO'}, " \
                        f"evaluation={escape(str(comp.meta.get('evaluation', 'finetune')))}, " \
                        f"queries: {escape(str(comp.meta.get('queries', 'not declared')))}][/]"
                space = comp.meta.get("search_space") or {}
                if space:
                    desc += " [dim]\\[tune: " + escape(", ".join(f"{key} ~ {next(iter(dist))}{list(next(iter(dist.values())))}"
                                                          for key, dist in space.items())) + "][/]"
            params = "\n".join(f"{p.name}: {p.type} = {p.default!r}  {p.help}"
                               + (f" ({p.range_text()})" if p.range_text() else "")
                               + (f" (one of {', '.join(map(str, p.choices))})" if p.choices else "")
                               for p in describe(comp.params)) or "-"
            table.add_row(comp.name, comp.plugin, desc, escape(params))
        console.print(table)
    if registry.failed:
        console.print("[bold yellow]plugins that failed to load[/]")
        for failed in registry.failed:
            console.print(f"  {failed.name}: {failed.reason}", highlight=False)


@main.command()
@click.argument("run_dir", type=click.Path())
def show(run_dir: str) -> None:
    """Show a run's resolved config and result (a run directory path)."""
    import json

    from rich.console import Console
    from rich.syntax import Syntax

    from dfml_bench import store

    path = Path(run_dir)
    if not (path / store.CONFIG_FILE).exists():
        raise DfmlError(f"'{path}' is not a run directory (no {store.CONFIG_FILE}); pass a directory under RESULTS/runs/.")
    console = Console()
    console.print(Syntax((path / store.CONFIG_FILE).read_text(), "yaml"))
    result = store.read_result(path)
    failure = store.read_failure(path) if result is None else None
    if failure is not None:
        from rich.markup import escape

        console.print(f"[red]failed[/] ({failure.get('failed_at', '?')}): {escape(failure['error'])}",
                      highlight=False)
        console.print("re-run its command to retry it; `cat error.json` in the run directory for the traceback.")
    elif result is None:
        console.print("[yellow]not finished[/]: re-run its command to resume it.")
    else:
        console.print(Syntax(json.dumps(result, indent=2), "json"))


@main.group()
def pool() -> None:
    """Build, list and inspect API pools (cached; `run` builds the pool it needs on first use)."""


def _pool_options(verb: str, workers_help: str) -> Any:
    """The options `pool build` and `pool serve` share: which scenario's pool, where it is cached and
    how many processes train its APIs (--build-workers; --workers is its deprecated name)."""
    options = [
        click.option("--scenario", "-s", default="SS", show_default=True, help=f"Scenario whose pool to {verb}."),
        click.option("--profile", "-p", default="quick", show_default=True, help="smoke | quick | long | paper | FILE.yaml"),
        click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     help="YAML file layered over the profile."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a setting."),
        click.option("--instance", help="Data instance of the embedded glyphs: dev or sealed (as for `run`).  "
                                        "[default: dev]"),
        click.option("--pool-dir", type=click.Path(file_okay=False), help="Cache of built API pools  [default: $DFML_BENCH_POOL_DIR, else <cache>/pools]."),
        click.option("--build-workers", type=int, help=workers_help),
        click.option("--workers", "deprecated_workers", type=int, hidden=True,
                     help="Deprecated name of --build-workers."),
    ]

    def decorate(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def _build_workers(build_workers: int | None, deprecated_workers: int | None) -> int | None:
    """--build-workers, or its deprecated name --workers (with a warning); both given is an error."""
    from dfml_bench.errors import ConfigError

    if deprecated_workers is None:
        return build_workers
    if build_workers is not None:
        raise ConfigError("--workers is the old name of --build-workers; pass only --build-workers.")
    _stderr().print("[yellow]warning:[/] --workers of `pool build` / `pool serve` is deprecated; use "
                    "--build-workers (processes that train the pool's APIs).", highlight=False, soft_wrap=True)
    return deprecated_workers


@pool.command("build")
@_pool_options("build", "Processes that train the pool's APIs (default: 2).")
@click.option("--progress/--no-progress", default=None)
@click.pass_context
def pool_build(ctx: click.Context, scenario: str, profile: str, config_file: str | None, sets: tuple[str, ...],
               instance: str | None, pool_dir: str | None, build_workers: int | None, deprecated_workers: int | None,
               progress: bool | None) -> None:
    """Train (or find cached) the API pool of a scenario and print its summary."""
    import time

    from dfml_bench.config import build_raw_config, component_params, top_level
    from dfml_bench.errors import ConfigError
    from dfml_bench.pool import PoolSource, verify_pool
    from dfml_bench.progress import Reporter
    from dfml_bench.runner import build_scenario_by_name, open_pool, resolve_device

    registry = _registry(ctx)
    workers = _build_workers(build_workers, deprecated_workers)
    raw = build_raw_config(profile, config_file, sets, {"scenario": scenario, "pool_dir": pool_dir, "instance": instance,
                                                        "workers": workers})
    top = top_level(raw)
    s_name, s_params = component_params(raw, "scenario", registry)
    env = _environment(top, Path(DEFAULT_RESULTS), Reporter(progress))
    data = build_scenario_by_name(registry, s_name, s_params, env, seed=0)
    if isinstance(data.pool_spec, PoolSource):
        raise ConfigError(f"scenario {s_name} uses a pool served elsewhere (kind '{data.pool_spec.kind}'); "
                          "there is nothing to build here: build it where it is served.")
    t0 = time.perf_counter()
    api_pool = open_pool(data, registry, env, resolve_device("cpu"))
    verify_pool(api_pool.root)  # a cached pool is ready only if every weight file is intact
    seconds = time.perf_counter() - t0
    _print_pool(api_pool.manifest, api_pool.root, summary_only=True)
    _stderr().print(f"pool ready in {seconds:.1f}s: {api_pool.root}", highlight=False)


@pool.command("serve")
@_pool_options("serve", "Processes that train the pool's APIs if it must be built (default: 2).")
@click.option("--device", help="Where the APIs run: auto | cpu | cuda | cuda:N  [default: auto]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (loopback by default).")
@click.option("--port", type=int, default=8765, show_default=True, help="Port (0: any free port).")
@click.option("--token", envvar="DFML_BENCH_POOL_TOKEN", help="Require 'Authorization: Bearer TOKEN' "
              "(better: set DFML_BENCH_POOL_TOKEN, which ps does not show).")
@click.option("--rate", type=float, help="Requests per second per API; more get 429 with Retry-After.")
@click.option("--burst", type=int, help="Requests per API allowed at once before --rate applies  [default: rate].")
@click.option("--budget", type=float, help="Images each API answers in all (e.g. 1e6); then 403.")
@click.option("--max-request-mb", type=float, default=64.0, show_default=True, help="Largest request body.")
@click.option("--fail-fraction", type=float, default=0.0, help="Testing clients: misbehave on this fraction of "
              "requests (seeded).")
@click.option("--faults", default=",".join(("drop", "delay", "429", "500", "malformed")), show_default=True,
              help="Testing clients: the misbehaviours --fail-fraction draws from.")
@click.option("--fault-seed", type=int, default=0, show_default=True)
@click.option("--progress/--no-progress", default=None)
@click.pass_context
def pool_serve(ctx: click.Context, scenario: str, profile: str, config_file: str | None, sets: tuple[str, ...],
               instance: str | None, pool_dir: str | None, build_workers: int | None, deprecated_workers: int | None,
               device: str | None, host: str, port: int,
               token: str | None, rate: float | None, burst: int | None, budget: float | None,
               max_request_mb: float, fail_fraction: float, faults: str, fault_seed: int,
               progress: bool | None) -> None:
    """Serve a scenario's API pool over HTTP (built first if needed); see docs/http-pools.md."""
    from dfml_bench.config import build_raw_config, component_params, top_level
    from dfml_bench.pool import PoolSource
    from dfml_bench.progress import Reporter
    from dfml_bench.runner import build_scenario_by_name, exact_float32, open_pool, resolve_device
    from dfml_bench.serve import FaultPlan, PoolServer, ServeLimits

    registry = _registry(ctx)
    workers = _build_workers(build_workers, deprecated_workers)
    raw = build_raw_config(profile, config_file, sets, {"scenario": scenario, "pool_dir": pool_dir, "instance": instance,
                                                        "workers": workers, "device": device})
    top = top_level(raw)
    s_name, s_params = component_params(raw, "scenario", registry)
    env = _environment(top, Path(DEFAULT_RESULTS), Reporter(progress))
    data = build_scenario_by_name(registry, s_name, s_params, env, seed=0)
    if data.pool_spec is None or isinstance(data.pool_spec, PoolSource):
        raise DfmlError(f"scenario '{data.name}' has no pool of its own to serve; serve a scenario with a built pool.")
    limits = ServeLimits(int(max_request_mb * 2**20), rate, burst, None if budget is None else int(budget))
    plan = FaultPlan(fail_fraction, fault_seed, tuple(f.strip() for f in faults.split(",") if f.strip()))
    device = resolve_device(env.device)
    api_pool = open_pool(data, registry, env, device)
    console = _stderr()
    server = PoolServer(api_pool, data.output, host=host, port=port, token=token, limits=limits, faults=plan)
    if not token and host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/] serving on {host} without --token: anyone who can reach it may "
                      "query (and spend) these APIs.", highlight=False)
    try:
        console.print(f"serving {len(api_pool)} APIs of pool {api_pool.root.name} ({data.output}) at {server.url} "
                      "(Ctrl-C stops)", highlight=False, soft_wrap=True)
        with exact_float32(device):  # clients' zero-order estimates need full-precision answers
            server.serve_forever()
    except KeyboardInterrupt:
        console.print(f"stopped; images answered per API: {server.usage()}", highlight=False, soft_wrap=True)
    finally:
        server.close()
        api_pool.close()


@pool.command("ls")
@click.option("--pool-dir", type=click.Path(file_okay=False), help="Cache of built API pools  [default: $DFML_BENCH_POOL_DIR, else <cache>/pools].")
def pool_ls(pool_dir: str | None) -> None:
    """List the built pools in the pool cache."""
    import json

    from rich.console import Console
    from rich.table import Table

    from dfml_bench import store
    from dfml_bench.pool import MANIFEST

    root = store.pool_dir(pool_dir)
    table = Table(title=f"API pools in {root}")
    table.add_column("pool", no_wrap=True)
    for col in ("datasets", "architectures", "APIs", "mean held-out acc"):
        table.add_column(col)
    for manifest_path in sorted(root.glob(f"*/{MANIFEST}")):
        m = json.loads(manifest_path.read_text())
        accs = [a["heldout_accuracy"] for a in m["apis"]]
        table.add_row(manifest_path.parent.name, ", ".join(d["name"] for d in m["datasets"]),
                      ", ".join(m["spec"]["architectures"]), str(len(m["apis"])),
                      f"{sum(accs) / max(len(accs), 1):.1f}")
    Console().print(table)


@pool.command("show")
@click.argument("pool", type=click.Path())
@click.option("--pool-dir", type=click.Path(file_okay=False), help="Cache of built API pools  [default: $DFML_BENCH_POOL_DIR, else <cache>/pools].")
@click.option("--verify", is_flag=True, help="Check every API file against its checksum.")
def pool_show(pool: str, pool_dir: str | None, verify: bool) -> None:
    """Show a pool's manifest (POOL is a pool directory or its hash)."""
    from dfml_bench import store
    from dfml_bench.pool import MANIFEST, read_manifest, verify_pool

    path = Path(pool)
    if not (path / MANIFEST).exists():
        path = store.pool_dir(pool_dir) / pool
    if not (path / MANIFEST).exists():
        raise DfmlError(f"no pool '{pool}' (no {MANIFEST} there); `dfml-bench pool ls` lists the built pools.")
    manifest = verify_pool(path) if verify else read_manifest(path)
    _print_pool(manifest, path, summary_only=False)
    if verify:
        _stderr().print(f"all {len(manifest['apis'])} API files match their checksums")


def _print_pool(manifest: dict[str, Any], root: Path, summary_only: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    by_arch: dict[tuple[str, str], list[float]] = {}
    for a in manifest["apis"]:
        by_arch.setdefault((a["dataset"], a["architecture"]), []).append(a["heldout_accuracy"])
    summary = Table(title=f"pool {root.name}: mean held-out accuracy of the APIs (K-way)")
    for col in ("dataset", "architecture", "APIs", "mean acc", "min acc"):
        summary.add_column(col)
    for (d, arch), accs in sorted(by_arch.items()):
        summary.add_row(d, arch, str(len(accs)), f"{sum(accs) / len(accs):.1f}", f"{min(accs):.1f}")
    console.print(summary)
    if summary_only:
        return
    table = Table(title="APIs")
    table.add_column("api", no_wrap=True)
    for col in ("architecture", "classes (global ids)", "class names", "held-out acc", "best epoch"):
        table.add_column(col, overflow="fold")
    for a in manifest["apis"]:
        table.add_row(a["api_id"], a["architecture"], ",".join(map(str, a["classes"])),
                      " ".join(a["class_names"]), f"{a['heldout_accuracy']:.1f}", str(a["best_epoch"]))
    console.print(table)
