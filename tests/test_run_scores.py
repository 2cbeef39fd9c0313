"""pref-brl-plot's per-run table (runs.md, runs.csv) from synthetic run folders with known evaluations."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pref_brl.experiments.plot import main
from pref_brl.results import load
from pref_brl.run_scores import run_scores, to_markdown
from tests.test_plot import make_run

DOOR = "metaworld_door-open-v3"
STEPS = [10_000 * i for i in range(1, 8)]


def door_run(root: Path, seed: int, values: list[float], method: str = "pebble", **changes) -> Path:
    return make_run(root, method, seed, list(zip(STEPS, values)), env=DOOR, budget=1000,
                    metric="eval/success_rate", **changes)


def scores_of(root: Path, window: int, threshold: float | None) -> dict[int, object]:
    runs, metrics = load([root])
    return {s.seed: s for s in run_scores(runs, metrics, window, threshold)}


def test_final_best_and_first_window_at_the_threshold(tmp_path: Path) -> None:
    door_run(tmp_path, 0, [0.0, 0.2, 0.9, 0.8, 0.0, 1.0, 1.0])  # windows of 3: .37 .63 .57 .6 .67
    door_run(tmp_path, 1, [0.0, 0.0, 0.5, 0.5, 0.5, 0.1, 0.0])  # .17 .33 .5 .37 .2: reaches 0.5 exactly once
    door_run(tmp_path, 2, [0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.6])  # single evaluations reach it, no window does
    by_seed = scores_of(tmp_path, 3, 0.5)
    first, second, third = by_seed[0], by_seed[1], by_seed[2]
    assert first.final == pytest.approx(2 / 3) and first.passes is True
    assert first.reached == 40_000  # the window of steps 20k-40k, named by its last evaluation
    assert first.best == (1.0, 60_000)  # the first step of the highest evaluation
    assert second.reached == 50_000 and second.final == pytest.approx(0.2) and second.passes is False
    assert third.reached is None and third.best == (0.6, 10_000)
    assert third.passes is False  # its last evaluation is 0.6, but the mean of its last three 0.2
    assert scores_of(tmp_path, 1, 0.5)[2].reached == 10_000  # a window of one: the first evaluation at the level
    assert scores_of(tmp_path, 1, 0.5)[2].passes is True  # its last evaluation is 0.6
    assert scores_of(tmp_path, 3, None)[0].reached is None and scores_of(tmp_path, 3, None)[0].passes is None


def test_a_run_with_fewer_evaluations_than_the_window_is_not_judged(tmp_path: Path) -> None:
    make_run(tmp_path, "pebble", 1, [(10_000, 1.0), (20_000, 0.5)], env=DOOR, budget=1000, metric="eval/success_rate")
    short = scores_of(tmp_path, 3, 0.5)[1]
    assert short.final == 0.75  # two evaluations: the final is their mean, as in final.md
    assert short.reached is None and short.passes is None  # no window of three: the rule does not apply
    runs, metrics = load([tmp_path])
    row = to_markdown(run_scores(runs, metrics, 3, 0.5)).splitlines()[2]
    assert row.endswith("| 0.75 | 1, 0.5 (10,000 to 20,000) | 1 (10,000) | n/a (2 of 3 evaluations) | "
                        "n/a (2 of 3 evaluations) |")


def test_a_mean_exactly_at_the_threshold_reaches_it_despite_floating_point(tmp_path: Path) -> None:
    # 0.7 + 0.5 + 0.3 and 0.6 + 0.7 + 0.2 are 1.5 exactly, but their floating-point means fall just below 0.5
    door_run(tmp_path, 0, [0.0, 0.0, 0.0, 0.0, 0.7, 0.5, 0.3])
    door_run(tmp_path, 1, [0.0, 0.0, 0.0, 0.0, 0.6, 0.7, 0.2])
    assert sum([0.6, 0.7, 0.2]) / 3 < 0.5  # the trap
    by_seed = scores_of(tmp_path, 3, 0.5)
    for seed in (0, 1):
        assert by_seed[seed].reached == 70_000 and by_seed[seed].passes is True


def test_one_threshold_is_for_one_metric(tmp_path: Path, capsys) -> None:
    door_run(tmp_path, 0, [0.0] * 7)
    make_run(tmp_path, "pebble", 0, list(zip(STEPS, [100.0] * 7)))  # walker: eval/mean_reward
    out = tmp_path / "plots"
    assert main([str(tmp_path), "--out", str(out), "--threshold", "0.5", "--reps", "50"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --threshold 0.5 is a level of one metric") and err.count("\n") == 1
    assert f"{DOOR} by eval/success_rate, walker_walk by eval/mean_reward" in err and not out.exists()
    assert main([str(tmp_path), "--out", str(out), "--threshold", "0.5", "--env", DOOR, "--reps", "50"]) == 0


def test_rows_follow_the_final_table_and_seeds_in_number_order(tmp_path: Path) -> None:
    for seed in (10, 2, 11):
        door_run(tmp_path, seed, [0.1 * seed % 1] * 7)
    make_run(tmp_path, "sac", 0, list(zip(STEPS, [1.0] * 7)), env=DOOR, metric="eval/success_rate")
    runs, metrics = load([tmp_path])
    assert [(s.run.group.method, s.seed) for s in run_scores(runs, metrics)] == [
        ("sac", 0), ("pebble", 2), ("pebble", 10), ("pebble", 11)]


def test_the_table_says_what_each_column_holds(tmp_path: Path) -> None:
    door_run(tmp_path, 0, [0.0, 0.2, 0.9, 0.8, 0.0, 1.0, 1.0])
    runs, metrics = load([tmp_path])
    lines = to_markdown(run_scores(runs, metrics, 3, 0.5)).splitlines()
    assert lines[0] == ("| env | method | budget | seed | finished | metric | evaluations | final step "
                        "| final (mean of last 3) | last 3 evaluations (steps) | best (step) "
                        "| first step with the mean of 3 consecutive evaluations >= 0.5 | final >= 0.5 |")
    assert lines[2] == (f"| {DOOR} | pebble | 1000 | 0 | yes | eval/success_rate | 7 | 70,000 | 0.667 "
                        "| 0, 1, 1 (50,000 to 70,000) | 1 (60,000) | 40,000 | yes |")
    plain = to_markdown(run_scores(runs, metrics)).splitlines()
    assert plain[0] == ("| env | method | budget | seed | finished | metric | evaluations | final step | final | "
                        "best (step) |")
    assert plain[2] == f"| {DOOR} | pebble | 1000 | 0 | yes | eval/success_rate | 7 | 70,000 | 1 | 1 (60,000) |"


def test_cli_writes_the_per_run_table_and_refuses_a_threshold_that_is_no_number(tmp_path: Path, capsys) -> None:
    door_run(tmp_path / "study", 0, [0.0, 0.2, 0.9, 0.8, 0.0, 1.0, 1.0])
    door_run(tmp_path / "study", 1, [0.0] * 7, done=False)
    out = tmp_path / "plots"
    assert main([str(tmp_path / "study"), "--out", str(out), "--reps", "50", "--final-window", "3",
                 "--threshold", "0.5", "--label", "pebble=plain pebble"]) == 0
    rows = list(csv.DictReader((out / "runs.csv").open(encoding="utf-8")))
    assert [(r["seed"], r["finished"], r["reached_step"], r["passes"]) for r in rows] == [
        ("0", "1", "40000", "1"), ("1", "0", "", "0")]
    assert float(rows[0]["final"]) == pytest.approx(2 / 3) and rows[0]["threshold"] == "0.5"
    table = (out / "runs.md").read_text(encoding="utf-8")
    assert ("| plain pebble | 1000 | 1 | no | eval/success_rate | 7 | 70,000 | 0 | 0, 0, 0 (50,000 to 70,000) | 0 | "
            "never | no |") in table  # every evaluation 0: no step for the best
    assert f"wrote {out / 'runs.md'}" in capsys.readouterr().out
    for bad in ("nan", "inf", "-inf"):
        fresh = tmp_path / f"plots-{bad}"
        assert main([str(tmp_path / "study"), "--out", str(fresh), "--threshold", bad]) == 2
        err = capsys.readouterr().err
        assert err == f"error: --threshold must be a finite number, got {float(bad)}\n"
        assert not fresh.exists()


def test_numbers_just_below_a_thousand_are_not_printed_in_exponent_form() -> None:
    from pref_brl.results import _fmt
    from pref_brl.run_scores import _num

    for fmt in (_fmt, _num):
        assert (fmt(999.7), fmt(999.4), fmt(-999.7), fmt(1234.5), fmt(0.5)) == ("1000", "999", "-1000", "1234", "0.5")
