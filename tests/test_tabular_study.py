"""The pref-brl-gridworld study end to end, in its quick version."""

from __future__ import annotations

from pathlib import Path

import pytest

from pref_brl.experiments.gridworld import EXTRA_RUNS, main
from pref_brl.tabular.benchmarks import BENCHMARKS
from pref_brl.tabular.methods import PAPER_METHODS


def test_quick_study_writes_every_plot_and_the_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "study"
    main(["--quick", "--out", str(out)])
    for name in BENCHMARKS:
        for plot in ("F_vs_iteration", "F_vs_samples", "gradnorm_vs_iteration"):
            assert (out / f"{name}_{plot}.png").stat().st_size > 10_000
    for grid in ("gridworld_goal", "preference_gridworld"):
        assert (out / f"{grid}_reward_heatmap.png").stat().st_size > 10_000
    assert (out / "penalty_bias_vs_lambda.png").exists()
    table = (out / "results.md").read_text()
    rows = [line for line in table.splitlines() if "| exact calls |" in line or "| samples |" in line]
    assert len(rows) == len(BENCHMARKS) * (2 * len(PAPER_METHODS) + len(EXTRA_RUNS) + 1)
    assert all("nan" not in row for row in rows)
    assert "fitted slope" in table and "--quick" in table
    assert "results.md" in capsys.readouterr().out


def test_study_refuses_to_overwrite_and_rejects_unknown_benchmarks(tmp_path: Path, capsys) -> None:
    (tmp_path / "results.md").write_text("old")
    assert main(["--quick", "--out", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "results.md").read_text() == "old"
    assert main(["--quick", "--out", str(tmp_path / "new"), "--benchmarks", "cartpole"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_help_documents_the_options(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--quick", "--seeds", "--iterations", "--tolerance", "--overwrite", "--resync",
                   "--resync-b-steps", "--resync-kl-targets", "--resync-weights", "--resync-clips", "--estimators",
                   "--estimators-weight", "--estimators-units"):
        assert option in text


def test_quick_resync_study_writes_its_tables_and_checks_its_settings(tmp_path: Path) -> None:
    out = tmp_path / "resync"
    main(["--resync", "--quick", "--out", str(out), "--benchmarks", "random_mdp"])
    table = (out / "resync.md").read_text()
    assert "--resync --quick" in table and "**random_mdp**" in table and "nan" not in table
    assert table.count("| random_mdp |") == 3  # one row in each of the clip, sampled and β-control tables
    assert not (out / "results.md").exists()
    assert main(["--resync", "--quick", "--out", str(out)]) == 2
    assert main(["--resync", "--out", str(tmp_path / "bad"), "--resync-kl-targets", "0"]) == 2
    assert not (tmp_path / "bad").exists()


def test_quick_estimator_study_writes_one_row_per_setting_and_refuses_bad_settings(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pref_brl.tabular.estimator_study import ROWS

    out = tmp_path / "estimators"
    assert main(["--estimators", "--quick", "--out", str(out), "--benchmarks", "gridworld_goal", "random_mdp"]) == 0
    table = (out / "estimators.md").read_text()
    assert "--estimators --quick" in table and "nan" not in table and not (out / "results.md").exists()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == 2 * len(ROWS)
    shared = [row for row in rows if row.startswith("| `shared-states`")]
    assert shared[0].endswith("| — | 1.000 | — |")  # gridworld_goal's state-only reward: no signal at all
    assert "| — |" not in shared[1]  # random_mdp's reward depends on the action
    for bad in (["--estimators-units", "1"], ["--estimators-weight", "0"], ["--resync"]):
        capsys.readouterr()
        assert main(["--estimators", "--out", str(tmp_path / "bad"), *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "bad").exists()
