"""`compare --against`: paired differences with a bootstrap CI over seeds and episodes, the csv
columns, instance separation, and records made before per-episode accuracies were kept."""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from dfml_bench import report
from dfml_bench.cli import main
from dfml_bench.stats import paired_bootstrap

EPISODES = 60


def reference_episodes(seed: int) -> list[float]:
    rng = random.Random(seed)
    return [100.0 * rng.randint(20, 60) / 75 for _ in range(EPISODES)]


def record(method: str, seed: int, episodes: list[float] | None, *, instance: str | None = None,
           scenario: str = "SS", queries: int = 0) -> dict:
    acc = sum(episodes) / len(episodes) if episodes else 50.0
    per = {"accuracy": acc, "ci95": 1.0, "episodes": EPISODES}
    if episodes is not None:
        per["episode_accuracies"] = episodes
    r = {"method": method, "scenario": scenario, "shots": 1, "seed": seed, "accuracy": acc, "ci95": 1.0,
         "access": "black", "data_free": True, "queries": queries, "wall_time_s": 1.0,
         "per_dataset": {"glyphs-letters": per}}
    if instance is not None:
        r["instance"] = instance
    return r


def better(seed: int) -> list[float]:
    """The reference's episodes, mostly higher: +8 points on 7 of 10 episodes, -4 on the rest."""
    return [a + (8.0 if i % 10 < 7 else -4.0) for i, a in enumerate(reference_episodes(seed))]


def same(seed: int) -> list[float]:
    """The reference's episode accuracies reshuffled: equal on average, different per episode."""
    eps = reference_episodes(seed)
    random.Random(100 + seed).shuffle(eps)
    return eps


def synthetic(seeds=(0, 1, 2)) -> list[dict]:
    out = []
    for s in seeds:
        out += [record("kd", s, reference_episodes(s), queries=1000 * (s + 1)), record("bidf_mkd", s, better(s)),
                record("purer", s, same(s))]
    return out


def rows_against(results: list[dict], against: str = "kd") -> dict[str, dict]:
    rows = report.aggregate(results)
    report.add_paired_differences(rows, results, against)
    return {r["method"]: r for r in rows}


def test_a_known_difference_is_found_and_a_null_one_is_not() -> None:
    rows = rows_against(synthetic())
    gain = rows["bidf_mkd"]
    assert gain["diff"] == pytest.approx(0.7 * 8 - 0.3 * 4)
    assert gain["significant"] and 0 < gain["diff_low"] < gain["diff"] < gain["diff_high"]
    assert gain["paired_seeds"] == 3 and gain["unpaired"] is None
    null = rows["purer"]
    assert null["diff"] == pytest.approx(0.0, abs=1e-9)
    assert not null["significant"] and null["diff_low"] < 0 < null["diff_high"]
    assert rows["kd"]["diff"] is None and rows["kd"]["unpaired"] == "reference"
    # the same records give the same interval (seeded resampling)
    again = rows_against(synthetic())["bidf_mkd"]
    assert (again["diff_low"], again["diff_high"]) == (gain["diff_low"], gain["diff_high"])


def test_bootstrap_resamples_seeds_and_shared_episodes() -> None:
    import math

    # seed offsets only (every episode alike): the interval is Student's t over the 3 seeds' means
    spread = paired_bootstrap([[1.0] * 50, [3.0] * 50, [5.0] * 50], [0, 0, 0], resamples=4000)
    assert spread.diff == pytest.approx(3.0)
    assert spread.half_width == pytest.approx(4.303 * 2.0 / math.sqrt(3), rel=0.1)
    # the same episode effects in every seed: a shared episode set is one sample of episodes, so
    # three such seeds know no more than one (crossed design)
    eps = [float(i % 7) - 3.0 for i in range(70)]
    one = paired_bootstrap([eps], [0], resamples=2000)
    assert paired_bootstrap([eps, eps, eps], [0, 0, 0], resamples=2000).half_width == pytest.approx(one.half_width)
    assert one.half_width == pytest.approx(1.96 * 2.0 / math.sqrt(70), rel=0.1)  # sd of eps: 2


def test_seeds_and_rows_without_a_partner_are_reported_not_dropped() -> None:
    results = synthetic() + [record("bidf_mkd", 3, better(3)), record("average", 0, better(0))]
    results.append(record("random", 0, None))  # an old record: no per-episode accuracies
    results.append(record("kd", 4, reference_episodes(4)))
    rows = rows_against(results)
    gain = rows["bidf_mkd"]
    assert gain["paired_seeds"] == 3 and "seed 3: no kd run" in gain["unpaired"]
    assert "seed 4: only kd ran" in gain["unpaired"] and gain["significant"]
    assert rows["random"]["diff"] is None and "seed 0: no per-episode records" in rows["random"]["unpaired"]
    assert rows["average"]["paired_seeds"] == 1
    md = report.to_markdown(list(rows.values()))
    assert "(unpaired: seed 3: no kd run; seed 4: only kd ran)" in md and "(ref.)" in md
    assert "paired difference to kd" in md


def test_csv_columns_and_instances_kept_apart() -> None:
    results = synthetic() + [record("kd", 0, reference_episodes(7), instance="sealed", queries=5),
                             record("bidf_mkd", 0, better(7), instance="sealed")]
    rows = report.aggregate(results)
    text = report.to_csv(rows)
    header = text.splitlines()[0].split(",")
    assert header == ["method", "access", "instance", "scenario", "shots", "seeds", "mean", "ci95", "queries",
                      "split", "evaluation", "data_free", "best", "wall_time_s", "failed"]
    lines = list(csv.DictReader(io.StringIO(text)))
    kd = {(r["instance"], r["seeds"]): r for r in lines if r["method"] == "kd"}
    assert set(kd) == {("dev", "3"), ("sealed", "1")}  # never pooled into one cell
    assert float(kd[("dev", "3")]["queries"]) == 2000.0  # median of 1000, 2000, 3000
    report.add_gap_closed(rows, "kd", "bidf_mkd")
    report.add_paired_differences(rows, results, "kd")
    full = report.to_csv(rows)
    assert full.splitlines()[0].endswith(",failed,gap,diff,diff_ci95,diff_low,diff_high,significant,paired_seeds,"
                                         "unpaired")
    sealed = next(r for r in csv.DictReader(io.StringIO(full)) if r["method"] == "bidf_mkd" and r["instance"] == "sealed")
    assert sealed["paired_seeds"] == "1" and sealed["significant"] == "True"
    md = report.to_markdown(rows)
    assert "SS 1-shot (dev) | queries | SS 1-shot (sealed) | queries" in md.splitlines()[0]


def test_compare_cli_against_results_option_and_old_records(tmp_path) -> None:
    for i, r in enumerate(synthetic(seeds=(0, 1)) + [record("random", 0, None)]):
        d = tmp_path / "runs" / f"{r['method']}-{i}"
        d.mkdir(parents=True)
        if r["method"] == "random":  # a record of an older version: no instance, episode lists or rule
            del r["per_dataset"]
        (d / "result.json").write_text(json.dumps(r))
    runner = CliRunner()
    out = runner.invoke(main, ["compare", "--results", str(tmp_path), "--format", "csv", "--against", "kd"])
    assert out.exit_code == 0, out.output
    lines = {r["method"]: r for r in csv.DictReader(io.StringIO(out.output))}
    assert lines["bidf_mkd"]["significant"] == "True" and lines["purer"]["significant"] == "False"
    assert lines["random"]["instance"] == "dev" and lines["random"]["diff"] == ""
    assert "no per-episode records" in lines["random"]["unpaired"]
    positional = runner.invoke(main, ["compare", str(tmp_path), "--format", "md", "--against", "kd"])
    assert positional.exit_code == 0 and "(Δ +4.40 [" in positional.output
    bad = runner.invoke(main, ["compare", str(tmp_path), "--against", "nope"])
    assert bad.exit_code != 0 and "--against needs finished runs of 'nope'" in bad.output
    assert "paired bootstrap" in runner.invoke(main, ["compare", "--help"]).output


def test_rich_table_keeps_variant_labels_and_shows_queries() -> None:
    from rich.console import Console

    results = [{**record("bidf_mkd", 0, better(0), queries=1_360_000), "method": "bidf_mkd [replay.mode=api]"},
               {**record("bidf_mkd_proto", 0, better(0)), "evaluation": "prototype"}]
    console = Console(width=250, record=True)
    console.print(report.to_rich(report.aggregate(results)))
    text = console.export_text()
    assert "bidf_mkd [replay.mode=api]" in text and "1.36M" in text and "queries" in text
    assert "bidf_mkd_proto (eval: prototype)" in text
    assert "queries" in report.to_latex(report.aggregate(results)) and "1.36M" in report.to_html(report.aggregate(results))


def test_records_without_episode_lists_still_load(tmp_path: Path) -> None:
    from dfml_bench import store

    # records as written before instances and per-episode accuracies existed
    for method, seed in (("maml_oracle", 0), ("bidf_mkd", 0), ("bidf_mkd", 1)):
        run = tmp_path / "runs" / f"{method}-SS-1shot-s{seed}"
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps(record(method, seed, None)))
    results = list(store.iter_results(tmp_path))
    assert len(results) == 3 and not any("instance" in r or "episode_accuracies" in json.dumps(r) for r in results)
    rows = report.aggregate(results)
    assert {r["instance"] for r in rows} == {"dev"} and {r["evaluation"] for r in rows} == {"finetune"}
    report.add_paired_differences(rows, results, "maml_oracle")
    others = [r for r in rows if r["base_method"] != "maml_oracle"]
    assert others and all(r["diff"] is None and r["unpaired"] for r in others)
    assert "unpaired" in report.to_markdown(rows)


def test_plots_keep_instances_apart() -> None:
    from dfml_bench import plots

    cells = plots._cells([record("kd", 0, None), record("kd", 0, None, instance="sealed"),
                          record("kd", 1, None, instance="dev")])
    assert {k: len(v) for k, v in cells.items()} == {("SS", 1): 2, ("SS-sealed", 1): 1}


def with_val(r: dict, episodes: list[float] | None, *, trial: bool = False) -> dict:
    """`r` with a selected validation scored on `episodes` (None: a record without per-episode val)."""
    acc = sum(episodes) / len(episodes) if episodes else 40.0
    r = {**r, "best_val_accuracy": acc}
    if episodes is not None:
        r["best_val_per_dataset"] = {"glyphs-letters": {"accuracy": acc, "ci95": 2.0, "episodes": len(episodes),
                                                        "episode_accuracies": episodes}}
    if trial:  # a tuning trial: its accuracy is its best val, it has no meta-test
        r.update(kind="trial", accuracy=acc, ci95=0.0, per_dataset={})
    return r


def test_split_val_scores_and_pairs_the_selected_validations(tmp_path) -> None:
    # on meta-test purer is the better one; on meta-val bidf_mkd is: the split decides which is read
    results = []
    for s in (0, 1, 2):
        results += [with_val(record("kd", s, reference_episodes(s)), reference_episodes(10 + s)),
                    with_val(record("bidf_mkd", s, same(s)), better(10 + s)),
                    with_val(record("purer", s, better(s)), same(10 + s))]
    rows = report.aggregate(results, split="val")
    report.add_paired_differences(rows, results, "kd", split="val")
    val = {r["method"]: r for r in rows}
    assert val["bidf_mkd"]["significant"] and val["bidf_mkd"]["diff"] == pytest.approx(0.7 * 8 - 0.3 * 4)
    assert not val["purer"]["significant"] and val["purer"]["diff"] == pytest.approx(0.0, abs=1e-9)
    assert val["kd"]["accuracy"] == pytest.approx(sum(sum(reference_episodes(10 + s)) / EPISODES
                                                      for s in (0, 1, 2)) / 3)
    test = rows_against(results)
    assert test["purer"]["significant"] and not test["bidf_mkd"]["significant"]
    md = report.to_markdown(rows)
    assert "SS 1-shot (dev, meta-val)" in md and "selected (best) validation" in md
    assert {line["split"] for line in csv.DictReader(io.StringIO(report.to_csv(rows)))} == {"val"}

    # the CLI: tuning trials count on meta-val only; records without per-episode val are unpaired
    extra = [with_val(record("random", 0, None), None), with_val(record("kd_trial", 0, None), better(10), trial=True)]
    for i, r in enumerate(results + extra):
        d = tmp_path / "runs" / f"{r['method']}-{i}"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(r))
    runner = CliRunner()
    out = runner.invoke(main, ["compare", str(tmp_path), "--split", "val", "--format", "csv", "--against", "kd"])
    assert out.exit_code == 0, out.output
    lines = {r["method"]: r for r in csv.DictReader(io.StringIO(out.output))}
    assert lines["bidf_mkd"]["significant"] == "True" and lines["purer"]["significant"] == "False"
    assert lines["kd_trial"]["paired_seeds"] == "1" and lines["kd_trial"]["split"] == "val"
    assert "no per-episode records" in lines["random"]["unpaired"]
    assert lines["random"]["ci95"] == ""  # one run without validation episodes: its CI is unknown, not 0
    md = runner.invoke(main, ["compare", str(tmp_path), "--split", "val", "--format", "md", "-m", "random"]).output
    assert "40.00 ± n/a" in md
    on_test = runner.invoke(main, ["compare", str(tmp_path), "--format", "csv"])
    assert on_test.exit_code == 0 and "kd_trial" not in on_test.output  # a trial is never a test result


def test_split_val_at_scores_each_run_up_to_an_iteration(tmp_path) -> None:
    """One long run per seed answers every shorter length: --at N takes its best validation up to N."""
    def write(method: str, seed: int, curve: list[tuple[int, list[float]]], episodes_file: bool = True) -> None:
        d = tmp_path / "runs" / f"{method}-s{seed}"
        d.mkdir(parents=True)
        last = curve[-1][1]
        (d / "result.json").write_text(json.dumps(with_val(record(method, seed, reference_episodes(seed)), last)))
        metrics = [{"iteration": it, "val_acc": sum(eps) / len(eps), "queries": 1000 * it, "wall_time": it / 10}
                   for it, eps in curve]
        (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
        if episodes_file:
            (d / "val_episodes.jsonl").write_text("".join(
                json.dumps({"iteration": it, "per_dataset": {"glyphs-letters": eps}}) + "\n" for it, eps in curve))

    for s in (0, 1, 2):
        base = reference_episodes(10 + s)
        write("noise", s, [(0, base), (100, base), (200, base)])
        # ahead only from iteration 200 on: at 100 the two are equal, at 200 the gain shows
        write("bidf_mkd", s, [(0, same(10 + s)), (100, base), (200, better(10 + s))])
    write("old", 0, [(0, [10.0] * EPISODES), (100, [30.0] * EPISODES), (200, [50.0] * EPISODES)], episodes_file=False)
    write("short", 0, [(0, [10.0] * EPISODES), (100, [60.0] * EPISODES)])  # trained for 100 only
    short = tmp_path / "runs" / "short-s0" / "result.json"
    short.write_text(json.dumps({**json.loads(short.read_text()), "meta_iterations": 100, "stopped_early": None}))
    # a run reused under another scenario's name keeps its logs in the run it was reused from
    reused = tmp_path / "runs" / "noise-SH-s0"
    reused.mkdir()
    source = json.loads((tmp_path / "runs" / "noise-s0" / "result.json").read_text())
    (reused / "result.json").write_text(json.dumps({**source, "scenario": "SH", "reused_from": "noise-s0"}))
    runner = CliRunner()

    def at(n: int) -> dict[str, dict]:
        out = runner.invoke(main, ["compare", str(tmp_path), "--split", "val", "--at", str(n), "--format", "csv",
                                   "--against", "noise"])
        assert out.exit_code == 0, out.output
        table = out.output[out.output.index("method,"):]  # after any note on stderr (click < 8.2 mixes it in)
        return {r["method"]: r for r in csv.DictReader(io.StringIO(table)) if r["scenario"] == "SS"} | \
            {f"{r['method']}@SH": r for r in csv.DictReader(io.StringIO(table)) if r["scenario"] == "SH"}

    early, late = at(100), at(200)
    assert float(early["short"]["mean"]) == 60.0 and "short" not in late  # not scored past its length
    assert float(late["noise@SH"]["mean"]) == pytest.approx(sum(reference_episodes(10)) / EPISODES)
    out = runner.invoke(main, ["compare", str(tmp_path), "--split", "val", "--at", "200", "--format", "csv"])
    assert "left out 1 run(s) trained for fewer meta-iterations: short-s0" in out.output
    assert float(early["bidf_mkd"]["diff"]) == pytest.approx(0.0, abs=1e-9)
    assert early["bidf_mkd"]["significant"] == "False" and late["bidf_mkd"]["significant"] == "True"
    assert float(late["bidf_mkd"]["diff"]) == pytest.approx(0.7 * 8 - 0.3 * 4)
    # the cost shown is what a run had spent by N, not the whole run's
    assert (float(early["bidf_mkd"]["queries"]), float(early["bidf_mkd"]["wall_time_s"])) == (100_000.0, 10.0)
    assert (float(late["bidf_mkd"]["queries"]), float(late["bidf_mkd"]["wall_time_s"])) == (200_000.0, 20.0)
    # a record without per-validation episodes is scored from its metrics, and is unpaired
    assert float(early["old"]["mean"]) == 30.0 and float(late["old"]["mean"]) == 50.0
    assert "no per-episode records" in early["old"]["unpaired"]
    md = runner.invoke(main, ["compare", str(tmp_path), "--split", "val", "--at", "100", "--format", "md"]).output
    assert "up to meta-iteration 100" in md
    bad = runner.invoke(main, ["compare", str(tmp_path), "--at", "100"])
    assert bad.exit_code != 0 and "add --split val" in bad.output and "Traceback" not in bad.output


def test_metric_tabulates_a_training_metric_over_the_records_that_logged_it(tmp_path) -> None:
    def write(method: str, seed: int, agreements: list[float | None]) -> None:
        d = tmp_path / "runs" / f"{method}-s{seed}"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(record(method, seed, reference_episodes(seed))))
        metrics = [{"iteration": i, "loss": 1.0, **({} if a is None else {"agreement": a})}
                   for i, a in enumerate(agreements)]
        metrics.append({"iteration": len(agreements), "agreement": float("nan")})  # skipped, as not finite
        (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))

    # replay meta-iterations (None) log no agreement: the mean is over the API ones only
    for s, (a, b) in enumerate([(40.0, 60.0), (50.0, 70.0), (30.0, 50.0)]):
        write("bidf_mkd", s, [a, None, None, b])
    write("random", 0, [None, None])
    runner = CliRunner()
    out = runner.invoke(main, ["compare", str(tmp_path), "--metric", "agreement", "--format", "csv"])
    assert out.exit_code == 0, out.output
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(out.output))}
    assert set(rows) == {"bidf_mkd"} and rows["bidf_mkd"]["metric"] == "agreement"
    assert float(rows["bidf_mkd"]["mean"]) == pytest.approx(50.0) and rows["bidf_mkd"]["seeds"] == "3"
    assert float(rows["bidf_mkd"]["ci95"]) == pytest.approx(report.mean_ci95([50.0, 60.0, 40.0], student_t=True)[1])
    md = runner.invoke(main, ["compare", str(tmp_path), "--metric", "agreement", "--format", "md"]).output
    assert "mean agreement" in md and "Training metric 'agreement'" in md and "**" not in md
    for extra in (["--against", "random"], ["--split", "val"], ["--format", "html"]):
        bad = runner.invoke(main, ["compare", str(tmp_path), "--metric", "agreement", *extra])
        assert bad.exit_code != 0 and "--metric tabulates a training metric" in bad.output, extra
    missing = runner.invoke(main, ["compare", str(tmp_path), "--metric", "nope"])
    assert missing.exit_code != 0 and "logged a metric 'nope'" in missing.output and "Traceback" not in missing.output
