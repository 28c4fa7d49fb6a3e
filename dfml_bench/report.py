"""Summary tables of finished runs: mean +- 95% CI per method x instance x scenario x shot.

Across seeds the cell is the mean of the per-seed accuracies; its CI is the per-run
episode CI (1.96 * s / sqrt(episodes)) for a single seed, and Student's t quantile for n - 1
degrees of freedom times the sample std over the n seeds / sqrt(n) otherwise. Runs on
different data instances (result key ``instance``, "dev" when absent) are never pooled.
Each cell also gives the median API queries over its seeds.
The best data-free cell of each column is marked; non-data-free rows (oracles) carry a
marker and are never marked best, so nobody mistakes an upper bound for a result.
Failed runs (``error.json``, see `store.iter_failures`) are counted per cell: a cell whose
runs all failed reads FAILED, not blank, and a partly failed cell says how many failed.
Optionally each cell also gives the gap it closes between a floor and a ceiling method
(`add_gap_closed`), e.g. (bidf_mkd - random) / (maml_oracle - random), and its paired
difference to a reference method with a bootstrap CI (`add_paired_differences`,
docs/statistics.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from dfml_bench.errors import ConfigError
from dfml_bench.stats import mean_ci95, paired_bootstrap, per_dataset_summary

ACCESS_MARK = {"real_data": " (oracle: real data)", "white": " (white-box)", "black": "", "none": ""}


# Settings that may differ between the runs of one row without making them different experiments
# (the scenario's name picks the column; its parameters are compared among runs of that scenario).
_NOT_A_VARIANT = ("seed", "shots", "version", "scenario")


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run config flattened to dotted keys, less what may vary within a row; the scenario's
    parameters are keyed by its name, so SS runs are compared with SS runs only."""
    flat = _flatten({k: v for k, v in config.items() if k not in _NOT_A_VARIANT})
    scenario = config.get("scenario")
    if isinstance(scenario, Mapping) and isinstance(scenario.get("params"), Mapping):
        flat.update(_flatten(scenario["params"], f"scenario.{scenario.get('name')}."))
    return flat


_ABSENT = object()


def _holds_section_of(flat: Mapping[str, Any], key: str) -> bool:
    """Whether a flattened config has other settings in `key`'s section (e.g. `method.params`)."""
    section = key.rpartition(".")[0] + "."
    return any(k.startswith(section) for k in flat)


def label_variants(results: list[dict[str, Any]], configs: Mapping[str, Mapping[str, Any] | None]) -> None:
    """Relabel the runs of a method whose resolved configs differ (beyond seed, shots and code
    version) within one (instance, scenario, shots) column as ``method [key=value, ...]``, naming
    the differing settings, so that a sweep (e.g. several `--set estimator.zo_forward.q=Q` runs)
    is never averaged into one row as if its runs were seeds. Every run of such a method carries
    the label, in every column, so a sweep's rows line up across columns.
    A setting counts as differing when the runs of a column that have it disagree. A setting
    that some runs lack while holding its section (an option the installed code no longer
    declares, e.g. a renamed one: `with_current_defaults` has filled every declared one) differs
    too, so such runs are not pooled with runs that never had it.
    Settings that differ only between columns (each column its own configuration, as a grid
    run with `run --tuned` has: one `tune` winner per cell) keep one row; each run names them
    in ``column_settings`` (``key=value``, for the table's note and csv).
    `configs` maps each result's ``run_dir`` to its config (None: unknown, left unlabelled).
    The plain method name stays in ``base_method``."""
    by_method: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for r in results:
        r.setdefault("base_method", r["method"])
        config = configs.get(str(r.get("run_dir")))
        if config is not None:
            by_method.setdefault(r["method"], []).append((r, _settings(config)))

    def disagree(runs: list[tuple[dict[str, Any], dict[str, Any]]], key: str) -> bool:
        return len({repr(flat.get(key, _ABSENT)) for _, flat in runs
                    if key in flat or _holds_section_of(flat, key)}) > 1

    for runs in by_method.values():
        keys = sorted({k for _, flat in runs for k in flat})
        by_column: dict[Cell, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
        for r, flat in runs:
            by_column.setdefault(_cell_of(r), []).append((r, flat))
        differing = [k for k in keys if any(disagree(col, k) for col in by_column.values())]
        per_column = [k for k in keys if k not in differing and disagree(runs, k)]
        for r, flat in runs:
            short = ", ".join(f"{_short(k)}={flat[k]}" for k in differing if k in flat)
            if short:
                r["method"] = f"{r['base_method']} [{short}]"
            r["column_settings"] = [f"{_short(k)}={flat[k]}" for k in per_column if k in flat]


def _short(key: str) -> str:
    """A dotted setting's last two parts (``zo_forward.q``), as labels and notes name it."""
    return ".".join(key.split(".")[-2:])


Cell = tuple[str, str, int]  # (instance, scenario, shots)


def instance_of(result: Mapping[str, Any]) -> str:
    """The data instance a run used ("dev" for records made before instances were recorded)."""
    return str(result.get("instance") or "dev")


#: The standard scenarios in the paper's order: one dataset and architecture, mixed architectures,
#: mixed datasets. Columns and csv lines follow it; other scenarios come after, by name.
SCENARIO_ORDER = ("SS", "SH", "MH")


def cell_order(instance: str, scenario: str, shots: int) -> tuple[str, int, str, int]:
    """Sort key of a column: instance, then SCENARIO_ORDER, then shots."""
    rank = SCENARIO_ORDER.index(scenario) if scenario in SCENARIO_ORDER else len(SCENARIO_ORDER)
    return instance, rank, scenario, shots


def _natural(key: tuple[str, str, str, int]) -> tuple[list[Any], tuple[str, int, str, int]]:
    """Sort key of a row: numbers inside method labels compare as numbers ('q=5' before 'q=10'),
    then the column's :func:`cell_order`."""
    parts = re.split(r"(\d+)", key[0])
    return [int(p) if i % 2 else p for i, p in enumerate(parts)], cell_order(key[1], key[2], key[3])


def _key(r: Mapping[str, Any]) -> tuple[str, str, str, int]:
    return (str(r["method"]), instance_of(r), str(r["scenario"]), int(r["shots"]))


def _median(values: list[float]) -> float:
    v = sorted(values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def split_accuracy(run: Mapping[str, Any], split: str = "test") -> float | None:
    """A run's accuracy on `split`: "test", its meta-test ``accuracy``, or "val", the meta-val
    accuracy of its selected (best) validation, ``best_val_accuracy``, which every run records and
    tuning decisions are made on (None for a run that never validated)."""
    if split == "test":
        return float(run["accuracy"]) if run.get("kind") != "trial" else None  # a trial's accuracy is val
    value = run.get("best_val_accuracy")
    return None if value is None else float(value)


def val_at(run: Mapping[str, Any], iteration: int) -> dict[str, Any] | None:
    """`run` scored as if it had been trained to `iteration`: its best validation at or before it
    (the earliest of equal ones, as the trainer selects), from the run's ``val_episodes.jsonl``
    (per-episode, so it pairs) or, in records made without that file, its ``metrics.jsonl`` (the
    mean only). None when the run has no validation up to `iteration`, or was trained for fewer
    meta-iterations without stopping early (a run cut short says nothing about `iteration`; an
    early-stopped or budget-stopped one would have stopped the same way, and a method that does
    not train is the same at every length). Its ``queries`` and ``wall_time_s`` become those spent up
    to `iteration` (the last metrics record at or before it)."""
    from dfml_bench.store import METRICS_FILE, VAL_EPISODES_FILE, log_dir, read_jsonl

    trained = run.get("meta_iterations")
    if isinstance(trained, int) and 0 < trained < iteration and not run.get("stopped_early"):
        return None
    run_dir = log_dir(run)
    if run_dir is None:
        return None
    best: tuple[float, int, dict[str, list[float]] | None] | None = None
    for rec in read_jsonl(run_dir / VAL_EPISODES_FILE):
        per, it = rec.get("per_dataset"), rec.get("iteration")
        if not isinstance(per, dict) or not per or not isinstance(it, int) or it > iteration:
            continue
        episodes = {str(k): [float(a) for a in v] for k, v in per.items() if isinstance(v, list) and v}
        if len(episodes) != len(per):
            continue
        acc = sum(sum(v) / len(v) for v in episodes.values()) / len(episodes)
        if best is None or acc > best[0]:
            best = (acc, it, episodes)
    from_episodes = best is not None  # else an older record: the validations' means from the metrics
    spent: dict[str, Any] = {}  # queries and wall time as of the last record up to `iteration`
    for rec in read_jsonl(run_dir / METRICS_FILE):
        acc, it = rec.get("val_acc"), rec.get("iteration")
        if not isinstance(it, int) or it > iteration:
            continue
        spent.update({k: rec[k] for k in ("queries", "wall_time") if isinstance(rec.get(k), (int, float))})
        if not from_episodes and isinstance(acc, (int, float)) and (best is None or acc > best[0]):
            best = (float(acc), it, None)
    if best is None:
        return None
    acc, it, episodes = best
    cost = {"queries": spent["queries"]} if "queries" in spent else {}
    if "wall_time" in spent:
        cost["wall_time_s"] = spent["wall_time"]
    return {**run, **cost, "best_val_accuracy": acc, "best_iteration": it, "val_at": iteration,
            "best_val_per_dataset": per_dataset_summary(episodes) if episodes else None}


def training_metric(run: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """`run` scored by a training metric instead of accuracy: the mean of `name` over the records of
    its ``metrics.jsonl`` that logged it as a finite number (e.g. BiDf-MKD's ``agreement``, logged
    on API meta-iterations only), with no episodes (nothing pairs). None when no record has it."""
    import math

    from dfml_bench.store import METRICS_FILE, log_dir, read_jsonl

    run_dir = log_dir(run)
    if run_dir is None or run.get("kind") == "trial":
        return None
    values = [float(v) for rec in read_jsonl(run_dir / METRICS_FILE) for v in [rec.get(name)]
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not values:
        return None
    return {**run, "accuracy": sum(values) / len(values), "ci95": None, "per_dataset": None, "metric": name}


def aggregate(results: Iterable[Mapping[str, Any]],
              failures: Iterable[Mapping[str, Any]] = (), split: str = "test") -> list[dict[str, Any]]:
    """One row per (method, instance, scenario, shots) with mean, CI, seeds, median queries,
    wall time, evaluation rule and the number of failed runs, scored on `split` (:func:`split_accuracy`); a cell
    with only failed runs has ``accuracy`` None. Runs without a score on `split` are left out."""
    groups: dict[tuple[str, str, str, int], list[Mapping[str, Any]]] = {}
    for r in results:
        if split_accuracy(r, split) is not None:
            groups.setdefault(_key(r), []).append(r)
    failed: dict[tuple[str, str, str, int], list[Mapping[str, Any]]] = {}
    for f in failures:
        failed.setdefault(_key(f), []).append(f)
    rows = []
    for key in sorted(set(groups) | set(failed), key=_natural):
        method, instance, scenario, shots = key
        runs, lost = groups.get(key, []), failed.get(key, [])
        first = (runs or lost)[0]
        row: dict[str, Any] = {"method": method, "base_method": first.get("base_method", method),
                               "instance": instance, "scenario": scenario, "shots": shots,
                               "access": first.get("access", "black"), "data_free": bool(first.get("data_free", True)),
                               "evaluation": first.get("evaluation", "finetune"), "failed": len(lost),
                               "split": split, "val_at": first.get("val_at"), "metric": first.get("metric"),
                               "column_settings": list(first.get("column_settings", []))}
        if not runs:
            rows.append({**row, "accuracy": None, "ci95": None, "seeds": 0, "queries": None, "wall_time_s": None})
            continue
        accs = [float(split_accuracy(r, split)) for r in runs]  # type: ignore[arg-type]
        # over seeds: Student's t (a few runs); one run keeps its CI over its episodes
        mean, ci = mean_ci95(accs, student_t=True) if len(accs) > 1 else (accs[0], _episode_ci(runs[0], split))
        rows.append({**row, "accuracy": mean, "ci95": ci, "seeds": len(runs),
                     "queries": _median([float(r.get("queries", 0)) for r in runs]),
                     "wall_time_s": sum(float(r.get("wall_time_s", 0.0)) for r in runs) / len(runs)})
    if not any(r.get("metric") for r in rows):  # a training metric has no "best" direction
        mark_best(rows)
    else:
        for row in rows:
            row["best"] = False
    return rows


def _cell_of(row: Mapping[str, Any]) -> Cell:
    return (instance_of(row), str(row["scenario"]), int(row["shots"]))


def mark_best(rows: list[dict[str, Any]]) -> None:
    """Set each row's ``best``: the highest data-free accuracy of its (instance, scenario, shots) column."""
    best: dict[Cell, float] = {}
    for row in rows:
        if row["data_free"] and row["accuracy"] is not None:
            best[_cell_of(row)] = max(best.get(_cell_of(row), float("-inf")), row["accuracy"])
    for row in rows:
        row["best"] = (row["data_free"] and row["accuracy"] is not None
                       and row["accuracy"] == best.get(_cell_of(row)))


def select_methods(rows: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """The rows of `methods`, in that order, best marks recomputed among them; a method with no
    row is a ConfigError."""
    found = sorted({r["method"] for r in rows} | {_base(r) for r in rows})
    missing = [m for m in methods if m not in found]
    if missing:
        raise ConfigError(f"no runs of method(s) {', '.join(missing)} in these results; found: {', '.join(found)}.")
    chosen = [dict(r) for m in dict.fromkeys(methods) for r in rows if m in (r["method"], _base(r))]
    mark_best(chosen)
    return chosen


def _base(row: Mapping[str, Any]) -> str:
    return str(row.get("base_method", row["method"]))


def _reference(rows: list[dict[str, Any]], name: str, option: str) -> str:
    """The row label that a reference method name stands for (a base name: its only variant)."""
    labels = {r["method"] for r in rows}
    variants = {r["method"] for r in rows if _base(r) == name}
    if name not in labels and len(variants) > 1:
        raise ConfigError(f"{option}: '{name}' has several configurations here ({', '.join(sorted(variants))}); "
                          "name one of them.")
    return next((r["method"] for r in rows if name in (r["method"], _base(r))), name)


def add_gap_closed(rows: list[dict[str, Any]], floor: str, ceiling: str) -> None:
    """Set each row's ``gap_closed``: 100 (acc - floor) / (ceiling - floor), within its (instance,
    scenario, shots) column, where both reference methods have a result there and differ (else None)."""
    floor, ceiling = (_reference(rows, name, "--gap") for name in (floor, ceiling))
    acc = {(r["method"], *_cell_of(r)): r["accuracy"] for r in rows}
    for name in (floor, ceiling):
        if not any(m == name and a is not None for (m, *_), a in acc.items()):
            raise ConfigError(f"--gap needs results of '{name}' in these results; run it first or name "
                              "another method.")
    for r in rows:
        lo, hi = acc.get((floor, *_cell_of(r))), acc.get((ceiling, *_cell_of(r)))
        ok = None not in (lo, hi, r["accuracy"]) and hi != lo and r["method"] not in (floor, ceiling)
        r["gap_closed"] = 100.0 * (r["accuracy"] - lo) / (hi - lo) if ok else None


def _episode_ci(run: Mapping[str, Any], split: str) -> float | None:
    """One run's 95% CI over its episodes on `split` (None where its record has no episodes)."""
    if split == "test":
        return None if run.get("ci95") is None else float(run["ci95"])
    per = run.get("best_val_per_dataset")
    if not isinstance(per, Mapping) or not per:
        return None
    cis = [float(entry.get("ci95", 0.0)) for entry in per.values() if isinstance(entry, Mapping)]
    return math.sqrt(sum(c * c for c in cis)) / len(cis) if cis else None  # as the run combines its datasets


def _episode_matrix(run: Mapping[str, Any], split: str = "test") -> dict[str, list[float]] | None:
    """A run's per-dataset episode accuracies on `split`, or None for a record without them."""
    per = run.get("per_dataset" if split == "test" else "best_val_per_dataset")
    if not isinstance(per, Mapping) or not per:
        return None
    out = {}
    for name, entry in per.items():
        eps = entry.get("episode_accuracies") if isinstance(entry, Mapping) else None
        if not eps:
            return None
        out[str(name)] = [float(a) for a in eps]
    return out


def add_paired_differences(rows: list[dict[str, Any]], results: Iterable[Mapping[str, Any]], against: str, *,
                           resamples: int = 4000, seed: int = 0, split: str = "test") -> None:
    """Set each row's paired difference to the `against` method in its (instance, scenario,
    shots) column: ``diff`` (mean over paired seeds and episodes of row - reference, points),
    ``diff_low`` / ``diff_high`` (95% paired bootstrap interval, docs/statistics.md),
    ``diff_ci95`` (its half-width), ``significant`` (the interval excludes 0), ``paired_seeds``,
    and ``unpaired`` (why seeds or the whole row have no partner), so nothing is silently dropped.
    Runs pair by seed when they were evaluated on the same episodes (same eval seed, datasets
    and episode count); the reference row itself gets ``diff`` None and ``unpaired`` "reference".
    On ``split="val"`` the episodes are those of each run's selected validation."""
    results = [r for r in results if split_accuracy(r, split) is not None]
    ref = _reference(rows, against, "--against")
    if not any(r["method"] == ref for r in results):
        raise ConfigError(f"--against needs finished runs of '{against}' in these results; run it first or "
                          "name another method.")
    runs: dict[tuple[str, str, str, int], dict[int, Mapping[str, Any]]] = {}
    for r in results:
        runs.setdefault(_key(r), {})[int(r.get("seed", 0))] = r
    for row in rows:
        row.update(diff=None, diff_low=None, diff_high=None, diff_ci95=None, significant=None, paired_seeds=0,
                   unpaired=None)
        if row["method"] == ref:
            row["unpaired"] = "reference"
            continue
        mine, theirs = runs.get(_key(row), {}), runs.get((ref, *_cell_of(row)), {})
        if not mine:
            row["unpaired"] = "no finished runs"
            continue
        if not theirs:
            row["unpaired"] = f"no {ref} runs in this cell"
            continue
        diffs, keys, notes = [], [], []
        for s in sorted(set(mine) | set(theirs)):
            if s not in theirs:
                notes.append(f"seed {s}: no {ref} run")
                continue
            if s not in mine:
                notes.append(f"seed {s}: only {ref} ran")
                continue
            a, b = _episode_matrix(mine[s], split), _episode_matrix(theirs[s], split)
            if a is None or b is None:
                notes.append(f"seed {s}: no per-episode records")
                continue
            ev_a, ev_b = mine[s].get("eval_seed", 0), theirs[s].get("eval_seed", 0)
            if a.keys() != b.keys() or ev_a != ev_b or any(len(a[k]) != len(b[k]) for k in a):
                notes.append(f"seed {s}: different {'validation' if split == 'val' else 'test'} episodes")
                continue
            n = len(next(iter(a.values())))
            if any(len(v) != n for v in a.values()) or (diffs and n != len(diffs[0])):
                notes.append(f"seed {s}: episode count differs from the other seeds")
                continue
            # per episode: the mean over the scenario's datasets, as the run's accuracy averages them
            diffs.append([sum(a[k][i] - b[k][i] for k in a) / len(a) for i in range(n)])
            keys.append(ev_a)
        if notes:
            row["unpaired"] = "; ".join(notes)
        if diffs:
            res = paired_bootstrap(diffs, keys, resamples=resamples, seed=seed)
            row.update(diff=res.diff, diff_low=res.low, diff_high=res.high, diff_ci95=res.half_width,
                       significant=res.significant, paired_seeds=res.seeds)


def columns(rows: list[dict[str, Any]]) -> list[Cell]:
    """The table's (instance, scenario, shots) columns, in :func:`cell_order`."""
    return sorted({_cell_of(r) for r in rows}, key=lambda cell: cell_order(*cell))


def format_count(value: float | None) -> str:
    """A query count in a few characters: 0, 748, 52.1k, 1.36M."""
    if value is None:
        return "-"
    v = float(value)
    if v < 1000:
        return f"{v:.0f}"
    if v < 1e6:
        return f"{v / 1e3:.1f}k"
    return f"{v / 1e6:.2f}M"


def _diff_text(row: Mapping[str, Any]) -> str:
    if "unpaired" not in row:
        return ""
    if row["unpaired"] == "reference":
        return " (ref.)"
    text = ""
    if row.get("diff") is not None:
        mark = "*" if row["significant"] else ""
        text = f" (Δ {row['diff']:+.2f} [{row['diff_low']:+.2f}, {row['diff_high']:+.2f}]{mark})"
    if row.get("unpaired"):
        text += f" (unpaired: {row['unpaired']})"
    return text


def _cell(row: Mapping[str, Any] | None, bold: tuple[str, str]) -> str:
    if row is None:
        return "-"
    lost = int(row.get("failed", 0))
    if row["accuracy"] is None:
        return "FAILED" + (f" ({lost} runs)" if lost > 1 else "")
    text = f"{row['accuracy']:.2f} ± " + ("n/a" if row["ci95"] is None else f"{row['ci95']:.2f}")
    text = f"{bold[0]}{text}{bold[1]}" if row["best"] else text
    if row.get("gap_closed") is not None:
        text += f" (gap {row['gap_closed']:.1f}%)"
    text += _diff_text(row)
    return text + (f" ({lost} failed)" if lost else "")


def row_label(row: Mapping[str, Any]) -> str:
    """A row's method label with its access marker and, unless it fine-tunes, its evaluation rule."""
    rule = row.get("evaluation", "finetune")
    return (str(row["method"]) + ACCESS_MARK.get(row["access"], "")
            + ("" if rule == "finetune" else f" (eval: {rule})"))


def wide(rows: list[dict[str, Any]], bold: tuple[str, str]) -> tuple[list[str], list[list[str]]]:
    """Header and body of the method x (instance, scenario, shot) table: each cell's column is
    followed by its median API queries over seeds."""
    cols = columns(rows)
    index = {(r["method"], *_cell_of(r)): r for r in rows}
    methods = list(dict.fromkeys(r["method"] for r in rows))  # aggregate's order, or select_methods'
    label = {r["method"]: row_label(r) for r in rows}
    header = ["method"]
    metric = _metric_of(rows)
    on = f", mean {metric}" if metric else "" if all(r.get("split", "test") == "test" for r in rows) else ", meta-val"
    for inst, s, k in cols:
        header += [f"{s} {k}-shot ({inst}{on})", "queries"]
    body = []
    for m in methods:
        line = [label[m]]
        for c in cols:
            row = index.get((m, *c))
            line += [_cell(row, bold), format_count(row.get("queries") if row else None)]
        body.append(line)
    return header, body


def _metric_of(rows: list[dict[str, Any]]) -> str | None:
    """The training metric the rows tabulate (`compare --metric`), or None for accuracy."""
    return next((r["metric"] for r in rows if r.get("metric")), None)


def table_note(rows: list[dict[str, Any]]) -> str:
    """A sentence on the split when it is meta-val and one on the paired differences shown, or ""."""
    notes = []
    metric = _metric_of(rows)
    if metric:
        notes.append(f"Training metric '{metric}': each run's mean over the meta-iterations that logged it, then "
                     "the mean over seeds ± 95% CI (Student's t); a one-run cell has no CI.")
    if any(r.get("split") == "val" for r in rows):
        at = next((r["val_at"] for r in rows if r.get("val_at") is not None), None)
        upto = "" if at is None else f" up to meta-iteration {at}"
        notes.append(f"Meta-val accuracy of each run's selected (best) validation{upto}, the statistic settings "
                     "are chosen on; optimistic as an estimate, so compare rows, not absolute values.")
    own: dict[str, dict[str, None]] = {}  # method label -> the setting names its columns choose (ordered)
    for r in rows:
        for setting in r.get("column_settings") or []:
            own.setdefault(str(r["method"]), {})[setting.partition("=")[0]] = None
    if own:
        notes.append("Settings chosen per column (e.g. each cell's `tune` winner; the csv's settings column has "
                     "their values): " + "; ".join(f"{m}: {', '.join(keys)}" for m, keys in own.items()) + ".")
    ref = next((r["method"] for r in rows if r.get("unpaired") == "reference"), None)
    if ref is not None:
        notes.append(f"Δ: paired difference to {ref} in points, [95% paired bootstrap CI over seeds and episodes]; "
                     "* the CI excludes 0.")
    return " ".join(notes)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    header, body = wide(rows, ("**", "**"))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    note = table_note(rows)
    return "\n".join(lines) + "\n" + (f"\n{note}\n" if note else "")


def to_latex(rows: list[dict[str, Any]]) -> str:
    header, body = wide(rows, ("\\textbf{", "}"))
    esc = [[c.replace("±", "$\\pm$").replace("Δ", "$\\Delta$").replace("_", "\\_").replace("%", "\\%") for c in r]
           for r in [header] + body]
    lines = ["\\begin{tabular}{l" + "c" * (len(header) - 1) + "}", "\\toprule", " & ".join(esc[0]) + " \\\\",
             "\\midrule"] + [" & ".join(r) + " \\\\" for r in esc[1:]] + ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


#: The csv columns every table has; `gap` and the paired-difference columns follow when asked for.
CSV_FIELDS = ["method", "access", "instance", "scenario", "shots", "seeds", "mean", "ci95", "queries", "split",
              "evaluation", "data_free", "best", "wall_time_s", "failed"]
CSV_DIFF_FIELDS = ["diff", "diff_ci95", "diff_low", "diff_high", "significant", "paired_seeds", "unpaired"]


def to_csv(rows: list[dict[str, Any]]) -> str:
    """One line per row: CSV_FIELDS (``mean`` is the accuracy, ``queries`` the median over
    seeds), then ``metric`` with --metric (``mean`` is then that metric's), ``gap`` with --gap,
    CSV_DIFF_FIELDS with --against, and ``settings`` (the column's own values of the settings
    that differ between a row's columns, :func:`label_variants`) where a row has them."""
    import csv
    import io

    fields = list(CSV_FIELDS) + (["metric"] if any(r.get("metric") for r in rows) else [])
    fields += ["gap"] if any("gap_closed" in r for r in rows) else []
    fields += CSV_DIFF_FIELDS if any("unpaired" in r for r in rows) else []
    fields += ["settings"] if any(r.get("column_settings") for r in rows) else []
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({**r, "mean": r["accuracy"], "gap": r.get("gap_closed"),
                      "settings": "; ".join(r.get("column_settings") or [])} for r in rows)
    return buf.getvalue()


_HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: 1rem 0; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #ddd; padding: 0.35rem 0.8rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; } td strong { color: #1a7f37; }
.scroll { overflow-x: auto; } td span { display: block; white-space: nowrap; }
td span.note { font-size: 0.8rem; }
.note { color: #555; font-size: 0.9rem; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9rem; }
"""


def to_html(rows: list[dict[str, Any]], plots: Iterable[Any] = (), title: str = "dfml-bench results") -> str:
    """One self-contained HTML page: the table, then each plot (``dfml_bench.plots.Plot``) as an
    embedded base64 PNG. Nothing is fetched from elsewhere (no external scripts, styles or images)."""
    import base64
    import html

    bold = ("\x00b", "\x00/b")
    header, body = wide(rows, bold)

    def cell(text: str, data: bool) -> str:
        if not data:
            return html.escape(text)
        # a data cell's annotations (gap, paired difference, failures) each on a line of its own
        lines = re.split(r" (?=\()", text)
        tags = ["<span>"] + ['<span class="note">'] * (len(lines) - 1)
        spans = [f"{tag}{html.escape(line)}</span>" for tag, line in zip(tags, lines)]
        return "".join(spans).replace(bold[0], "<strong>").replace(bold[1], "</strong>")

    parts = [f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             f"<style>{_HTML_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             "<p class=\"note\">5-way accuracy (%) ± 95% CI per method × scenario × shots (data instance in "
             "parentheses), each followed by the median API queries over seeds; the best data-free "
             "result of each column is in bold green. Oracle rows use real training data: upper bounds, not "
             "data-free results.</p>",
             *([f"<p class=\"note\">{html.escape(table_note(rows))}</p>"] if table_note(rows) else []),
             "<div class=\"scroll\"><table id=\"results\"><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
             + "</tr></thead><tbody>"]
    parts += ["<tr>" + "".join(f"<td>{cell(c, i > 0)}</td>" for i, c in enumerate(r)) + "</tr>" for r in body]
    parts.append("</tbody></table></div>")
    plots = list(plots)
    if plots:
        parts.append("<h2>Figures</h2>")
    for p in plots:
        data = base64.b64encode(p.png).decode("ascii")
        parts.append(f"<figure id=\"{html.escape(p.name)}\"><img alt=\"{html.escape(p.caption)}\" "
                     f"src=\"data:image/png;base64,{data}\"><figcaption>{html.escape(p.caption)}</figcaption></figure>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def to_rich(rows: list[dict[str, Any]]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    bold = ("\x00b", "\x00/b")
    header, body = wide(rows, bold)

    def cell(text: str) -> str:  # labels such as `bidf_mkd [q=5]` are text, not rich markup
        return escape(text).replace(bold[0], "[bold green]").replace(bold[1], "[/]")

    has_oracle = any(r["access"] == "real_data" for r in rows)
    caption = " ".join(filter(None, ["oracle rows use real training data and are upper bounds, not data-free "
                                     "results." if has_oracle else "", table_note(rows)]))
    metric = _metric_of(rows)
    title = (f"training metric '{metric}' (mean over seeds) ± 95% CI and median API queries" if metric
             else "5-way accuracy (%) ± 95% CI and median API queries; best data-free result in green")
    table = Table(title=title,
                  caption=escape(caption) or None)
    for h in header:
        table.add_column(escape(h), justify="left" if h == "method" else "right")
    for r in body:
        table.add_row(*(cell(c) for c in r))
    return table
