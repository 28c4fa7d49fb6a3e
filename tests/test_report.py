"""Summary tables: the gap a method closes between a floor and a ceiling, and method selection."""

from __future__ import annotations

import pytest

from dfml_bench import report
from dfml_bench.errors import ConfigError


def result(method: str, acc: float, shots: int = 1, access: str = "black", scenario: str = "SS") -> dict:
    return {"method": method, "scenario": scenario, "shots": shots, "accuracy": acc, "ci95": 0.5, "access": access,
            "data_free": access != "real_data", "queries": 0, "wall_time_s": 1.0}


@pytest.fixture
def rows() -> list[dict]:
    return report.aggregate([result("random", 40.0), result("maml_oracle", 80.0, access="real_data"),
                             result("bidf_mkd", 50.0), result("kd", 60.0), result("bidf_mkd", 70.0, shots=5),
                             result("random", 60.0, shots=5)])


def test_gap_closed_is_relative_to_floor_and_ceiling_per_column(rows) -> None:
    report.add_gap_closed(rows, "random", "maml_oracle")
    gap = {(r["method"], r["shots"]): r["gap_closed"] for r in rows}
    assert gap[("bidf_mkd", 1)] == pytest.approx(25.0) and gap[("kd", 1)] == pytest.approx(50.0)
    # no ceiling in the 5-shot column, and the references themselves get no gap
    assert gap[("bidf_mkd", 5)] is None and gap[("random", 1)] is None and gap[("maml_oracle", 1)] is None
    md = report.to_markdown(rows)
    assert "50.00 ± 0.50 (gap 25.0%)" in md and "(gap" not in md.splitlines()[-1]  # maml_oracle row
    assert report.to_csv(rows).splitlines()[0].endswith(",failed,gap")


def test_columns_follow_the_scenarios_order_not_the_alphabet() -> None:
    rows = report.aggregate([result("random", 40.0, scenario=s, shots=k)
                             for s in ("mine", "MH", "SH", "SS") for k in (5, 1)])
    assert [(s, k) for _, s, k in report.columns(rows)] == [
        ("SS", 1), ("SS", 5), ("SH", 1), ("SH", 5), ("MH", 1), ("MH", 5), ("mine", 1), ("mine", 5)]
    header = report.to_markdown(rows).splitlines()[0]
    assert header.index("SS 1-shot") < header.index("SH 1-shot") < header.index("MH 5-shot") < header.index("mine")
    lines = [line.split(",") for line in report.to_csv(rows).splitlines()[1:]]
    assert [(f[3], f[4]) for f in lines] == [
        ("SS", "1"), ("SS", "5"), ("SH", "1"), ("SH", "5"), ("MH", "1"), ("MH", "5"), ("mine", "1"), ("mine", "5")]


def test_gap_needs_both_reference_methods(rows) -> None:
    with pytest.raises(ConfigError, match="'purer'"):
        report.add_gap_closed(rows, "random", "purer")


def test_select_methods_keeps_the_given_order_and_re_marks_the_best(rows) -> None:
    assert next(r for r in rows if r["method"] == "kd")["best"]
    chosen = report.select_methods(rows, ["random", "bidf_mkd"])
    assert [r["method"] for r in chosen] == ["random", "random", "bidf_mkd", "bidf_mkd"]
    assert [row[0] for row in report.wide(chosen, ("", ""))[1]] == ["random", "bidf_mkd"]
    best = {(r["method"], r["shots"]) for r in chosen if r["best"]}
    assert best == {("bidf_mkd", 1), ("bidf_mkd", 5)}  # kd, the best of all, is not shown
    with pytest.raises(ConfigError, match="no runs of method"):
        report.select_methods(rows, ["nope"])


def test_runs_of_a_sweep_are_rows_of_their_own_not_seeds_of_one() -> None:
    def run(q: int, seed: int, scenario: str = "SS") -> tuple[dict, dict]:
        r = {**result("bidf_mkd", 40.0 + q + seed), "scenario": scenario, "run_dir": f"d{q}-{seed}-{scenario}"}
        config = {"method": {"name": "bidf_mkd"}, "seed": seed, "version": f"0.{seed}", "shots": 1,
                  "scenario": {"name": scenario}, "components": {"estimator": {"zo_forward": {"q": q, "mu": 0.005}}}}
        return r, config

    pairs = [run(5, 0), run(5, 1), run(20, 0), run(20, 0, "SH")]
    results = [r for r, _ in pairs]
    report.label_variants(results, {r["run_dir"]: c for r, c in pairs} | {"d-none": None})
    assert [r["method"] for r in results] == ["bidf_mkd [zo_forward.q=5]"] * 2 + ["bidf_mkd [zo_forward.q=20]"] * 2
    rows = report.aggregate(results)
    q5 = next(r for r in rows if r["method"] == "bidf_mkd [zo_forward.q=5]")
    assert q5["seeds"] == 2 and q5["accuracy"] == pytest.approx(45.5)  # seeds (and code versions) still pool
    assert {r["base_method"] for r in rows} == {"bidf_mkd"}
    assert len(report.select_methods(rows, ["bidf_mkd"])) == 3  # the base name selects every variant
    one = [result("random", 40.0)]
    report.label_variants(one, {})  # no config known: left as it is
    assert one[0]["method"] == "random"


def test_settings_that_differ_only_between_columns_keep_one_row_and_are_named() -> None:
    def run(lr: float, shots: int, seed: int, q: int = 20) -> tuple[dict, dict]:
        r = {**result("bidf_mkd", 40.0 + seed + shots, shots=shots), "seed": seed, "run_dir": f"{lr}-{shots}-{seed}-{q}"}
        config = {"method": {"name": "bidf_mkd"}, "seed": seed, "shots": shots, "scenario": {"name": "SS"},
                  "train": {"meta_lr": lr}, "components": {"estimator": {"zo_forward": {"q": q}}}}
        return r, config

    # each shot count its own tuned learning rate: one row, two columns
    pairs = [run(0.001, 1, 0), run(0.001, 1, 1), run(0.003, 5, 0), run(0.003, 5, 1)]
    results = [r for r, _ in pairs]
    report.label_variants(results, {r["run_dir"]: c for r, c in pairs})
    assert {r["method"] for r in results} == {"bidf_mkd"}
    rows = report.aggregate(results)
    assert [(r["shots"], r["seeds"], r["column_settings"]) for r in rows] == [
        (1, 2, ["train.meta_lr=0.001"]), (5, 2, ["train.meta_lr=0.003"])]
    assert "Settings chosen per column" in report.to_markdown(rows) and "bidf_mkd: train.meta_lr" in report.table_note(rows)
    csv_lines = report.to_csv(rows).splitlines()
    assert csv_lines[0].endswith(",settings") and csv_lines[2].endswith(",train.meta_lr=0.003")
    # a sweep inside one column still splits, and its label follows the method into every column
    pairs.append(run(0.001, 1, 0, q=5))
    results = [r for r, _ in pairs]
    report.label_variants(results, {r["run_dir"]: c for r, c in pairs})
    assert [r["method"] for r in results] == ["bidf_mkd [zo_forward.q=20]"] * 4 + ["bidf_mkd [zo_forward.q=5]"]
    assert results[2]["column_settings"] == ["train.meta_lr=0.003"]
    plain = report.aggregate([result("random", 40.0), result("random", 60.0, shots=5)])
    assert "Settings chosen" not in report.to_markdown(plain) and "settings" not in report.to_csv(plain)


def test_scenario_parameters_split_rows_only_within_their_scenario() -> None:
    def run(name: str, shift: int, seed: int) -> tuple[dict, dict]:
        r = {**result("random", 40.0 + shift), "scenario": name, "run_dir": f"{name}-{shift}-{seed}"}
        config = {"method": {"name": "random"}, "seed": seed,
                  "scenario": {"name": name, "params": {"api_shift": shift, "architectures": [name]}}}
        return r, config

    # SS and SH differ in their own parameters (not a variant); two SS shifts are
    pairs = [run("SS", 0, 0), run("SS", 0, 1), run("SH", 0, 0), run("SS", 4, 0)]
    results = [r for r, _ in pairs]
    report.label_variants(results, {r["run_dir"]: c for r, c in pairs})
    assert [r["method"] for r in results] == ["random [SS.api_shift=0]"] * 2 + ["random", "random [SS.api_shift=4]"]


def test_an_option_added_after_a_run_reads_as_its_default_so_only_runs_that_set_it_stand_apart(registry) -> None:
    from dfml_bench.config import build_raw_config, resolve_runs, with_current_defaults

    def stored(seed: int, *sets: str) -> dict:
        return resolve_runs(build_raw_config("smoke", sets=(f"seeds=[{seed}]", *sets),
                                             flags={"method": "bidf_mkd"}), registry)[0]

    old = stored(0)
    del old["method"]["params"]["permute"], old["components"]["recoverer"]["generator"]["tv"]  # before both existed
    new, changed = stored(1), stored(0, "method.bidf_mkd.permute=true")
    pairs = [({**result("bidf_mkd", 40.0 + i), "run_dir": f"d{i}"}, config)
             for i, config in enumerate((old, new, changed))]
    results = [r for r, _ in pairs]
    report.label_variants(results, {r["run_dir"]: with_current_defaults(c, registry) for r, c in pairs})
    assert [r["method"] for r in results] == ["bidf_mkd [params.permute=False]"] * 2 + ["bidf_mkd [params.permute=True]"]
    assert with_current_defaults(old, registry)["components"]["recoverer"]["generator"]["tv"] == 0.0
    assert "permute" not in old["method"]["params"]  # the stored config itself is left as it was
    renamed = stored(2)
    renamed["method"]["params"]["an_option_since_renamed"] = 1  # declared when it ran, not any more
    pairs = [({**result("bidf_mkd", 40.0 + i), "run_dir": f"e{i}"}, config) for i, config in enumerate((old, new))]
    pairs.append(({**result("bidf_mkd", 50.0), "run_dir": "e-renamed"}, renamed))
    results = [r for r, _ in pairs]
    report.label_variants(results, {r["run_dir"]: with_current_defaults(c, registry) for r, c in pairs})
    assert [r["method"] for r in results] == ["bidf_mkd"] * 2 + ["bidf_mkd [params.an_option_since_renamed=1]"]
    gone = {**old, "method": {"name": "uninstalled_method", "params": {"x": 1}}}
    assert with_current_defaults(gone, registry)["method"] == {"name": "uninstalled_method", "params": {"x": 1}}
