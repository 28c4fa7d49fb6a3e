"""`compare --format html` and `--plot DIR`: a self-contained page with the table and the plots,
PNG files, the matplotlib hint, and (when Debian chromium is installed) a real headless render."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from dfml_bench.cli import main
from dfml_bench.images import save_grid

CHROMIUM = "/usr/bin/chromium"


def fake_run(root: Path, method: str, seed: int, accuracy: float, access: str = "black",
             queries_per_val: int = 0, recovered: bool = False) -> None:
    """A finished run directory as the runner writes it (result, metrics, maybe recovered.png)."""
    d = root / "runs" / f"{method}-SS-1shot-s{seed}-{seed:016x}"
    d.mkdir(parents=True)
    result = {"method": method, "scenario": "SS", "shots": 1, "seed": seed, "accuracy": accuracy, "ci95": 1.5,
              "access": access, "data_free": access != "real_data", "queries": 4 * queries_per_val,
              "wall_time_s": 1.0}
    (d / "result.json").write_text(json.dumps(result))
    lines = [{"iteration": 10 * i, "queries": i * queries_per_val, "val_acc": accuracy - 8 + 2 * i + seed,
              "wall_time": 30.0 * i + 5} for i in range(5)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if recovered:
        g = torch.Generator().manual_seed(seed)
        save_grid(torch.rand(10, 3, 16, 16, generator=g), d / "recovered.png", nrow=2)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    for seed in (0, 1):
        fake_run(root, "bidf_mkd", seed, 40.0 + seed, queries_per_val=20_000, recovered=True)
        fake_run(root, "maml_oracle", seed, 55.0, access="real_data")
        fake_run(root, "random", seed, 25.0, access="none")
    failed = root / "runs" / "flaky-SS-1shot-s0-00"
    failed.mkdir()
    (failed / "error.json").write_text(json.dumps({"method": "flaky", "scenario": "SS", "shots": 1, "seed": 0,
                                                   "error": "boom", "access": "black"}))
    return root


@pytest.fixture(scope="module")
def page(results: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("report")
    res = CliRunner().invoke(main, ["compare", str(results), "--format", "html", "-o", str(out / "report.html"),
                                    "--plot", str(out / "plots")])
    assert res.exit_code == 0, res.output
    return out / "report.html", out / "plots"


def test_html_is_self_contained_with_the_table_and_the_plots(page: tuple[Path, Path]) -> None:
    html_path, plot_dir = page
    text = html_path.read_text()
    srcs = re.findall(r'\bsrc="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)  # nothing fetched elsewhere
    assert not re.search(r"\bhref=|<script|<link|url\(|@import", text)
    assert '<table id="results">' in text and "<th>SS 1-shot (dev)</th><th>queries</th>" in text
    assert "<strong>40.50 ± 6.35</strong>" in text  # best data-free cell, mean of two seeds (t, 1 df), in bold
    assert "maml_oracle (oracle: real data)" in text and "FAILED" in text
    pngs = sorted(p.name for p in plot_dir.iterdir())
    assert pngs == ["accuracy-SS-1shot.png", "iterations-SS-1shot.png", "queries-SS-1shot.png", "recovered-SS-1shot.png",
                    "time-SS-1shot.png"]
    assert len(srcs) == len(pngs)
    for p in plot_dir.iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_matplotlib_is_a_one_line_hint(results: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    res = CliRunner().invoke(main, ["compare", str(results), "--plot", str(tmp_path)])
    assert res.exit_code == 2 and "pip install 'dfml-bench[report]'" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def _chromium(*args: str) -> subprocess.CompletedProcess:
    """Headless Debian chromium with a throw-away profile and no network chatter."""
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


# What a reader sees, read back from the rendered page: the table's rows and, per image, whether
# the browser decoded it (a corrupt or empty data URI has naturalWidth 0).
PROBE = """<script>window.addEventListener("load", () => {
  const rows = document.querySelectorAll("#results tbody tr").length;
  const imgs = Array.from(document.images).map(i => i.complete && i.naturalWidth > 0 ? "ok" : "broken");
  document.body.setAttribute("data-probe", JSON.stringify({rows: rows, images: imgs}));
});</script>"""


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium (apt-get install chromium)")
def test_html_renders_in_headless_chromium(page: tuple[Path, Path], tmp_path: Path) -> None:
    from PIL import Image

    probed = tmp_path / "probed.html"  # the page plus a probe script; the shipped page has no script
    probed.write_text(page[0].read_text().replace("</body>", PROBE + "</body>"))
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", probed.resolve().as_uri()).stdout
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, "the page did not finish loading in chromium"
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    assert probe["rows"] >= 3  # bidf_mkd, maml_oracle, random (and the failed run)
    assert probe["images"] == ["ok"] * len(list(page[1].iterdir()))  # every plot decodes in the browser

    shot = tmp_path / "page.png"
    _chromium(f"--screenshot={shot}", "--window-size=1280,1600", page[0].resolve().as_uri())
    assert shot.exists(), "chromium wrote no screenshot"
    with Image.open(shot) as img:
        assert img.size == (1280, 1600)
        rgb = img.convert("RGB")
        # the plots are drawn: many distinct colours below the table, not a blank or error page
        lower = rgb.crop((0, 400, 1280, 1600)).getcolors(maxcolors=1 << 16)
        assert lower is None or len(lower) > 50


def test_rich_table_states_the_oracle_caveat_only_when_an_oracle_row_is_shown() -> None:
    from rich.console import Console

    from dfml_bench.report import to_rich

    def rows(*methods: tuple[str, str]) -> list[dict]:
        return [{"method": m, "scenario": "SS", "shots": 1, "accuracy": 40.0, "ci95": 1.0, "best": False,
                 "access": a, "failed": 0} for m, a in methods]

    def shown(table_rows: list[dict]) -> str:
        console = Console(width=200, record=True)
        console.print(to_rich(table_rows))
        return console.export_text()

    caveat = "oracle rows use real training data"
    assert caveat not in shown(rows(("random", "none")))
    assert caveat in shown(rows(("random", "none"), ("maml_oracle", "real_data")))


def test_val_curves_follow_queries_or_wall_time(results: Path) -> None:
    from dfml_bench import plots

    run = next((results / "runs").glob("bidf_mkd-SS-1shot-s0-*"))
    by_time, by_queries = plots.val_curve(run, "wall_time"), plots.val_curve(run)
    assert [(it, t) for it, t, _ in by_time] == [(10 * i, 30.0 * i + 5) for i in range(5)]
    assert [q for _, q, _ in by_queries] == [20_000.0 * i for i in range(5)]
    assert [a for *_, a in by_time] == [a for *_, a in by_queries]
    single = results.parent / "single" / "runs" / "r"
    single.mkdir(parents=True)
    (single / "metrics.jsonl").write_text('{"iteration": 0, "val_acc": 30.0, "wall_time": 2.0, "queries": 0}\n')
    runs = [{"method": "random", "access": "none", "run_dir": str(single)}]
    plot = plots.time_plot("SS", 1, runs)  # one validation: a reference level, still drawn
    assert plot is not None and plot.name == "time-SS-1shot.png" and plot.png[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots.time_plot("SS", 1, [{"method": "x", "run_dir": str(results / "nowhere")}]) is None


def test_iteration_curves_average_seeds_and_keep_their_range(results: Path) -> None:
    from dfml_bench import plots

    run = next((results / "runs").glob("bidf_mkd-SS-1shot-s0-*"))
    assert [(it, x) for it, x, _ in plots.val_curve(run, "iteration")] == [(10 * i, 10.0 * i) for i in range(5)]
    seed0 = [(0, 0.0, 40.0), (100, 100.0, 50.0), (200, 200.0, 60.0)]
    seed1 = [(0, 0.0, 44.0), (100, 100.0, 46.0)]  # stopped early: only shared iterations are averaged
    assert plots._mean_curve([seed0, seed1]) == [(0.0, 42.0, 40.0, 44.0), (100.0, 48.0, 46.0, 50.0)]
    plot = plots.iterations_plot("SS", 1, [{"method": "bidf_mkd", "access": "black_box", "run_dir": str(run)}])
    assert plot is not None and plot.name == "iterations-SS-1shot.png" and plot.png[:8] == b"\x89PNG\r\n\x1a\n"


def test_long_row_labels_move_to_a_legend_and_the_axes_keep_the_width(results: Path) -> None:
    from dfml_bench import plots

    run = next((results / "runs").glob("bidf_mkd-SS-1shot-s0-*"))
    short = [{"method": "bidf_mkd", "access": "black_box", "run_dir": str(run)}]
    long = [{"method": "bidf_mkd [generator.iterations=90, train.meta_iterations=300]", "access": "black_box",
             "run_dir": str(run)}]
    for rows, legend in ((short, False), (long, True)):
        fig = plots.curve_figure("SS", 1, rows, "iteration")
        fig.canvas.draw()
        assert bool(fig.legends) is legend
        labels = [t.get_text().strip() for t in fig.axes[0].texts]
        assert labels == ([] if legend else ["bidf_mkd"])
        assert fig.axes[0].get_position().width > 0.75  # end labels no longer squeeze the axes


def test_end_labels_of_curves_ending_together_do_not_overlap(results: Path) -> None:
    from dfml_bench import plots

    assert plots.spread([5.0, 5.0, 9.0], 1.0) == [4.5, 5.5, 9.0]  # a tie is spread about its mean
    assert plots.spread([0.0, 5.0, 5.2, 10.0], 1.0) == pytest.approx([0.0, 4.6, 5.6, 10.0])
    runs = sorted((results / "runs").glob("*-SS-1shot-s0-*"))
    rows = [{"method": name, "access": "black_box", "run_dir": str(runs[0])} for name in ("a", "b", "c")]
    fig = plots.curve_figure("SS", 1, rows, "iteration")  # three identical curves
    fig.canvas.draw()
    from matplotlib.text import Text

    labels = sorted(fig.axes[0].texts, key=lambda t: Text.get_window_extent(t).y0)  # the text, not its leader
    boxes = [Text.get_window_extent(t) for t in labels]
    assert len(boxes) == 3 and all(lo.y1 <= hi.y0 + 1 for lo, hi in zip(boxes, boxes[1:]))
    # the two labels moved off their curve's end are tied to it by a leader line; the one left in place is not
    assert [t.arrow_patch is not None for t in labels] == [True, False, True]


def test_html_cell_puts_each_annotation_on_a_line_of_its_own() -> None:
    from dfml_bench.report import to_html

    row = {"method": "bidf_mkd", "scenario": "SS", "shots": 1, "accuracy": 48.36, "ci95": 5.51, "best": True,
           "access": "black", "failed": 0, "gap_closed": 11.9, "unpaired": None, "diff": 1.91, "diff_low": -2.28,
           "diff_high": 6.11, "significant": False}
    text = to_html([row])
    assert ('<td><span><strong>48.36 ± 5.51</strong></span><span class="note">(gap 11.9%)</span>'
            '<span class="note">(Δ +1.91 [-2.28, +6.11])</span></td>') in text
    assert "<td>bidf_mkd</td>" in text  # the method label stays one piece
    assert '<div class="scroll"><table id="results">' in text  # a wide grid scrolls, the page does not


def test_figures_follow_the_table_columns_order() -> None:
    from dfml_bench.plots import _cells

    runs = [{"scenario": s, "shots": k, "instance": i}
            for s, k, i in [("MH", 1, "sealed"), ("SS", 5, "dev"), ("SH", 1, "dev"), ("SS", 1, "dev"),
                            ("SS", 1, "sealed"), ("MH", 5, "dev")]]
    assert list(_cells(runs)) == [("SS", 1), ("SS", 5), ("SH", 1), ("MH", 5), ("SS-sealed", 1), ("MH-sealed", 1)]


def test_a_single_recovered_grid_leaves_room_for_the_title(tmp_path: Path) -> None:
    import io

    from PIL import Image

    from dfml_bench.plots import recovered_plot

    fake_run(tmp_path, "bidf_mkd", 0, 40.0, recovered=True)
    run = json.loads(next(tmp_path.glob("runs/*/result.json")).read_text())
    run["run_dir"] = str(next(tmp_path.glob("runs/*")))
    plot = recovered_plot("MH-sealed", 1, [run])
    assert plot is not None
    with Image.open(io.BytesIO(plot.png)) as img:
        assert img.width >= 560  # the suptitle, about 5.5 inches at 100 dpi, is not clipped


def test_reference_levels_are_named_in_a_legend_not_over_the_curves(results: Path) -> None:
    from dfml_bench import plots

    runs = [json.loads(p.read_text()) | {"run_dir": str(p.parent)} for p in sorted(results.glob("runs/*/result.json"))]
    fig = plots.curve_figure("SS", 1, runs, "queries")  # maml_oracle and random spend no queries
    fig.canvas.draw()
    legend = fig.axes[0].get_legend()
    assert legend is not None
    names = [t.get_text() for t in legend.get_texts()]
    assert names == ["maml_oracle (oracle): 55.5% (no queries)", "random: 25.5% (no queries)"]  # best val, seed mean
    assert [t.get_text() for t in fig.axes[0].texts] == ["bidf_mkd"]  # the one curve keeps its end label
