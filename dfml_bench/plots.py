"""Report figures of finished runs as PNG bytes (matplotlib, Agg canvas; no pyplot global state).

* ``queries-<scenario>-<K>shot.png``: meta-val accuracy against cumulative API queries, one line
  per method (mean over seeds at each validation point), labelled at its end; methods that
  query nothing (oracles, white-box, floors) are dashed horizontal lines at their best val
  accuracy, labelled with their name.
* ``accuracy-<scenario>-<K>shot.png``: meta-test accuracy with its 95% CI per method, value
  written on each bar; oracle (real-data) bars are hatched; failed cells say FAILED.
* ``recovered-<scenario>-<K>shot.png``: the recovered-image grid each run saved
  (``recovered.png``), one panel per method (its lowest seed).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dfml_bench.errors import ConfigError
from dfml_bench.report import cell_order
from dfml_bench.store import log_dir

RECOVERED_FILE = "recovered.png"
ORACLE_MARK = {"real_data": " (oracle)", "white": " (white-box)"}


@dataclasses.dataclass(frozen=True)
class Plot:
    """One figure: its file name, a caption and the PNG bytes."""

    name: str
    caption: str
    png: bytes


def require_matplotlib() -> Any:
    """The matplotlib package, or a ConfigError with the install hint."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plots need matplotlib, which is not installed; pip install 'dfml-bench[report]'.") from None
    return matplotlib


def _figure(width: float, height: float) -> Any:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _label(r: Mapping[str, Any]) -> str:
    return str(r["method"]) + ORACLE_MARK.get(str(r.get("access", "black")), "")


def _cells(results: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int], list[Mapping[str, Any]]]:
    """Runs or rows by figure cell, in the order of the table's columns (SS, SH, MH; then shots)."""
    cells: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    order: dict[tuple[str, int], tuple[str, int, str, int]] = {}
    for r in results:  # runs of another data instance than `dev` get figures of their own
        instance = str(r.get("instance") or "dev")
        scenario = str(r["scenario"]) if instance == "dev" else f"{r['scenario']}-{instance}"
        key = (scenario, int(r["shots"]))
        cells.setdefault(key, []).append(r)
        order[key] = cell_order(instance, str(r["scenario"]), int(r["shots"]))
    return {key: cells[key] for key in sorted(cells, key=lambda k: order[k])}


#: The x axes of validation curves: the metrics field, the axis label, and the figure's name and subject.
CURVE_AXES = {
    "queries": ("queries", "cumulative API queries (images)", "queries", "API queries"),
    "wall_time": ("wall_time", "wall time (s, as recorded: machine and load dependent)", "time", "wall time"),
    "iteration": ("iteration", "meta-iterations", "iterations", "meta-iterations"),
}
#: Longest method label drawn at its curve's end; a longer one moves all labels into a legend.
DIRECT_LABEL_CHARS = 28
#: Vertical room one end label takes, in points (9 pt bold text and a little air).
END_LABEL_PT = 11.0


def val_curve(run_dir: Path, x: str = "queries") -> list[tuple[int, float, float]]:
    """(iteration, x, val accuracy) of each validation in a run's metrics; x is the cumulative
    API queries or (``x="wall_time"``) the run's wall time so far, resumed attempts included."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    from dfml_bench.store import read_jsonl

    field = CURVE_AXES[x][0]
    points = []
    for rec in read_jsonl(path):  # lines cut by a crash or not UTF-8 are skipped
        try:
            if "val_acc" in rec:
                points.append((int(rec.get("iteration", 0)), float(rec.get(field, 0)), float(rec["val_acc"])))
        except (TypeError, ValueError):
            continue  # a record with values that are not numbers
    return points


def _mean_curve(curves: list[list[tuple[int, float, float]]]) -> list[tuple[float, float, float, float]]:
    """(x, mean, lowest, highest accuracy) over seeds at the validation iterations they share."""
    by_iter: dict[int, list[tuple[float, float]]] = {}
    for curve in curves:
        for it, q, acc in curve:
            by_iter.setdefault(it, []).append((q, acc))
    return [(sum(q for q, _ in pts) / len(pts), sum(a for _, a in pts) / len(pts),
             min(a for _, a in pts), max(a for _, a in pts))
            for it, pts in sorted(by_iter.items()) if len(pts) == len(curves)]


def queries_plot(scenario: str, shots: int, runs: list[Mapping[str, Any]]) -> Plot | None:
    """Val accuracy vs cumulative API queries for one (scenario, shots); None without any curve."""
    return curve_plot(scenario, shots, runs, "queries")


def time_plot(scenario: str, shots: int, runs: list[Mapping[str, Any]]) -> Plot | None:
    """Val accuracy vs the runs' wall time for one (scenario, shots); None without any curve."""
    return curve_plot(scenario, shots, runs, "wall_time")


def iterations_plot(scenario: str, shots: int, runs: list[Mapping[str, Any]]) -> Plot | None:
    """Val accuracy vs meta-iterations for one (scenario, shots); None without any curve."""
    return curve_plot(scenario, shots, runs, "iteration")


def curve_plot(scenario: str, shots: int, runs: list[Mapping[str, Any]], x: str) -> Plot | None:
    """Mean val curve per method against `x` (CURVE_AXES), the seeds' range shaded; a method that
    never moves along x (no queries, a single validation) is a dashed reference level at its best
    val accuracy."""
    _, _, name, subject = CURVE_AXES[x]
    fig = curve_figure(scenario, shots, runs, x)
    if fig is None:
        return None
    caption = f"{scenario} {shots}-shot: meta-val accuracy against the {subject} spent so far"
    return Plot(f"{name}-{scenario}-{shots}shot.png", caption, _png(fig))


def curve_figure(scenario: str, shots: int, runs: list[Mapping[str, Any]], x: str) -> Any:
    """The figure of :func:`curve_plot` (None without any curve). Short method labels sit at their
    curves' ends (one moved off a crowded end is tied to it by a leader line) and the reference
    levels are named in a legend placed where it hides least; longer labels (rows labelled by their
    settings) all go in a legend below the axes, so that the axes keep the figure's width."""
    _, xlabel, _, subject = CURVE_AXES[x]
    methods: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        methods.setdefault(_label(r), []).append(r)
    lines, flat = {}, {}
    for label, rs in sorted(methods.items()):
        curves = [c for c in (val_curve(d, x) for d in map(log_dir, rs) if d is not None) if c]
        if not curves:
            continue
        if max(q for c in curves for _, q, _ in c) > 0 and max(len(c) for c in curves) > 1:
            lines[label] = _mean_curve(curves)
        else:  # nothing spent along x: a reference level, not a curve
            flat[label] = sum(max(a for _, _, a in c) for c in curves) / len(curves)
    if not lines and not flat:
        return None
    direct = max(map(len, lines), default=0) <= DIRECT_LABEL_CHARS
    fig = _figure(7.5, 4.2 if direct else 4.4 + 0.22 * len(lines))
    ax = fig.add_subplot()
    colors = iter(_palette())
    xs = [q for pts in lines.values() for q, *_ in pts if q > 0]
    log = bool(xs) and max(xs) / min(xs) > 50
    ends: list[tuple[float, float, str, str]] = []  # (x, y, label, colour) of each curve's last point
    for label, pts in lines.items():
        color = next(colors)
        pts = [p for p in pts if p[0] > 0 or not log]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=2, color=color, label=label)
        if any(p[3] > p[2] for p in pts):  # several seeds: their range
            ax.fill_between([p[0] for p in pts], [p[2] for p in pts], [p[3] for p in pts], color=color,
                            alpha=0.15, lw=0)
        if direct:
            ends.append((pts[-1][0], pts[-1][1], label, color))
    note = "no queries" if x == "queries" else "no training"
    levels = [ax.axhline(level, ls="--", lw=1.5, color=next(colors), label=f"{label}: {level:.1f}% ({note})")
              for label, level in flat.items()]
    log_room, linear_room = (4, 1.3) if direct else (1.5, 1.05)  # room to the right for end labels
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 1.5, max(xs) * log_room)
    elif xs:
        ax.set_xlim(0, max(xs) * linear_room)  # nothing below 0
    low, high = ax.get_ylim()
    axes_pt = ax.get_position().height * fig.get_figheight() * 72
    gap = (high - low) * END_LABEL_PT / axes_pt  # one label's height in data units
    for (x_end, y_end, label, color), y in zip(ends, spread([e[1] for e in ends], gap)):
        moved = abs(y - y_end) > gap / 2  # a label pushed away from its curve gets a leader line
        ax.annotate(label, (x_end, y_end), xytext=(14 if moved else 4, y), textcoords=("offset points", "data"),
                    color=color, fontsize=9, fontweight="bold", va="center",
                    arrowprops={"arrowstyle": "-", "color": color, "lw": 0.8, "shrinkA": 0, "shrinkB": 2}
                    if moved else None)  # anchored at the curve's end, so never clipped
    if not direct and lines:  # every curve and level in one legend below the axes
        fig.legend(loc="outside lower center", fontsize=8, frameon=False)
    elif levels:  # the reference levels in a legend where it hides least of the curves
        ax.legend(handles=levels, loc="best", fontsize=8, framealpha=0.85)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("meta-val accuracy (%)")
    ax.set_title(f"{scenario} {shots}-shot: accuracy vs {subject} (mean over seeds, range shaded)")
    ax.grid(alpha=0.3)
    return fig


def spread(ys: list[float], gap: float) -> list[float]:
    """Label heights near `ys`, in the same order, at least `gap` apart: each cluster of labels
    closer than `gap` is spaced evenly around its mean, so that no end label hides another."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    groups: list[list[int]] = []  # runs of labels, each packed `gap` apart around its mean
    for i in order:
        groups.append([i])
        while len(groups) > 1:
            a, b = groups[-2], groups[-1]
            top_a = sum(ys[j] for j in a) / len(a) + gap * (len(a) - 1) / 2
            bottom_b = sum(ys[j] for j in b) / len(b) - gap * (len(b) - 1) / 2
            if bottom_b - top_a >= gap:
                break
            groups[-2:] = [a + b]
    out = [0.0] * len(ys)
    for g in groups:
        centre = sum(ys[j] for j in g) / len(g)
        for k, j in enumerate(g):
            out[j] = centre + gap * (k - (len(g) - 1) / 2)
    return out


def _palette() -> list[str]:
    """Twenty distinct colours (matplotlib's tab10, then darker shades of it) before any repeats."""
    base = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
            "#bcbd22"]
    dark = ["#0b3c5d", "#7a1414", "#145214", "#4b2d6b", "#a34d00", "#4a2c25", "#8f3a78", "#0b6670", "#3d3d3d",
            "#6b6b12"]
    return (base + dark) * 4


def accuracy_plot(scenario: str, shots: int, rows: list[Mapping[str, Any]]) -> Plot:
    """Horizontal bars of accuracy ± 95% CI per method for one (scenario, shots), on the rows'
    split (meta-test, or meta-val with `compare --split val`)."""
    split = "meta-val" if any(r.get("split") == "val" for r in rows) else "meta-test"
    rows = sorted(rows, key=lambda r: (r["accuracy"] is None, -(r["accuracy"] or 0.0)))
    fig = _figure(7.5, 0.9 + 0.45 * len(rows))
    ax = fig.add_subplot()
    ys = list(range(len(rows)))[::-1]
    top = max([(r["accuracy"] or 0) + (r["ci95"] or 0) for r in rows] + [1.0])
    for y, r in zip(ys, rows):
        name = _label(r)
        if r["accuracy"] is None:
            ax.text(0, y, "  FAILED", va="center", color="#d62728", fontweight="bold")
        else:
            oracle = not r.get("data_free", True)
            ax.barh(y, r["accuracy"], xerr=r["ci95"] or 0, capsize=4, height=0.6,
                    color="#c7c7c7" if oracle else ("#2ca02c" if r.get("best") else "#1f77b4"),
                    hatch="//" if oracle else None, edgecolor="#555555")
            ax.text(r["accuracy"] + (r["ci95"] or 0) + top * 0.01, y, f"{r['accuracy']:.1f} ± " + ("n/a" if r["ci95"] is None else f"{r['ci95']:.1f}"),
                    va="center", fontsize=9)
        n = f"{r.get('seeds', 0)} seed{'s' if r.get('seeds', 0) != 1 else ''}"
        ax.text(-top * 0.01, y, f"{name} ({n})", va="center", ha="right", fontsize=9)
    ax.set_yticks([])
    ax.set_xlim(0, top * 1.25)
    ax.set_xlabel(f"{split} accuracy (%), error bar = 95% CI")
    ax.set_title(f"{scenario} {shots}-shot: accuracy per method\n(green = best data-free, hatched = oracle)",
                 fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    caption = f"{scenario} {shots}-shot: {split} accuracy with 95% confidence intervals"
    return Plot(f"accuracy-{scenario}-{shots}shot.png", caption, _png(fig))


def recovered_plot(scenario: str, shots: int, runs: list[Mapping[str, Any]]) -> Plot | None:
    """The recovered-image grids of one (scenario, shots), one panel per method (lowest seed)."""
    from PIL import Image

    first: dict[str, tuple[Mapping[str, Any], Path]] = {}
    for r in sorted(runs, key=lambda r: (str(r["method"]), int(r.get("seed", 0)))):
        logs = log_dir(r)
        path = logs / RECOVERED_FILE if logs is not None else None
        if path is not None and path.exists() and r["method"] not in first:
            first[str(r["method"])] = (r, path)
    if not first:
        return None
    fig = _figure(max(3.2 * len(first) + 0.4, 5.8), 3.8)  # at least the title's width
    for i, (method, (r, path)) in enumerate(sorted(first.items())):
        ax = fig.add_subplot(1, len(first), i + 1)
        with Image.open(path) as img:
            ax.imshow(img.convert("RGB"), interpolation="nearest")
        ax.set_title(f"{method}\nseed {r.get('seed', '?')}", fontsize=10)
        ax.axis("off")
    fig.suptitle(f"{scenario} {shots}-shot: recovered images (one row per class)", fontsize=11)
    caption = f"{scenario} {shots}-shot: images recovered from the APIs (last API task of each run)"
    return Plot(f"recovered-{scenario}-{shots}shot.png", caption, _png(fig))


def make_plots(results: Iterable[Mapping[str, Any]], rows: list[Mapping[str, Any]]) -> list[Plot]:
    """Every figure for finished results (with their ``run_dir``) and the compare rows."""
    require_matplotlib()
    by_cell = _cells(results)
    row_cells = _cells(rows)
    plots: list[Plot] = []
    for (scenario, shots), cell_rows in row_cells.items():
        plots.append(accuracy_plot(scenario, shots, cell_rows))
        runs = by_cell.get((scenario, shots), [])
        for extra in (iterations_plot(scenario, shots, runs), queries_plot(scenario, shots, runs),
                      time_plot(scenario, shots, runs), recovered_plot(scenario, shots, runs)):
            if extra is not None:
                plots.append(extra)
    return plots


def write_plots(plots: Iterable[Plot], directory: Path) -> list[Path]:
    """Write each figure as a PNG file in `directory` (created); return the paths."""
    from dfml_bench.store import atomic_write_bytes

    paths = []
    for p in plots:
        atomic_write_bytes(Path(directory) / p.name, p.png)
        paths.append(Path(directory) / p.name)
    return paths
