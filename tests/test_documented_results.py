"""Every results table in the docs is what `pref-brl-plot` computes from the runs kept in the repository.

A documented table sits between two markers that name the command that makes it:

    <!-- final.md of: pref-brl-plot docs/results/walker-v2 --compare bilevel:pebble -->
    | env | method | ... |
    <!-- end -->

(`diagnostics.md of:` for a `--diagnostics` table, `runs.md of:` for the per-run table, `<env>_reward-checks.md
of:` for the table of an env's reward checks). Each one is recomputed here from the archived run folders
(paths relative to the repository root) and must match the docs character for character, so a number in the
docs cannot drift from the data behind it. Tables of `pref-brl-estimators` sit between
`<!-- estimators of: <its .json> -->` and `<!-- end -->` and are recomputed from the measurement file kept in
the repository.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from pref_brl import run_scores
from pref_brl.cli import parse
from pref_brl.experiments.plot import PlotArgs, check_series, check_tables, load_runs, per_run, tables
from pref_brl.results import to_markdown

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"<!-- (final|diagnostics|runs)\.md of: pref-brl-plot (.+?) -->\n(.*?)<!-- end -->", re.S)


def documented_tables() -> list[tuple[str, str, str, str]]:
    """(doc file, kind, plot arguments, documented table) for every marked table in README.md and docs/."""
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for kind, argv, body in BLOCK.findall(doc.read_text(encoding="utf-8")):
            found.append((doc.name, kind, argv, body))
    return found


def plotted(argv: str, monkeypatch) -> tuple[PlotArgs, list, dict[str, str]]:
    """A documented command's arguments and the runs and metrics it loads, from the repository root."""
    monkeypatch.chdir(ROOT)
    args = parse(PlotArgs, "pref-brl-plot", args=shlex.split(argv))
    return args, *load_runs(args)


def test_the_walker_study_is_documented_from_its_archive() -> None:
    blocks = [(doc, kind, argv) for doc, kind, argv, _ in documented_tables() if doc == "bilevel.md"]
    assert {kind for _, kind, _ in blocks} == {"final", "diagnostics"}, "docs/bilevel.md lost its study tables"
    assert all(argv.split()[0] == "docs/results/walker-v2" for _, _, argv in blocks)


@pytest.mark.parametrize("doc, kind, argv, body", documented_tables(),
                         ids=lambda value: value if isinstance(value, str) and len(value) < 40 else None)
def test_documented_table_equals_the_recomputed_one(doc: str, kind: str, argv: str, body: str,
                                                    monkeypatch) -> None:
    args, runs, metrics = plotted(argv, monkeypatch)
    if kind == "runs":
        computed = run_scores.to_markdown(per_run(args, runs, metrics))
    else:
        rows, pooled = tables(args, runs, metrics)
        computed = to_markdown(rows, args.aggregate) if kind == "final" else pooled
    assert computed is not None, f"{doc}: a diagnostics table needs --diagnostics in its command"
    assert body.strip() == computed.strip(), (
        f"{doc}: the {kind} table differs from `pref-brl-plot {argv}`; re-run it and paste its {kind}.md")


CHECK_BLOCK = re.compile(r"<!-- (\S+)_reward-checks\.md of: pref-brl-plot (.+?) -->\n(.*?)<!-- end -->", re.S)


def documented_check_tables() -> list[tuple[str, str, str, str]]:
    """(doc file, env, plot arguments, documented table) for every reward-check table in the docs."""
    return [(doc.name, env, argv, body) for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
            for env, argv, body in CHECK_BLOCK.findall(doc.read_text(encoding="utf-8"))]


def test_the_door_open_checks_are_documented_from_their_archive() -> None:
    assert {argv.split()[0] for doc, _, argv, _ in documented_check_tables() if doc == "door-open.md"} == {
        "docs/results/door-v1", "docs/results/door-dev"}, "docs/door-open.md lost a reward-check table"


@pytest.mark.parametrize("doc, env, argv, body", documented_check_tables(),
                         ids=lambda value: value if isinstance(value, str) and len(value) < 40 else None)
def test_documented_check_table_equals_the_recomputed_one(doc: str, env: str, argv: str, body: str,
                                                          monkeypatch) -> None:
    args, runs, _ = plotted(argv, monkeypatch)
    computed = check_tables(check_series(args), runs)
    assert env in computed, f"{doc}: `pref-brl-plot {argv}` finds no reward checks of {env}"
    assert body.strip() == computed[env][1].strip(), (
        f"{doc}: the reward-check table of {env} differs from `pref-brl-plot {argv}`; re-run it and paste its "
        f"{env}_reward-checks.md")


ESTIMATOR_BLOCK = re.compile(r"<!-- estimators of: (\S+\.json) -->\n(.*?)<!-- end -->", re.S)


def documented_estimator_tables() -> list[tuple[str, str, str]]:
    """(doc file, measurement file, documented table) for every `pref-brl-estimators` table in the docs."""
    return [(doc.name, path, body) for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
            for path, body in ESTIMATOR_BLOCK.findall(doc.read_text(encoding="utf-8"))]


def test_the_walker_estimators_are_documented_from_their_measurements() -> None:
    assert any(doc == "bilevel.md" for doc, _, _ in documented_estimator_tables()), \
        "docs/bilevel.md lost its walker estimator tables"


@pytest.mark.parametrize("doc, path, body", documented_estimator_tables(),
                         ids=lambda value: value if isinstance(value, str) and len(value) < 60 else None)
def test_documented_estimator_table_equals_the_one_its_measurement_gives(doc: str, path: str, body: str) -> None:
    from pref_brl.bilevel.measure import Measurement, table

    measured = Measurement.from_json((ROOT / path).read_text(encoding="utf-8"))
    assert body.strip() == table(measured).strip(), (
        f"{doc}: the estimator table differs from the one {path} gives; paste the .md written beside it")


def door_open_rows(head: str, what: str) -> list[list[str]]:
    """The cells of each row of the docs/door-open.md table whose header line is `head` (to its blank line)."""
    text = (ROOT / "docs" / "door-open.md").read_text(encoding="utf-8")
    assert head in text, f"docs/door-open.md lost its table of {what}"
    lines = text[text.index(head):].split("\n\n")[0].splitlines()[2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


LABELS_TABLE = "| run | labelled segments: median / highest true return (first in pair) |"


def test_the_door_open_table_of_how_far_the_labels_reached_is_its_checks() -> None:
    """docs/door-open.md's table of the labelled segments' true returns, recomputed from the archived final checks."""
    import json

    import numpy as np

    rows = door_open_rows(LABELS_TABLE, "how far the labels reached")
    assert len(rows) == 7
    for run, returns, coverage, accuracy in rows:
        method, seed = run.lower().split(" seed ")
        check = json.loads((ROOT / "docs/results/door-v1/reward-checks" / f"{method}-seed{seed}-step150000.json")
                           .read_text(encoding="utf-8"))
        labelled = np.array(check["label_returns"])
        highest = labelled.max(axis=1)
        first = int(np.argmax(highest >= highest.max())) + 1
        scripted = next(p for p in check["policies"] if p["name"] == "Meta-World scripted policy")
        assert returns == f"{np.median(labelled):.0f} / {highest.max():.0f} ({first})", run
        assert coverage == f"{scripted['label_coverage']:.2f}", run
        assert accuracy == f"{scripted['cross_accuracy']:.2f}", run


KL_TABLE = "| run | rounds | `kl_ab` > 2 δ | median `kl_ab` | highest `kl_ab` | `kl_solve_max` > 2 δ |"


def test_the_door_open_table_of_bs_kl_budget_is_its_runs() -> None:
    """docs/door-open.md's per-seed count of rounds in which B's KL exceeded 2 δ (on A's newest states after the
    solve, and on a fresh minibatch during it), recomputed from the archived bilevel runs and their configured δ."""
    import json
    import statistics

    from pref_brl.logger import read_scalars

    rows = door_open_rows(KL_TABLE, "B's KL budget")
    assert [row[0].split(" bilevel")[0] for row in rows] == ["door-v1"] * 3 + ["walker-v2"] * 5
    for run, rounds, over, median, highest, solve_over in rows:
        study, seed = run.split(" bilevel seed ")
        (folder,) = (ROOT / "docs/results" / study).glob(f"*/bilevel/*/*/seed{seed}")
        delta = json.loads((folder / "config.json").read_text(encoding="utf-8"))["kl_target"]
        records = read_scalars(folder)
        kl = [r["bilevel/kl_ab"] for r in records if "bilevel/kl_ab" in r]
        solve = [r["bilevel/kl_solve_max"] for r in records if "bilevel/kl_solve_max" in r]
        assert (rounds, over) == (str(len(kl)), str(sum(k > 2 * delta for k in kl))), run
        assert (median, highest) == (f"{statistics.median(kl):.3g}", f"{max(kl):.3g}"), run
        assert len(solve) == len(kl) and solve_over == str(sum(k > 2 * delta for k in solve)), run
