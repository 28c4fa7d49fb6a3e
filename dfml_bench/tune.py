"""Hyper-parameter selection on meta-val only: the search spaces and studies of `dfml-bench tune`.

A method declares the few settings worth tuning in its registration metadata, DomainBed's
``hparams_registry`` style: ``search_space={"train.meta_lr": {"log_uniform": [1e-4, 1e-2]}}``.
Keys are config paths (``train.meta_lr``, ``method.bidf_mkd.patience``,
``meta_learner.maml.inner_lr``), each with one distribution:

- ``{choice: [a, b, ...]}``: one of the listed values;
- ``{uniform: [low, high]}`` / ``{log_uniform: [low, high]}``: a float (log: low > 0);
- ``{int_uniform: [low, high]}`` / ``{int_log_uniform: [low, high]}``: an integer, both ends included.

The default of each setting is its value in the config being tuned (profile, --config,
--set): trial 0 runs the defaults, trial ``i > 0`` draws every setting from a generator
seeded by (search seed, i), so adding trials never changes earlier ones. Trials are runs in
*val-only* mode (``val_only: true`` in their resolved config): the runner drops each
dataset's meta-test split before the method is built and scores the run by its best meta-val
accuracy; their results are marked ``kind: trial`` and live under the study directory,
apart from table runs. This module imports no torch.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import io
import json
import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from dfml_bench.errors import ConfigError, did_you_mean

DISTRIBUTIONS = ("choice", "uniform", "log_uniform", "int_uniform", "int_log_uniform")
#: Top-level settings a search space may not set: they choose runs or machines, not a run's behaviour.
NOT_TUNABLE = frozenset({"shots", "seeds", "profile", "device", "data_root", "cache_dir", "loggers", "pool_dir",
                         "workers", "instance"})
#: The key of a resolved run config that marks a tuning trial (absent from table runs).
VAL_ONLY = "val_only"


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One tuned setting: a config path and the distribution its values are drawn from."""

    key: str
    dist: str
    values: tuple[Any, ...]  # the choices, or (low, high)

    def sample(self, rng: random.Random) -> Any:
        """A value drawn with `rng` (floats rounded to 3 significant digits, for readable configs)."""
        if self.dist == "choice":
            return copy.deepcopy(self.values[rng.randrange(len(self.values))])
        low, high = self.values
        if self.dist == "int_uniform":
            return rng.randint(int(low), int(high))
        if self.dist == "int_log_uniform":
            return int(min(high, max(low, round(math.exp(rng.uniform(math.log(low), math.log(high)))))))
        value = rng.uniform(low, high) if self.dist == "uniform" else math.exp(rng.uniform(math.log(low),
                                                                                               math.log(high)))
        return float(f"{value:.3g}")

    def extremes(self) -> list[Any]:
        """The values that bound the space (every choice, or both ends): each must be a valid setting."""
        if self.dist == "choice":
            return list(self.values)
        low, high = self.values
        return [int(low), int(high)] if self.dist.startswith("int_") else [float(low), float(high)]

    def describe(self) -> str:
        """'log_uniform[0.0001, 0.01]' or 'choice[2, 4, 6]'."""
        return f"{self.dist}[{', '.join(map(str, self.values))}]"


def parse_space(space: Any, where: str) -> list[Dimension]:
    """Validate a search space mapping (``key: {distribution: values}``); `where` names its source."""
    if space is None:
        return []
    if not isinstance(space, Mapping):
        raise ConfigError(f"{where} must map setting paths to distributions (e.g. train.meta_lr: "
                          f"{{log_uniform: [1e-4, 1e-2]}}), not {type(space).__name__}.")
    dims = []
    for key, spec in space.items():
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(f"{where}: key {key!r} must be a setting path such as train.meta_lr.")
        dims.append(_dimension(key.strip(), spec, where))
    return dims


def _dimension(key: str, spec: Any, where: str) -> Dimension:
    example = "{log_uniform: [1e-4, 1e-2]} or {choice: [1, 2, 4]}"
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ConfigError(f"{where}: '{key}' must be one distribution such as {example}, not {spec!r}.")
    dist, values = next(iter(spec.items()))
    if dist not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: '{key}' has unknown distribution '{dist}'." + did_you_mean(str(dist), DISTRIBUTIONS)
                          + f" Use one of {', '.join(DISTRIBUTIONS)}.")
    if dist == "choice":
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"{where}: '{key}' choice needs a non-empty list of values, not {values!r}.")
        return Dimension(key, dist, tuple(values))
    if (not isinstance(values, (list, tuple)) or len(values) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
            or not values[0] < values[1]):
        raise ConfigError(f"{where}: '{key}' {dist} needs [low, high] with finite numbers low < high, not {values!r}.")
    if dist.startswith("int_") and not all(float(v).is_integer() for v in values):
        raise ConfigError(f"{where}: '{key}' {dist} needs integer bounds, not {values!r}.")
    if "log" in dist and values[0] <= 0:
        raise ConfigError(f"{where}: '{key}' {dist} needs low > 0 (a log scale), not {values[0]!r}.")
    return Dimension(key, dist, tuple(values))


def load_space_file(path: Path) -> list[Dimension]:
    """A search space from a YAML file (it replaces the method's declared space)."""
    from dfml_bench.config import load_yaml

    dims = parse_space(load_yaml(Path(path)), f"search space file '{path}'")
    if not dims:
        raise ConfigError(f"search space file '{path}' declares no setting; add at least one "
                          "(e.g. train.meta_lr: {log_uniform: [1e-4, 1e-2]}).")
    return dims


def nested(key: str, value: Any) -> dict[str, Any]:
    """'a.b.c', v -> {'a': {'b': {'c': v}}} (with the config's section aliases)."""
    from dfml_bench.config import ALIASES, nest

    parts = key.split(".")
    parts[0] = ALIASES.get(parts[0], parts[0])
    return nest(parts, value)


def check_key(key: str, raw: Mapping[str, Any], registry: Any, where: str) -> None:
    """Reject a key that names no setting, with a 'did you mean'."""
    from dfml_bench.config import ALIASES, ALL_KEYS, COMPONENT_SECTIONS, SECTIONS, TOP_KEYS
    from dfml_bench.params import describe

    parts = key.split(".")
    head = ALIASES.get(parts[0], parts[0])
    if head not in ALL_KEYS:
        raise ConfigError(f"{where}: unknown setting '{key}'." + did_you_mean(parts[0], ALL_KEYS))
    if head in TOP_KEYS:
        if len(parts) != 1 or head in NOT_TUNABLE:
            raise ConfigError(f"{where}: '{key}' cannot be tuned; tune settings of train, eval or a component.")
        return
    if head in SECTIONS:
        fields = [p.name for p in describe(SECTIONS[head])]
        if len(parts) != 2 or parts[1] not in fields:
            raise ConfigError(f"{where}: unknown setting '{key}'." + did_you_mean(".".join(parts[1:]), fields))
        return
    kind = COMPONENT_SECTIONS[head]
    if head == "launcher":
        raise ConfigError(f"{where}: '{key}' cannot be tuned (the launcher decides where runs execute).")
    names = registry.names(kind)
    if len(parts) == 3:
        if parts[1] not in names:
            raise ConfigError(f"{where}: '{key}' names no {kind} '{parts[1]}'." + did_you_mean(parts[1], names))
        name = parts[1]
    elif len(parts) == 2:
        section = raw.get(head) or {}
        name = section.get("name") if isinstance(section, Mapping) else None
        if not isinstance(name, str) or name not in names:
            raise ConfigError(f"{where}: '{key}' needs the component's name, as {head}.NAME.{parts[1]}.")
    else:
        raise ConfigError(f"{where}: '{key}' must be {head}.NAME.PARAMETER (e.g. method.bidf_mkd.patience).")
    params = [p.name for p in describe(registry.get(kind, name).params)]
    if parts[-1] not in params:
        raise ConfigError(f"{where}: unknown setting '{key}': {kind} '{name}' has no parameter '{parts[-1]}'."
                          + did_you_mean(parts[-1], params))


def default_value(key: str, raw: Mapping[str, Any], registry: Any) -> Any:
    """The value a key has in the tuned config (what trial 0 runs): set in it, inherited by a variant
    from its base's configuration, or the declared default."""
    from dfml_bench.config import ALIASES, COMPONENT_SECTIONS, SECTIONS, TopLevel, _inherited
    from dfml_bench.params import describe

    parts = key.split(".")
    parts[0] = ALIASES.get(parts[0], parts[0])
    node: Any = raw
    for i, part in enumerate(parts):
        if not isinstance(node, Mapping) or part not in node:
            break
        node = node[part]
    else:
        return node
    head = parts[0]
    if head in SECTIONS:
        owner: Any = SECTIONS[head]
    elif head in COMPONENT_SECTIONS:
        section = raw.get(head) or {}
        name = parts[1] if len(parts) == 3 else section.get("name")
        comp = registry.get(COMPONENT_SECTIONS[head], str(name))
        inherited = _inherited(section, head, registry, comp)  # a variant runs its base's configured values
        if parts[-1] in inherited:
            return inherited[parts[-1]]
        owner = comp.params
    else:
        owner = TopLevel
    return next((p.default for p in describe(owner) if p.name == parts[-1]), None)


@dataclasses.dataclass
class Trial:
    """One trial: its index, the sampled settings (empty for trial 0) and its resolved runs (one per seed)."""

    index: int
    settings: dict[str, Any]
    runs: list[dict[str, Any]]


@dataclasses.dataclass
class Study:
    """A random search of one method on one scenario and shot: its trials and where it is stored."""

    method: str
    scenario: str
    shots: int
    space: list[Dimension]
    search_seed: int
    trials: list[Trial]
    root: Path
    base_overlay: dict[str, Any]
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.root.name


def with_settings(raw: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` with each tuned setting applied (like --set items after all others)."""
    from dfml_bench.config import canonicalise, deep_merge, normalise_sections

    out = dict(raw)
    for key, value in settings.items():
        out = canonicalise(deep_merge(out, normalise_sections(nested(key, value))))
    return out


def _resolve(raw: Mapping[str, Any], registry: Any) -> list[dict[str, Any]]:
    from dfml_bench.config import resolve_runs

    runs = resolve_runs(raw, registry)
    for run in runs:
        run[VAL_ONLY] = True
    return runs


def _strip(run: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k not in (VAL_ONLY, "seed")}


def declared_space(registry: Any, method: str) -> list[Dimension]:
    """The search space a method declares in its registration metadata (empty if none)."""
    comp = registry.get("method", method)
    return parse_space(comp.meta.get("search_space"), f"the search space of method '{comp.name}'")


def plan_study(raw: Mapping[str, Any], registry: Any, *, trials: int, space: list[Dimension], search_seed: int,
               results_root: Path, base_overlay: Mapping[str, Any], where: str) -> Study:
    """Check the space against the config and draw the trials' settings (no run executes)."""
    from dfml_bench.config import scenario_label

    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, not {trials}.")
    base_runs = _resolve(raw, registry)
    methods = {r["method"]["name"] for r in base_runs}
    scenarios = {scenario_label(r) for r in base_runs}
    shots = {r["shots"] for r in base_runs}
    if len(methods) != 1 or len(scenarios) != 1 or len(shots) != 1:
        raise ConfigError("tune selects settings for one method, one scenario and one shot at a time; "
                          "pass a single --method, --scenario and --shots.")
    method, scenario, shot = methods.pop(), scenarios.pop(), shots.pop()
    base = _strip(base_runs[0])
    for dim in space:
        check_key(dim.key, raw, registry, where)
        changed = False
        for value in dim.extremes():
            try:
                runs = _resolve(with_settings(raw, {dim.key: value}), registry)
            except ConfigError as exc:
                raise ConfigError(f"{where}: '{dim.key}' = {value!r} is not a valid setting: {exc}") from None
            changed = changed or _strip(runs[0]) != base
        if not changed:
            raise ConfigError(f"{where}: '{dim.key}' does not change the runs of method '{method}' (it sets a "
                              "component or parameter the method does not use); drop it from the space.")
    if not space and trials > 1:
        trials = 1  # nothing to draw: every trial would be trial 0
    drawn = [Trial(0, {}, base_runs)]
    for i in range(1, trials):
        rng = random.Random(f"dfml-bench-tune/{search_seed}/{i}")
        settings = {dim.key: dim.sample(rng) for dim in space}
        drawn.append(Trial(i, settings, _resolve(with_settings(raw, settings), registry)))
    blob = json.dumps({"base": base, "space": [dataclasses.asdict(d) for d in space], "seed": search_seed,
                       "seeds": sorted(r["seed"] for r in base_runs)}, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    root = Path(results_root) / "tune" / f"{method}-{scenario}-{shot}shot-{digest}"
    overlay = dict(base_overlay)
    overlay.setdefault("scenario", {"name": base_runs[0]["scenario"]["name"]})
    defaults = {dim.key: default_value(dim.key, raw, registry) for dim in space}
    return Study(method, scenario, shot, space, search_seed, drawn, root, overlay, defaults)


def trial_rows(study: Study, outcomes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per trial: its settings, mean best meta-val accuracy over its seeds, queries, status.

    `outcomes` maps a run id to its finished result (a dict) or its error text (a str).
    """
    from dfml_bench.config import run_id

    rows = []
    for trial in study.trials:
        values = {dim.key: trial.settings.get(dim.key, study.defaults.get(dim.key)) for dim in study.space}
        results = [outcomes.get(run_id(run)) for run in trial.runs]
        done = [r for r in results if isinstance(r, dict)]
        errors = [r for r in results if isinstance(r, str)]
        row: dict[str, Any] = {"trial": trial.index, **values, "seeds": len(trial.runs)}
        if len(done) == len(results):
            row["val_acc"] = sum(r["best_val_accuracy"] for r in done) / len(done)
            row["queries"] = sorted(r["queries"] for r in done)[len(done) // 2]
            row["wall_time_s"] = sum(r["wall_time_s"] for r in done)
            row["status"] = "done"
        else:
            row.update(val_acc=None, queries=None, wall_time_s=None,
                       status=f"failed: {errors[0]}" if errors else "not run")
        rows.append(row)
    return rows


def winner(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The finished trial with the best mean meta-val accuracy (the lower trial index wins a tie)."""
    done = [r for r in rows if r["val_acc"] is not None]
    return max(done, key=lambda r: (r["val_acc"], -r["trial"])) if done else None


def winner_overlay(study: Study, trial: Trial) -> dict[str, Any]:
    """The config overlay of a trial: the study's own layers (--config, --set, selections) plus its settings."""
    from dfml_bench.config import deep_merge

    overlay = copy.deepcopy(study.base_overlay)
    for key, value in trial.settings.items():
        overlay = deep_merge(overlay, nested(key, value))
    return overlay


def _table_text(study: Study, rows: Sequence[Mapping[str, Any]], budget: Mapping[str, Any]) -> tuple[str, str]:
    keys = ["trial", *[d.key for d in study.space], "seeds", "val_acc", "queries", "wall_time_s", "status"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in keys})
    best = winner(rows)

    def cell(row: Mapping[str, Any], key: str) -> str:
        value = row.get(key)
        if key == "val_acc":
            text = "-" if value is None else f"{value:.2f}"
            return f"**{text}**" if best is not None and row["trial"] == best["trial"] else text
        if key == "wall_time_s":
            return "-" if value is None else f"{value:.0f}"
        return "-" if value is None else str(value).replace("|", "/")

    space = ", ".join(f"`{d.key}` ~ {d.describe()}" for d in study.space) or "none (the defaults only)"
    lines = [f"# tune: {study.method} on {study.scenario}, {study.shots}-shot",
             "",
             f"Selection on meta-val only (best meta-val accuracy of each run, mean over its seeds); the "
             f"meta-test split was never loaded. {len(study.trials)} trial(s) of a seeded random search "
             f"(search seed {study.search_seed}); trial 0 runs the defaults. Search space: {space}.",
             "",
             "Per-trial budget: " + ", ".join(f"{k} {v}" for k, v in budget.items()) + ".",
             "",
             "| " + " | ".join(keys) + " |",
             "|" + "|".join("---" for _ in keys) + "|"]
    lines += ["| " + " | ".join(cell(row, k) for k in keys) + " |" for row in rows]
    if best is not None:
        lines += ["", f"Winner: trial {best['trial']} (meta-val {best['val_acc']:.2f}); its overlay is "
                      f"`winner.yaml`: `dfml-bench run --profile {budget['profile']} --config winner.yaml --seeds 0,1,2 "
                      "--instance sealed`."]
    return "\n".join(lines) + "\n", buf.getvalue()


def budget_of(study: Study) -> dict[str, Any]:
    """What each trial may spend, as recorded with the table."""
    run = study.trials[0].runs[0]
    return {"profile": run.get("profile"), "meta_iterations": run["train"]["meta_iterations"],
            "val_episodes": run["train"]["val_episodes"], "val_every": run["train"]["val_every"],
            "query budget": run.get("budget") or "unlimited", "seeds per trial": len(study.trials[0].runs)}


def write_study(study: Study, rows: Sequence[Mapping[str, Any]]) -> Path | None:
    """Write trials.md / trials.csv / study.json and, when a trial finished, winner.yaml; return its path."""
    from dfml_bench import store

    budget = budget_of(study)
    md, csv_text = _table_text(study, rows, budget)
    store.atomic_write_text(study.root / "trials.md", md)
    store.atomic_write_text(study.root / "trials.csv", csv_text)
    best = winner(rows)
    record = {"method": study.method, "scenario": study.scenario, "shots": study.shots,
              "trials": len(study.trials), "search_seed": study.search_seed,
              "space": {d.key: {d.dist: list(d.values)} for d in study.space}, "defaults": study.defaults,
              "budget": budget,
              "winner": None if best is None else {"trial": best["trial"], "val_acc": best["val_acc"],
                                                   "settings": study.trials[best["trial"]].settings},
              "rows": list(rows)}
    store.atomic_write_json(study.root / "study.json", record)
    if best is None:
        return None
    trial = study.trials[best["trial"]]
    header = (f"# dfml-bench tune winner: {study.method} on {study.scenario}, {study.shots}-shot: trial "
              f"{trial.index} of {len(study.trials)}, meta-val {best['val_acc']:.2f} (profile "
              f"{budget['profile']}).\n# Use it with the same profile: dfml-bench run --profile {budget['profile']} "
              "--config winner.yaml --seeds 0,1,2 --instance sealed\n")
    path = study.root / "winner.yaml"
    store.atomic_write_text(path, header + yaml.safe_dump(winner_overlay(study, trial), sort_keys=True))
    return path


@dataclasses.dataclass(frozen=True)
class Winner:
    """A finished study's winner: its overlay file, trial and meta-val score."""

    path: Path
    trial: int
    val_acc: float


def studies_dir(root: Path) -> Path:
    """Where `tune` put its studies, given its --results directory or that directory's ``tune/``."""
    return root / "tune" if (root / "tune").is_dir() else root


def find_winners(root: Path) -> dict[tuple[str, str, int, str], list[Winner]]:
    """Every study winner under `root` (a results root or its ``tune/`` folder), keyed by
    (method, scenario label, shots, profile)."""
    base = studies_dir(root)
    if not base.is_dir():
        raise ConfigError(f"--tuned '{root}' is not a directory; pass the --results directory your "
                          "`dfml-bench tune` runs wrote to.")
    found: dict[tuple[str, str, int, str], list[Winner]] = {}
    for record in sorted(base.glob("*/study.json")):
        try:
            study = json.loads(record.read_text())
            best, key = study.get("winner"), (str(study["method"]), str(study["scenario"]), int(study["shots"]),
                                               str(study["budget"]["profile"]))
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"'{record}' is not a readable study record; re-run the `dfml-bench tune` command "
                              "that wrote it, or remove its directory.") from None
        if best and (record.parent / "winner.yaml").is_file():
            found.setdefault(key, []).append(Winner(record.parent / "winner.yaml", int(best["trial"]),
                                                    float(best["val_acc"])))
    return found


def tuned_runs(registry: Any, root: Path, *, profile: str, config_file: str | None, sets: Sequence[str],
               flags: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The grid of `run --tuned ROOT`: each (method, scenario, shots) cell resolved with its study's
    winner overlay between the profile and --config / --set / flags, so a cell's runs equal those of
    `run --config winner.yaml`. A method that declares no search space runs its defaults. Returns
    the runs and one line per cell naming the settings it uses."""
    from dfml_bench.config import (build_raw_config, load_yaml, resolve_runs, scenario_label, selected_names,
                                   top_level)

    winners = find_winners(root)
    results = root.parent if root.name == "tune" and studies_dir(root) == root else root  # tune's --results
    raw = build_raw_config(profile, config_file, sets, flags)
    top = top_level(raw)

    def items(kind: str) -> list[str]:  # the flag's own items keep scenario files as paths
        given = flags.get(kind)
        return [v.strip() for v in str(given).split(",") if v.strip()] if given else selected_names(raw, kind)

    runs: list[dict[str, Any]] = []
    lines: list[str] = []
    for method in items("method"):
        for scenario in items("scenario"):
            for shots in top.shots:
                cell = {**flags, "method": method, "scenario": scenario, "shots": [shots]}
                plain = resolve_runs(build_raw_config(profile, config_file, sets, cell), registry)
                m_name = plain[0]["method"]["name"]
                s_label = scenario_label(plain[0])
                where = f"{m_name} on {s_label} {shots}-shot"
                hits = winners.get((m_name, s_label, shots, top.profile), [])
                if len(hits) > 1:
                    raise ConfigError(f"{len(hits)} finished studies of {where} (profile {top.profile}) under "
                                      f"'{root}': {', '.join(h.path.parent.name for h in hits)}; keep the one "
                                      "the table should use (move the others elsewhere).")
                if hits:
                    lines.append(f"{where}: trial {hits[0].trial} of {hits[0].path.parent.name} (meta-val "
                                 f"{hits[0].val_acc:.2f})")
                    overlay = load_yaml(hits[0].path)
                    runs += resolve_runs(build_raw_config(profile, config_file, sets, cell, tuned=overlay), registry)
                elif declared_space(registry, m_name):
                    raise ConfigError(f"no finished study of {where} (profile {top.profile}) under '{root}'; "
                                      f"run `dfml-bench tune --method {m_name} --scenario {scenario} --shots "
                                      f"{shots} --profile {top.profile} --results {results}` first, or drop --tuned.")
                else:
                    lines.append(f"{where}: its defaults (the method declares no search space)")
                    runs += plain
    return runs, lines
