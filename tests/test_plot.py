"""Curves and tables from synthetic run folders with known values; statistics against closed forms."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from pref_brl import stats
from pref_brl.config import preset_config
from pref_brl.experiments.plot import main
from pref_brl.results import ResultsError, assign_groups, curves, final_table, load, to_markdown


def make_run(root: Path, method: str, seed: int, evals: list[tuple[int, float]], budget: int = 100,
             feedback: list[tuple[int, int]] = (), env: str = "walker_walk", done: bool = True,
             metric: str = "eval/mean_reward", **changes) -> Path:
    """A run folder as the trainer writes it (config.json, scalars.jsonl, done.json), without training."""
    label = f"{env}/{method}/seed{seed}" if method == "sac" else f"{env}/{method}/budget{budget}/oracle/seed{seed}"
    folder = root / label
    folder.mkdir(parents=True)
    cfg = preset_config("cpu", env, method=method, seed=seed, max_feedback=budget, run_dir=str(folder), **changes)
    (folder / "config.json").write_text(cfg.to_json(), encoding="utf-8")
    records = [{"step": s, metric: v, "eval/other": 0.0} for s, v in evals]
    records += [{"step": s, "feedback/total": t, "feedback/labeled": t} for s, t in feedback]
    records += [{"step": s, "train/critic_loss": 1.0} for s, _ in evals]  # other tags at the same steps
    records.sort(key=lambda r: r["step"])
    (folder / "scalars.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    if done:
        (folder / "done.json").write_text("{}", encoding="utf-8")
    return folder


STEPS = [100, 200, 300, 400]
PEBBLE_FINAL = [1.0, 2.0, 3.0, 10.0]
BILEVEL_FINAL = [5.0, 6.0, 7.0, 8.0]


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """4 seeds of pebble and bilevel at budget 100, sac; every curve is linear up to its known final value."""
    root = tmp_path / "study"
    feedback = [(100, 40), (200, 80), (300, 100)]
    for seed in range(4):
        for method, finals in (("pebble", PEBBLE_FINAL), ("bilevel", BILEVEL_FINAL)):
            final = finals[seed]
            make_run(root, method, seed, [(s, final * s / 400) for s in STEPS], feedback=feedback)
        make_run(root, "sac", seed, [(s, 20.0 * s / 400) for s in STEPS])
    return root


def test_statistics_closed_forms() -> None:
    x = np.array([[1.0], [2.0], [3.0], [10.0]])
    assert stats.mean(x) == 4.0 and stats.iqm(x) == 2.5  # IQM of 4 runs: mean of the middle two
    assert stats.iqm(np.arange(8.0).reshape(8, 1)) == 3.5 and stats.iqm(np.array([[1.0], [9.0]])) == 5.0
    y = np.array([[5.0], [6.0], [7.0], [8.0]])
    assert stats.probability_of_improvement(y, x) == 12 / 16  # each y beats 1, 2, 3 but not 10
    assert stats.probability_of_improvement(x, x) == 0.5  # ties count half
    lo, hi = stats.stratified_bootstrap_ci(np.full((5, 1), 3.0), stats.mean)
    assert lo == hi == 3.0
    lo, hi = stats.stratified_bootstrap_ci(x, stats.mean, reps=4000)
    assert 1.0 <= lo < 4.0 < hi <= 10.0


def test_table_has_known_values_and_intervals_contain_the_estimate(study: Path) -> None:
    runs, metrics = load([study])
    assert metrics == {"walker_walk": "eval/mean_reward"}
    rows = {(r.group.method, r.group.budget): r for r in final_table(runs, metrics, "iqm", reps=2000)}
    assert set(rows) == {("sac", None), ("pebble", 100), ("bilevel", 100)}
    pebble, bilevel = rows[("pebble", 100)], rows[("bilevel", 100)]
    assert pebble.point == pytest.approx(2.5) and pebble.scores.mean() == pytest.approx(4.0)
    assert bilevel.point == pytest.approx(6.5) and rows[("sac", None)].point == pytest.approx(20.0)
    assert pebble.final_steps == (400, 400) and pebble.finished == 4
    p, lo, hi = bilevel.poi["bilevel > pebble"]
    assert p == pytest.approx(0.75) and lo <= p <= hi and lo < hi
    for row in rows.values():
        assert row.lo <= row.point <= row.hi
    mean_rows = final_table(runs, metrics, "mean", reps=500)
    assert [r.point for r in mean_rows] == pytest.approx([20.0, 4.0, 6.5])


def test_curves_against_steps_and_labels(study: Path) -> None:
    runs, metrics = load([study])
    by_method = {c.group.method: c for c in curves(runs, "eval/mean_reward", "steps", "mean", reps=500)}
    pebble = by_method["pebble"]
    assert list(pebble.x) == STEPS and pebble.runs == 4
    assert pebble.point == pytest.approx(np.mean(PEBBLE_FINAL) * np.array(STEPS) / 400)
    for curve in by_method.values():
        assert np.all(curve.lo <= curve.point + 1e-12) and np.all(curve.point <= curve.hi + 1e-12)
    by_labels = {c.group.method: c for c in curves(runs, "eval/mean_reward", "labels", "mean", reps=500)}
    assert "sac" not in by_labels  # sac uses no labels
    # labels used at the evals at steps 100..400: 40, 80, 100, 100 (the last eval at 100 labels counts)
    assert list(by_labels["bilevel"].x) == [40, 80, 100]
    assert by_labels["bilevel"].point == pytest.approx(np.mean(BILEVEL_FINAL) * np.array([1, 2, 4]) / 4)


def test_unequal_eval_grids_are_aligned_within_each_runs_range(tmp_path: Path) -> None:
    make_run(tmp_path, "pebble", 0, [(s, s / 10) for s in range(100, 1001, 100)])
    make_run(tmp_path, "pebble", 1, [(s, s / 10 + 10) for s in range(150, 901, 150)])
    runs, _ = load([tmp_path])
    (both,) = curves(runs, "eval/mean_reward", "steps", "mean", reps=200)
    inside = ~np.isnan(both.point)
    assert both.x[inside].min() == 150 and both.x[inside].max() == 900  # only where both seeds have values
    assert both.point[inside] == pytest.approx(both.x[inside] / 10 + 5)  # interpolation of linear curves
    (any_seed,) = curves(runs, "eval/mean_reward", "steps", "mean", min_runs=1, reps=200)
    assert any_seed.x[0] == 100 and any_seed.x[-1] == 1000
    assert any_seed.point[0] == pytest.approx(10.0) and any_seed.point[-1] == pytest.approx(100.0)


def test_cli_writes_figures_and_tables(study: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "plots"
    assert main([str(study), "--out", str(out), "--reps", "300"]) == 0
    names = {p.name for p in out.iterdir()}
    for stem in ("walker_walk_eval-mean_reward_vs_steps", "walker_walk_eval-mean_reward_vs_labels"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert (out / "walker_walk_eval-mean_reward_vs_steps.png").read_bytes()[:4] == b"\x89PNG"
    table = list(csv.DictReader((out / "final.csv").open(encoding="utf-8")))
    assert [(r["method"], r["budget"], float(r["value"])) for r in table] == [
        ("sac", "", 20.0), ("pebble", "100", 2.5), ("bilevel", "100", 6.5)]
    assert float(table[2]["poi(bilevel>pebble)"]) == 0.75
    markdown = (out / "final.md").read_text(encoding="utf-8")
    assert "| walker_walk | bilevel | 100 | 4 (4) | 400 | eval/mean_reward | 6.5 [" in markdown
    assert "P(bilevel > pebble) [95% CI]" in markdown and "0.75 [" in markdown
    assert main([str(study), "--out", str(out), "--x", "steps", "--aggregate", "mean", "--reps", "100"]) == 0


def test_metaworld_defaults_to_success_rate_and_mixed_envs_explain_the_fix(tmp_path: Path, capsys) -> None:
    door = "metaworld_door-open-v3"
    make_run(tmp_path, "pebble", 0, [(100, 0.5)], env=door, budget=1000, metric="eval/success_rate")
    make_run(tmp_path, "pebble", 0, [(100, 50.0)])
    runs, metrics = load([tmp_path])
    assert metrics == {door: "eval/success_rate", "walker_walk": "eval/mean_reward"}
    assert main([str(tmp_path), "--metric", "eval/success_rate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: eval/success_rate is not logged by the walker_walk run") and err.count("\n") == 1
    assert "mix envs metaworld_door-open-v3, walker_walk" in err and "--env NAME" in err
    assert main([str(tmp_path), "--metric", "eval/success_rate", "--env", door, "--reps", "50"]) == 0


def test_bad_folders_fail_clearly(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match="no run folders"):
        load([tmp_path / "empty"])
    assert main([str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    make_run(tmp_path / "a", "pebble", 0, [(100, 1.0)])
    make_run(tmp_path / "b", "pebble", 0, [(100, 2.0)])
    with pytest.raises(ResultsError, match="same config and seed"):
        load([tmp_path / "a", tmp_path / "b"])
    make_run(tmp_path / "c", "pebble", 0, [], done=False)
    with pytest.raises(ResultsError, match="no run has an evaluation yet"):
        load([tmp_path / "c"])


def test_runs_differing_in_a_setting_are_separate_lines(tmp_path: Path) -> None:
    for seed in range(3):
        make_run(tmp_path / "x", "bilevel", seed, [(100, 1.0)], penalty_weight=0.5)
        make_run(tmp_path / "y", "bilevel", seed, [(100, 3.0)], penalty_weight=1.0)
        make_run(tmp_path / "y", "pebble", seed, [(100, 2.0)])
    runs, metrics = load([tmp_path])
    rows = final_table(runs, metrics, "mean", reps=100)
    labels = [r.group.label for r in rows]
    # a group is named by its settings that differ from the preset (penalty_weight 1 is the preset's)
    assert labels == ["pebble", "bilevel", "bilevel+penalty_weight=0.5"]
    assert rows[1].poi["bilevel > pebble"][0] == 1.0
    assert "bilevel > pebble" not in rows[2].poi  # `bilevel` names the preset's group alone when it exists
    named = final_table(runs, metrics, "mean", (("bilevel+penalty_weight=0.5", "pebble"),), reps=100)
    assert named[2].poi["bilevel+penalty_weight=0.5 > pebble"][0] == 0.0 and named[1].poi == {}
    for run in runs:  # without a group at the preset's settings, `bilevel` names every bilevel group
        run.config["penalty_weight"] = {1.0: 2.0}.get(run.config["penalty_weight"], run.config["penalty_weight"])
    assign_groups(runs)
    rows = final_table(runs, metrics, "mean", reps=100)
    assert [r.poi["bilevel > pebble"][0] for r in rows[1:]] == [0.0, 1.0]


def test_method_variants_are_named_like_the_sweep_names_them_and_compared_by_name(tmp_path: Path) -> None:
    finals = {"pebble": 2.0, "bilevel": 4.0, "control": 3.0, "replay": 1.0, "mrn": 5.0}
    for seed in range(3):
        make_run(tmp_path / "p", "pebble", seed, [(100, finals["pebble"] + seed / 10)])
        make_run(tmp_path / "m", "mrn", seed, [(100, finals["mrn"] + seed / 10)])
        make_run(tmp_path / "b", "bilevel", seed, [(100, finals["bilevel"] + seed / 10)])
        make_run(tmp_path / "c", "bilevel", seed, [(100, finals["control"] + seed / 10)], penalty=False)
        make_run(tmp_path / "r", "bilevel", seed, [(100, finals["replay"] + seed / 10)], penalty=False,
                 b_in_replay=False)
    argv = [str(tmp_path), "--out", str(tmp_path / "plots"), "--reps", "50", "--compare",
            "bilevel:bilevel+penalty=false", "bilevel+penalty=false:bilevel+b_in_replay=false+penalty=false"]
    assert main(argv) == 0  # the command line takes variants on either side
    assert "| 1.00 [1.00, 1.00] |" in (tmp_path / "plots" / "final.md").read_text()
    runs, metrics = load([tmp_path])
    compare = (("bilevel", "pebble"), ("mrn", "pebble"), ("bilevel", "bilevel+penalty=false"),
               ("bilevel+penalty=false", "bilevel+b_in_replay=false+penalty=false"))
    rows = {r.group.label: r for r in final_table(runs, metrics, "mean", compare, reps=100)}
    assert list(rows) == ["pebble", "mrn", "bilevel", "bilevel+penalty=false",
                          "bilevel+b_in_replay=false+penalty=false"]
    assert rows["bilevel"].poi == {"bilevel > pebble": (1.0, 1.0, 1.0),
                                   "bilevel > bilevel+penalty=false": (1.0, 1.0, 1.0)}
    assert rows["mrn"].poi == {"mrn > pebble": (1.0, 1.0, 1.0)}
    assert rows["bilevel+penalty=false"].poi == {
        "bilevel+penalty=false > bilevel+b_in_replay=false+penalty=false": (1.0, 1.0, 1.0)}
    assert rows["bilevel+b_in_replay=false+penalty=false"].poi == {}
    assert rows["bilevel+penalty=false"].point == pytest.approx(3.1)
    from pref_brl.experiments.plot import SPARE_COLORS, colors_for

    colors = colors_for([r.group for r in rows.values()])  # the walker study's five lines (and sac's)
    assert len(set(colors.values())) == len(colors) == 5, colors
    many = colors_for([r.group for r in runs] + [dataclasses.replace(runs[0].group, variant=(("v", i),))
                                                 for i in range(len(SPARE_COLORS) - 2)])
    assert len(set(many.values())) == len(many), many  # every line its own colour while spare colours last


def test_fewer_than_three_seeds_get_no_interval_and_no_probability_of_improvement(tmp_path: Path) -> None:
    for seed in range(2):
        make_run(tmp_path, "bilevel", seed, [(100, 1.0 + seed)])
        make_run(tmp_path, "pebble", seed, [(100, 2.0 + seed)])
    runs, metrics = load([tmp_path])
    rows = final_table(runs, metrics, "mean", reps=100)
    assert all(np.isnan(r.lo) and np.isnan(r.hi) for r in rows)
    assert np.isnan(rows[1].poi["bilevel > pebble"][0])
    markdown = to_markdown(rows, "mean")
    assert markdown.count("n/a (n < 3)") == 3 and "[" not in markdown.split("\n", 2)[2]
    curve = curves(runs, "eval/mean_reward")[0]
    assert np.isnan(curve.lo).all() and not np.isnan(curve.point).all()


def test_axis_label_claims_a_ci_only_where_a_band_is_drawn_and_label_ticks_are_whole(tmp_path, monkeypatch) -> None:
    from pref_brl.experiments import plot
    from pref_brl.results import Curve, Group

    figures = []
    monkeypatch.setattr(plot, "save", lambda fig, base, formats: figures.append(fig) or [])
    group, x = Group("walker_walk", "pebble", 10), np.array([0.0, 1.0, 2.0, 3.0])
    no_band = Curve(group, x, x, np.full(4, np.nan), np.full(4, np.nan), 2)  # 2 seeds: no interval
    banded = Curve(group, x, x, x - 1, x + 1, 3)
    plot.draw([no_band], "walker_walk", "eval/mean_reward", "labels", "iqm", tmp_path / "a", ("png",))
    plot.draw([banded], "walker_walk", "eval/mean_reward", "labels", "iqm", tmp_path / "b", ("png",))
    first, second = (fig.axes[0] for fig in figures)
    assert first.get_ylabel() == "eval/mean_reward (IQM)"
    assert second.get_ylabel() == "eval/mean_reward (IQM, 95% CI)"
    assert all(float(tick).is_integer() for tick in first.get_xticks())  # labels are counted, never 1.5


def test_labels_rename_groups_in_tables_figures_and_compare(tmp_path: Path, monkeypatch, capsys) -> None:
    from pref_brl.experiments import plot

    for seed in range(3):
        make_run(tmp_path / "p", "pebble", seed, [(100, 2.0 + seed / 10)])
        make_run(tmp_path / "b", "pebble", seed, [(100, 4.0 + seed / 10)], uncertainty_bonus=1.0)
        make_run(tmp_path / "s", "sac", seed, [(100, 9.0)])
    legends = []
    real_save = plot.save
    monkeypatch.setattr(plot, "save", lambda fig, base, formats: legends.append(
        [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]) or real_save(fig, base, formats))
    out = tmp_path / "plots"
    argv = [str(tmp_path), "--out", str(out), "--reps", "50", "--x", "steps", "--label",
            "pebble+uncertainty_bonus=1.0=pebble, bonus", "sac=SAC", "--compare", "pebble, bonus:pebble"]
    assert main(argv) == 0
    table = (out / "final.md").read_text()
    assert "| pebble, bonus | 100 |" in table and "| SAC (true reward) | - |" in table and "| pebble | 100 |" in table
    assert "P(pebble, bonus > pebble) [95% CI]" in table and "| 1.00 [1.00, 1.00] |" in table
    assert "uncertainty_bonus" not in table
    assert legends == [["pebble (n=3)", "pebble, bonus (n=3)", "SAC (true reward) (n=3)"]]
    args = plot.PlotArgs(folders=(str(tmp_path),), label=("pebble+uncertainty_bonus=1.0=pebble, bonus",),
                         compare=("pebble+uncertainty_bonus=1.0:pebble",), reps=50)
    rows, _ = plot.tables(args, *plot.load_runs(args))  # the docs' check goes this way; --compare takes the long name
    assert [r.group.label for r in rows] == ["sac (true reward)", "pebble", "pebble, bonus"]
    assert rows[2].poi == {"pebble+uncertainty_bonus=1.0 > pebble": (1.0, 1.0, 1.0)}
    assert rows[2].group == rows[2].group.__class__("walker_walk", "pebble", 100, rows[2].group.extras,
                                                    rows[2].group.variant)  # the given name is not identity
    capsys.readouterr()
    bonus = "pebble+uncertainty_bonus=1.0"
    bad = [(["sac"], "--label takes NAME=TEXT"),
           ([bonus], "no group is named 'pebble+uncertainty_bonus' (NAME=TEXT splits at the"),
           (["sac=a:b"], "may not hold ':'"), (["sac=a|b"], "may not hold ':'"), (["sac=a\nb"], "may not hold ':'"),
           (["sac=a\u200bb"], "may not hold ':'"),
           (["pebb\nle=x"], "no group is named 'pebb\\nle'"), (["mrn=x"], "no group is named 'mrn'"),
           (["sac=pebble"], "'pebble' is already the name of a group or a method"),
           ([f"{bonus}=pebble", "pebble=plain"], "'pebble' is already the name of a group or a method"),
           (["sac=pebble", "pebble=sac"], "is already the name of a group or a method"),
           ([f"{bonus}=bilevel"], "'bilevel' is already the name of a group or a method"),
           ([f"{bonus}=SAC (true reward)", "sac=SAC"], "two groups would both be shown as 'SAC (true reward)'"),
           (["sac=x", "pebble=x"], "two groups the text 'x'"), (["sac=x", "sac=y"], "names 'sac' twice")]
    for labels, message in bad:
        fresh = tmp_path / "fresh"
        assert main([str(tmp_path), "--out", str(fresh), "--label", *labels]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (labels, err)
        assert not fresh.exists()


def write_check(path: Path, run_dir: Path, step: int, labels: int, accuracies: dict[str, float],
                own: tuple[float, float] = (float("nan"), 1.0), other_learned: float = 0.5,
                pair_accuracy: float = 0.6, coverage: float = float("nan")) -> None:
    """A check as pref-brl-reward-check writes it (--out FILE gives FILE.json), with made-up numbers; `own` is the
    own agent's (success, learned return), `coverage` the other policies' label coverage."""
    from pref_brl.reward_check import OWN, PolicyScore, RewardCheck

    nan = float("nan")
    policies = [PolicyScore(OWN, 2, own[0], 1.0, own[1], 4, nan, nan, 0.1, step)]
    policies += [PolicyScore(name, 2, nan, 9.0, other_learned, 4, acc, 1.0, 0.2, None, coverage)
                 for name, acc in accuracies.items()]
    check = RewardCheck(str(run_dir), "walker_walk", 50, 0, step, labels, policies, 0.3, pair_accuracy, [[1.0]],
                        [[1.0]])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(check.to_json(), encoding="utf-8")


def test_reward_checks_are_drawn_as_series_per_run_and_policy(study: Path, tmp_path: Path, capsys) -> None:
    from pref_brl.check_series import check_files, load_series
    from pref_brl.experiments.plot import check_panels, labels_spent
    from pref_brl.results import apply_labels

    checks, sac = study / "reward-checks", study / "walker_walk" / "sac" / "seed0"
    elsewhere = Path("runs") / "walker-other"  # the checks name the runs where they ran, not where they lie now
    for seed in (5, 10):  # the study has seeds 0-3
        run = elsewhere / "walker_walk" / "pebble" / "budget100" / "oracle" / f"seed{seed}"
        # file names out of step order: the series is ordered by the checks' steps
        for name, step, labels in (("b", 100, 40), ("a", 300, 100), ("c", 200, 100)):
            write_check(checks / f"{name}-{seed}.json", run, step, labels,
                        {str(sac): step / 1000 + seed / 100, "Meta-World scripted policy": 0.5})
    # a check that names the sac run by another path (relative to another folder): the same policy
    write_check(checks / "e-5.json", elsewhere / "walker_walk" / "pebble" / "budget100" / "oracle" / "seed5", 400,
                100, {"elsewhere/walker_walk/sac/seed0": 0.45})
    # the same method at another budget, whose runs are not among the plotted folders
    other = elsewhere / "walker_walk" / "pebble" / "budget50" / "oracle" / "seed2"
    write_check(checks / "d.json", other, 100, 50, {str(sac): 0.7})
    (checks / "watch.json").write_text('{"run": "x"}', encoding="utf-8")  # a --watch folder's settings: skipped
    (checks / ".half-written.json").write_text('{"run', encoding="utf-8")  # a hidden file: skipped
    series = load_series(check_files([checks, checks]))  # a folder given twice is read once
    assert [(s.run, s.against) for s in series] == [  # numbers in folder names in number order
        (("pebble", "budget50", "oracle", "seed2"), "sac/seed0"),
        (("pebble", "budget100", "oracle", "seed5"), "sac/seed0"),
        (("pebble", "budget100", "oracle", "seed5"), "scripted policy"),
        (("pebble", "budget100", "oracle", "seed10"), "sac/seed0"),
        (("pebble", "budget100", "oracle", "seed10"), "scripted policy")]
    first = series[1]
    assert first.steps == (100, 200, 300, 400) and first.labels == (40, 100, 100, 100)
    assert first.cross_accuracy == pytest.approx((0.15, 0.25, 0.35, 0.45))
    assert series[3].cross_accuracy == pytest.approx((0.2, 0.3, 0.4))
    runs, _ = load([study])
    apply_labels(runs, {"pebble": "PEBBLE"})
    panels = check_panels(series, runs)  # none of these runs is the study's: the panels go by their folders
    assert [(p.title, p.budget, len(p.series)) for p in panels] == [
        ("pebble/budget50/oracle", 50, 1), ("pebble/budget100/oracle", 100, 4)]
    assert labels_spent(panels[1]) == 200 and labels_spent(panels[0]) == 100
    for seed in (0, 1):  # checks of the study's own runs take their group's name, --label's text included
        write_check(checks / f"own-{seed}.json", study / "walker_walk" / "pebble" / "budget100" / "oracle" /
                    f"seed{seed}", 100, 80, {str(sac): 0.5})
    panels = check_panels(load_series(check_files([checks])), runs)
    own = [p for p in panels if p.title == "PEBBLE"]
    assert [(p.budget, [s.seed for s in p.series]) for p in own] == [(100, ["seed0", "seed1"])]
    assert labels_spent(own[0]) is None  # 80 of 100 labels at the last check
    out = tmp_path / "plots"
    assert main([str(study), "--out", str(out), "--reps", "50", "--label", "pebble=PEBBLE"]) == 0  # the default
    assert (out / "walker_walk_reward-checks.png").read_bytes()[:4] == b"\x89PNG"
    door = "metaworld_door-open-v3"  # --env keeps the checks of its envs only
    write_check(checks / "door.json", Path("runs") / door / "pebble" / "budget1000" / "oracle" / "seed0", 100, 40,
                {"Meta-World scripted policy": 0.5})
    text = (checks / "door.json").read_text(encoding="utf-8")
    (checks / "door.json").write_text(text.replace('"env": "walker_walk"', f'"env": "{door}"'), encoding="utf-8")
    assert main([str(study), "--out", str(tmp_path / "all"), "--reps", "50"]) == 0
    assert (tmp_path / "all" / f"{door}_reward-checks.png").exists()
    assert main([str(study), "--out", str(tmp_path / "walker"), "--reps", "50", "--env", "walker_walk"]) == 0
    assert not (tmp_path / "walker" / f"{door}_reward-checks.png").exists()
    assert (tmp_path / "walker" / "walker_walk_reward-checks.png").exists()


def test_reward_checks_are_tabled_per_run_before_and_with_every_label(study: Path, tmp_path: Path,
                                                                      capsys) -> None:
    from pref_brl.experiments.plot import CHECK_TABLE_HEAD

    checks, nan = tmp_path / "checks", float("nan")
    run = study / "walker_walk" / "pebble" / "budget100" / "oracle" / "seed0"
    # step: (labels, cross-pair accuracy, own success, own learned return, other's, pair accuracy, label coverage)
    points = {100: (40, 0.2, 0.0, 5.0, 1.0, 0.4, 0.9), 200: (80, 0.7, 0.5, 6.0, 2.0, 0.5, 0.1),
              300: (100, nan, 0.5, nan, 3.0, nan, 0.3), 400: (100, 0.3, nan, 7.0, 4.0, 0.6, nan),
              500: (100, 0.9, 0.2, 9.0, 4.0, 0.8, 0.5), 600: (100, 0.6, 0.0, 8.0, 4.0, 0.9, 0.4)}
    for step, (labels, acc, success, own, other, pairs, coverage) in points.items():
        write_check(checks / f"{step}.json", run, step, labels, {"Meta-World scripted policy": acc},
                    (success, own), other, pairs, coverage)
    # a run outside the study: its budget is not known, so every check is before its last label
    write_check(checks / "away.json", Path("runs") / "walker_walk" / "away", 50, 10, {"x": 0.8}, (0.0, 2.0))
    # at the edges of the formats: 0.4999 shows as 0.50 and counts as 0.5 there, -0.3 rounds to 0 (no "-0"), a
    # success of 0.04 is not 0, and a '|' in a name does not end its cell
    write_check(checks / "edge.json", Path("runs") / "walker_walk" / "pebble" / "budget10" / "oracle" / "a|b", 70, 10,
                {"x|y": 0.4999}, (0.04, -0.3))
    out = tmp_path / "plots"
    assert main([str(study), "--checks", str(checks), "--out", str(out), "--reps", "50",
                 "--label", "pebble=PEBBLE"]) == 0
    table = (out / "walker_walk_reward-checks.md").read_text(encoding="utf-8")
    assert table in capsys.readouterr().out
    head, rule, *rows = table.splitlines()
    assert head == "| " + " | ".join(CHECK_TABLE_HEAD) + " |" and len(rows) == 3
    assert rows[0] == ("| pebble/budget10/oracle | 10 | a\\|b | x\\|y | 1 (70) | n/a | 70 (10) | 70 | 0.50 | 0.50 | "
                       "0 / 0 | 0.60 | n/a | 0.04 (70) |")  # budget 10 before 100
    rows = rows[1:]
    assert [c.strip() for c in rows[0].split("|")[1:-1]] == [  # --label's text goes by its method, pebble
        "PEBBLE", "100", "seed0", "scripted policy", "6 (100 to 600)",
        "0.20 to 0.70",      # 100 and 200 only: 80 labels of 100
        "200 (80)",          # first at 0.5 or above
        "500",               # 0.3 at 400 broke it; the NaN at 300 neither breaks nor holds it
        "0.30 to 0.90",      # 300-600, the NaN (first, where min() would keep it) left out
        "0.60",
        "7 to 9 / 3 to 4",   # own agent's NaN left out
        "0.60 to 0.90",
        "0.30 to 0.50",      # label coverage with every label: 300-600, a check without it (NaN) left out
        "0.50 (200)"]        # the best success, at its first step
    assert [c.strip() for c in rows[1].split("|")[1:-1]] == [  # an unknown method after the known ones
        "away", "-", "away", "x", "1 (50)", "0.80", "50 (10)", "50", "n/a", "0.80", "n/a / n/a", "n/a", "n/a", "0.00"]


def test_reward_checks_that_cannot_be_drawn_are_refused_before_anything_is_written(study: Path, tmp_path: Path,
                                                                                   capsys) -> None:
    run = study / "walker_walk" / "pebble" / "budget100" / "oracle" / "seed0"
    bad = tmp_path / "bad"
    cases = []

    def case(name: str, message: str, text: str | None = None, edit=None, **accuracies) -> None:
        folder = bad / name
        if text is not None:
            folder.mkdir(parents=True)
            (folder / "x.json").write_text(text, encoding="utf-8")
        elif edit is not None:
            write_check(folder / "x.json", run, 100, 40, accuracies or {"other": 0.5})
            (folder / "x.json").write_text(edit((folder / "x.json").read_text(encoding="utf-8")), encoding="utf-8")
        cases.append((folder, message))

    case("1", "x.json is not a pref-brl-reward-check result (no run_dir)", text='{"step": 1}')
    case("2", "x.json is not a pref-brl-reward-check result (unreadable", text="{not json")
    case("3", "(unreadable: RecursionError)", text="[" * 100_000 + "]" * 100_000)
    case("4", "(not a JSON object)", text="[1, 2]")
    case("5", "env '../../escaped' is not a known environment",
         edit=lambda t: t.replace('"env": "walker_walk"', '"env": "../../escaped"'))
    case("6", "no step that is a count", edit=lambda t: t.replace('"step": 100,', '"step": ' + "9" * 400 + ","))
    case("7", "no labels that is a count", edit=lambda t: t.replace('"labels": 40,', '"labels": -1,'))
    case("8", "a policy without a name and a cross_accuracy in [0, 1]",
         edit=lambda t: t.replace('"cross_accuracy": 0.5', '"cross_accuracy": ' + "9" * 400))
    case("9", "a policy without a name and a cross_accuracy in [0, 1]",
         edit=lambda t: t.replace('"cross_accuracy": 0.5', '"cross_accuracy": 1.2'))
    case("10", "a policy without a name and a cross_accuracy in [0, 1]",
         edit=lambda t: t.replace('"cross_accuracy": 0.5', '"cross_accuracy": "high"'))
    case("11", "names the policy 'other' twice", edit=lambda t: t.replace('"name": "x"', '"name": "other"'),
         other=0.5, x=0.4)
    case("15", "policy 'own agent': a success that is not a share in [0, 1]",
         edit=lambda t: t.replace('"success": NaN', '"success": 1.5', 1))
    case("16", "policy 'own agent': a learned_return that is not a finite number",
         edit=lambda t: t.replace('"learned_return": 1.0', '"learned_return": Infinity'))
    case("17", "policy 'other': a learned_return that is not a finite number",
         edit=lambda t: t.replace('"learned_return": 0.5', '"learned_return": "high"'))
    case("18", "a pair_accuracy that is not a share in [0, 1]",
         edit=lambda t: t.replace('"pair_accuracy": 0.6', '"pair_accuracy": -0.1'))
    case("19", "policy 'own agent': a label_coverage that is not a share in [0, 1]",
         edit=lambda t: t.replace('"label_coverage": NaN', '"label_coverage": 2', 2))
    write_check(bad / "12" / "a.json", run, 100, 40, {"other": 0.5})
    write_check(bad / "12" / "b.json", run, 100, 40, {"other": 0.6})
    cases.append((bad / "12", "two checks of walker_walk/pebble/budget100/oracle/seed0 at step 100"))
    (bad / "13").mkdir()
    cases.append((bad / "13", "--checks: no pref-brl-reward-check results (.json) in"))
    write_check(bad / "14" / "a.json", run, 100, 40, {})
    cases.append((bad / "14", "score no policy but the run's own agent"))
    cases.append((bad / "missing", "is not a folder; pass folders of pref-brl-reward-check results"))
    for folder, message in cases:
        out = tmp_path / "plots"
        assert main([str(study), "--checks", str(folder), "--out", str(out), "--reps", "50"]) == 2, message
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
        assert not out.exists() and not (tmp_path.parent / "escaped_reward-checks.png").exists()
