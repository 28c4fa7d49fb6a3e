"""Summary tables of finished runs: mean +- 95% CI per method x scenario x shot.

Across seeds the cell is the mean of the per-seed accuracies; its CI is the per-run
episode CI for a single seed, and 1.96 * sample std / sqrt(n) across seeds otherwise.
The best data-free cell of each column is marked; non-data-free rows (oracles) carry a
marker and are never marked best, so nobody mistakes an upper bound for a result.
Failed runs (``error.json``, see `store.iter_failures`) are counted per cell: a cell whose
runs all failed reads FAILED, not blank, and a partly failed cell says how many failed.
Optionally each cell also gives the gap it closes between a floor and a ceiling method
(`add_gap_closed`), e.g. (bidf_mkd - random) / (maml_oracle - random).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from dfml_bench.errors import ConfigError
from dfml_bench.evaluation import mean_ci95

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
    version) as ``method [key=value, ...]``, naming the differing settings, so that a sweep
    (e.g. several `--set estimator.zo_forward.q=Q` runs) is never averaged into one row as if
    its runs were seeds. A setting counts as differing when the runs that have it disagree.
    A setting that some runs lack while holding its section (an option the installed code no
    longer declares, e.g. a renamed one: `with_current_defaults` has filled every declared one)
    differs too, so such runs are not pooled with runs that never had it.
    `configs` maps each result's ``run_dir`` to its config (None: unknown, left unlabelled).
    The plain method name stays in ``base_method``."""
    by_method: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for r in results:
        r.setdefault("base_method", r["method"])
        config = configs.get(str(r.get("run_dir")))
        if config is not None:
            by_method.setdefault(r["method"], []).append((r, _settings(config)))
    for runs in by_method.values():
        keys = sorted({k for _, flat in runs for k in flat})
        differing = [k for k in keys if len({repr(flat.get(k, _ABSENT)) for _, flat in runs
                                             if k in flat or _holds_section_of(flat, k)}) > 1]
        for r, flat in runs:
            short = ", ".join(f"{'.'.join(k.split('.')[-2:])}={flat[k]}" for k in differing if k in flat)
            if short:
                r["method"] = f"{r['base_method']} [{short}]"


def _natural(key: tuple[str, str, int]) -> tuple[list[Any], str, int]:
    """Sort key: numbers inside method labels compare as numbers ('q=5' before 'q=10')."""
    parts = re.split(r"(\d+)", key[0])
    return [int(p) if i % 2 else p for i, p in enumerate(parts)], key[1], key[2]


def aggregate(results: Iterable[Mapping[str, Any]],
              failures: Iterable[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """One row per (method, scenario, shots) with mean, CI, seeds, queries, wall time and the
    number of failed runs; a cell with only failed runs has ``accuracy`` None."""
    groups: dict[tuple[str, str, int], list[Mapping[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["method"], r["scenario"], int(r["shots"])), []).append(r)
    failed: dict[tuple[str, str, int], list[Mapping[str, Any]]] = {}
    for f in failures:
        failed.setdefault((f["method"], f["scenario"], int(f["shots"])), []).append(f)
    rows = []
    for key in sorted(set(groups) | set(failed), key=_natural):
        method, scenario, shots = key
        runs, lost = groups.get(key, []), failed.get(key, [])
        if not runs:
            rows.append({"method": method, "base_method": lost[0].get("base_method", method),
                         "scenario": scenario, "shots": shots, "accuracy": None, "ci95": None,
                         "seeds": 0, "failed": len(lost), "access": lost[0].get("access", "black"),
                         "data_free": bool(lost[0].get("data_free", True)), "queries": None, "wall_time_s": None})
            continue
        accs = [float(r["accuracy"]) for r in runs]
        # over seeds: Student's t (a few runs); one run keeps its CI over the test episodes
        mean, ci = mean_ci95(accs, student_t=True) if len(accs) > 1 else (accs[0], float(runs[0]["ci95"]))
        rows.append({"method": method, "base_method": runs[0].get("base_method", method),
                     "scenario": scenario, "shots": shots, "accuracy": mean, "ci95": ci,
                     "seeds": len(runs), "failed": len(lost), "access": runs[0].get("access", "black"),
                     "data_free": bool(runs[0].get("data_free", True)),
                     "queries": sum(int(r.get("queries", 0)) for r in runs) / len(runs),
                     "wall_time_s": sum(float(r.get("wall_time_s", 0.0)) for r in runs) / len(runs)})
    mark_best(rows)
    return rows


def mark_best(rows: list[dict[str, Any]]) -> None:
    """Set each row's ``best``: the highest data-free accuracy of its (scenario, shots) column."""
    best: dict[tuple[str, int], float] = {}
    for row in rows:
        if row["data_free"] and row["accuracy"] is not None:
            key = (row["scenario"], row["shots"])
            best[key] = max(best.get(key, float("-inf")), row["accuracy"])
    for row in rows:
        row["best"] = (row["data_free"] and row["accuracy"] is not None
                       and row["accuracy"] == best.get((row["scenario"], row["shots"])))


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


def add_gap_closed(rows: list[dict[str, Any]], floor: str, ceiling: str) -> None:
    """Set each row's ``gap_closed``: 100 (acc - floor) / (ceiling - floor), within its (scenario,
    shots) column, where both reference methods have a result there and differ (else None)."""
    labels = {r["method"] for r in rows}
    for name in (floor, ceiling):  # a base name stands for its only variant
        variants = {r["method"] for r in rows if _base(r) == name}
        if name not in labels and len(variants) > 1:
            raise ConfigError(f"--gap: '{name}' has several configurations here ({', '.join(sorted(variants))}); "
                              "name one of them.")
    floor, ceiling = (next((r["method"] for r in rows if name in (r["method"], _base(r))), name)
                      for name in (floor, ceiling))
    acc = {(r["method"], r["scenario"], r["shots"]): r["accuracy"] for r in rows}
    for name in (floor, ceiling):
        if not any(m == name and a is not None for (m, _, _), a in acc.items()):
            raise ConfigError(f"--gap needs results of '{name}' in these results; run it first or name "
                              "another method.")
    for r in rows:
        lo, hi = acc.get((floor, r["scenario"], r["shots"])), acc.get((ceiling, r["scenario"], r["shots"]))
        ok = None not in (lo, hi, r["accuracy"]) and hi != lo and r["method"] not in (floor, ceiling)
        r["gap_closed"] = 100.0 * (r["accuracy"] - lo) / (hi - lo) if ok else None


def columns(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return sorted({(r["scenario"], r["shots"]) for r in rows}, key=lambda c: (c[0], c[1]))


def _cell(row: Mapping[str, Any] | None, bold: tuple[str, str]) -> str:
    if row is None:
        return "-"
    lost = int(row.get("failed", 0))
    if row["accuracy"] is None:
        return "FAILED" + (f" ({lost} runs)" if lost > 1 else "")
    text = f"{row['accuracy']:.2f} ± {row['ci95']:.2f}"
    text = f"{bold[0]}{text}{bold[1]}" if row["best"] else text
    if row.get("gap_closed") is not None:
        text += f" (gap {row['gap_closed']:.1f}%)"
    return text + (f" ({lost} failed)" if lost else "")


def wide(rows: list[dict[str, Any]], bold: tuple[str, str]) -> tuple[list[str], list[list[str]]]:
    """Header and body of the method x (scenario, shot) table."""
    cols = columns(rows)
    index = {(r["method"], r["scenario"], r["shots"]): r for r in rows}
    methods = list(dict.fromkeys(r["method"] for r in rows))  # aggregate's order, or select_methods'

    access = {r["method"]: r["access"] for r in rows}
    header = ["method"] + [f"{s} {k}-shot" for s, k in cols]
    body = [[m + ACCESS_MARK.get(access[m], "")] + [_cell(index.get((m, s, k)), bold) for s, k in cols]
            for m in methods]
    return header, body


def to_markdown(rows: list[dict[str, Any]]) -> str:
    header, body = wide(rows, ("**", "**"))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n"


def to_latex(rows: list[dict[str, Any]]) -> str:
    header, body = wide(rows, ("\\textbf{", "}"))
    esc = [[c.replace("±", "$\\pm$").replace("_", "\\_") for c in r] for r in [header] + body]
    lines = ["\\begin{tabular}{l" + "c" * (len(header) - 1) + "}", "\\toprule", " & ".join(esc[0]) + " \\\\",
             "\\midrule"] + [" & ".join(r) + " \\\\" for r in esc[1:]] + ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    fields = ["method", "scenario", "shots", "accuracy", "ci95", "seeds", "access", "data_free", "best",
              "queries", "wall_time_s", "failed"] + (["gap_closed"] if any("gap_closed" in r for r in rows) else [])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


_HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: 1rem 0; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #ddd; padding: 0.35rem 0.8rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; } td strong { color: #1a7f37; }
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

    def cell(text: str) -> str:
        return html.escape(text).replace(bold[0], "<strong>").replace(bold[1], "</strong>")

    parts = [f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             f"<style>{_HTML_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             "<p class=\"note\">5-way accuracy (%) ± 95% CI per method × scenario × shots; the best data-free "
             "result of each column is in bold green. Oracle rows use real training data: upper bounds, not "
             "data-free results.</p>",
             "<table id=\"results\"><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
             + "</tr></thead><tbody>"]
    parts += ["<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in body]
    parts.append("</tbody></table>")
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
    from rich.table import Table

    header, body = wide(rows, ("[bold green]", "[/]"))
    has_oracle = any(r["access"] == "real_data" for r in rows)
    table = Table(title="5-way accuracy (%) ± 95% CI; best data-free result in green",
                  caption="oracle rows use real training data and are upper bounds, not data-free results"
                  if has_oracle else None)
    for h in header:
        table.add_column(h, justify="left" if h == "method" else "right")
    for r in body:
        table.add_row(*r)
    return table
