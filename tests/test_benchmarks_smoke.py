"""The benchmarks in benchmarks/ still run: each one's smallest configuration, in seconds."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    import torch

    threads = torch.get_num_threads()  # the benchmarks set their own thread count
    sys.path.insert(0, str(BENCH))
    try:
        yield lambda name: importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))
        torch.set_num_threads(threads)


def test_zo_estimator_reports_every_column(bench) -> None:
    mod = bench("zo_estimator")
    mod.HEADLINE["tiny"] = (2, 3)
    rows = mod.main(["--archs", "conv4,resnet10", "--sizes", "16", "--batch", "2", "--q", "2", "--headline", "tiny",
                     "--headline-size", "16", "--headline-repeats", "1",
                     "--repeats", "1", "--conv4-width", "4", "--resnet-width", "2", "--ablate"])
    assert [r.get("profile") for r in rows] == ["tiny", None, None]
    assert rows[0]["batch"] == 2 and rows[0]["bare"] > 0 and rows[0]["ours"] > 0 and rows[0]["draws"] > 0
    assert [r["arch"] for r in rows[1:]] == ["conv4", "resnet10"]
    assert all(r[k] > 0 for r in rows[1:] for k in ("net", "bare", "ours", "naive", "bare_contiguous",
                                                    "bare_one_pass", "bare_unfolded"))


def test_zo_memory_chunks_stay_within_the_budget(bench) -> None:
    child = bench("zo_memory")._child
    base = {"device": "cpu", "threads": 1, "size": 16, "arch": "probe", "width": 2, "batch": 3}
    d_bytes = 3 * 16 * 16 * 4
    small = child({**base, "mode": "zo", "q": 400, "memory_mb": 1})  # 1 MB = 341 points: directions split
    assert small["largest_call"] * d_bytes <= 1 << 20 and small["largest_call"] < 401
    whole = child({**base, "mode": "zo", "q": 4, "memory_mb": 1})  # all 3 images x 5 points in one call
    assert whole["largest_call"] == 15
    api = {**base, "arch": "resnet18", "mode": "forward", "slice_mb": 0.01}
    assert child(api)["peak_mb"] >= 0
    assert child({**api, "mode": "time", "repeats": 1})["sliced_over_whole"] > 0


def test_inner_loop_times_and_child_memory(bench, capsys) -> None:
    mod = bench("inner_loop")
    out = mod.main(["--size", "16", "--width", "4", "--support", "5", "--query", "5", "--steps", "1",
                    "--repeats", "1", "--no-memory"])
    assert set(out) == {"kd_so", "kd_fo", "maml_so", "maml_fo"}
    capsys.readouterr()
    mod.main(["--child", json.dumps({"device": "cpu", "threads": 1, "size": 16, "width": 4, "support": 5,
                                     "query": 5, "steps": 1, "learner": "kd", "first_order": False})])
    assert "peak_mb" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bidf_iteration_and_end_to_end_share_a_smoke_pool(bench, tmp_path) -> None:
    pools = str(tmp_path / "pools")
    t = bench("bidf_iteration").main(["--iterations", "2", "--meta-batch", "1", "--per-class", "1", "--q", "1",
                                      "--gen-iters", "1", "--inner-steps", "1", "--pool-dir", pools,
                                      "--image-size", "8"])
    assert t["api_iterations"] >= 1 and t["recovery"] > 0 and t["inner_kd"] > 0
    row = bench("end_to_end").main(["--profile", "smoke", "--meta-iterations", "1", "--pool-dir", pools,
                                    "--repeats", "1", "--set", "train.val_episodes=1", "--set", "eval.episodes=1",
                                    "--set", "method.per_class=1", "--set", "estimator.zo_forward.q=1",
                                    "--set", "recoverer.generator.iterations=1"])
    assert row["queries"] > 0 and row["floor_s"] > 0 and row["wall_s"] > row["floor_s"]
    assert row["shares"]["api forward"] > 0 and row["shares"]["generator"] > 0
    assert row["shares"]["kd inner/outer"] > 0  # the API meta-iteration's inner KD, outer loss and step
    assert sum(row["shares"].values()) == pytest.approx(row["wall_s"])
    pool_hash = next(p.name for p in Path(pools).iterdir() if p.is_dir())
    agreement = bench("recovery_agreement").main(["--pool", pool_hash, "--pool-dir", pools, "--apis", "2",
                                                  "--per-class", "1", "--iterations", "1", "--width", "4",
                                                  "--q", "1", "--peers"])
    assert len(agreement) == 2 and all(0 <= x <= 100 for x in agreement)


def test_query_efficiency_runs_each_estimator_and_reuses_finished_cells(bench, tmp_path, capsys) -> None:
    qe = bench("query_efficiency")
    tiny = ["train.meta_iterations=1", "train.val_episodes=1", "eval.episodes=2", "method.per_class=1",
            "recoverer.generator.iterations=1"]
    argv = ["--profile", "smoke", "--results", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
            "--pool-dir", str(tmp_path / "pools"), "--forward-q", "1", "--central-q", "1", "--jobs", "2"]
    for item in tiny:
        argv += ["--set", item]
    table = qe.main(argv)
    assert [(r["estimator"], r["q"], r["queries_per_image_step"]) for r in table] == [
        ("zo_forward", 1, 2), ("zo_central", 1, 3)]
    assert all(r["total_queries"] > 0 and 0 <= r["accuracy"] <= 100 for r in table)
    assert (tmp_path / "out" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "zo_central" in (tmp_path / "out" / "table.csv").read_text()
    capsys.readouterr()
    assert qe.main(argv) == table  # same cells: read back from the store, nothing re-run
    assert "2 finished earlier, 0 to run" in capsys.readouterr().out


def test_evaluation_layouts_side_by_side(bench) -> None:
    rows = bench("evaluation").main(["--width", "4", "--size", "16", "--shots", "1", "--steps", "1",
                                     "--episodes", "2", "--repeats", "1", "--queries", "2"])
    assert [r["shots"] for r in rows] == [1] and rows[0]["ratio"] > 0 and 0 <= rows[0]["differ"] <= 2


def test_conv4_block_orders_are_bit_identical(bench) -> None:
    rows = bench("conv4_block").main(["--width", "4", "--cases", "16:1,48:1", "--steps", "1", "--queries", "2",
                                      "--repeats", "1"])
    assert [(r["case"], r["part"]) for r in rows] == [("16px 1-shot", "eval episode"), ("16px 1-shot", "meta-gradient"),
                                                      ("48px 1-shot", "eval episode"), ("48px 1-shot", "meta-gradient")]
    assert all(r["bit_identical"] and r["ratio"] > 0 for r in rows)


def test_zo_rounding_shows_the_estimate_lost_to_tf32_sized_rounding(bench) -> None:
    rows = bench("zo_rounding").main(["--q", "300", "--batch", "4"])
    cos = {r["scores"]: r["cosine"] for r in rows}
    assert len(rows) == 6 and cos["IEEE float32"] > 0.2 > cos["x (1 + 1.0e-03 N(0,1))"], cos


def test_gpu_script_names_only_existing_scripts_and_options() -> None:
    """benchmarks/gpu.sh is run on a lent GPU machine with no time to debug it: every command it
    runs exists and takes every option the script gives it."""
    import re
    import subprocess

    from click.testing import CliRunner

    from dfml_bench.cli import main as cli_main

    text = (BENCH / "gpu.sh").read_text().replace("\\\n", " ")
    assert subprocess.run(["bash", "-n", str(BENCH / "gpu.sh")]).returncode == 0
    steps = [line.split(None, 3)[3] for line in text.splitlines() if line.startswith("step ")]
    assert len(steps) >= 6
    for command in steps:
        options = set(re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", command))
        if command.startswith("dfml-bench "):
            shown = CliRunner().invoke(cli_main, [command.split()[1], "--help"]).output
        else:
            script = re.match(r"python3 (benchmarks/\w+\.py)", command)
            assert script, command
            shown = subprocess.run([sys.executable, str(BENCH.parent / script.group(1)), "--help"],
                                   capture_output=True, text=True, check=True).stdout
        missing = {o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", shown)}
        assert not missing, f"{command}: {sorted(missing)} not in its --help"


def test_class_stats_match_images_to_their_real_class_means(bench) -> None:
    import torch

    stats = bench("recovery_agreement").class_stats
    g = torch.Generator().manual_seed(0)
    means = torch.rand(3, 3, 8, 8, generator=g)                      # three classes' real mean images
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    images = (0.5 * means[labels] + 0.2).clamp(0, 1)                  # dimmer, brighter copies: same shapes
    own = stats(images, labels, means)
    assert own.nearest == 100.0                                       # correlation ignores brightness and contrast
    assert stats(images, (labels + 1) % 3, means).nearest == 0.0      # every label names another class
    assert own.mean == pytest.approx(images.mean().item())
    assert own.std == pytest.approx(torch.stack([images[labels == k].std(0).mean() for k in range(3)]).mean().item())
    big = torch.nn.functional.interpolate(images, size=(16, 16), mode="nearest")  # another resolution
    assert stats(big, labels, means).nearest == 100.0
