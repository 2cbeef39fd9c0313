"""`pref-brl-estimators` (pref_brl/bilevel/measure.py): the λ-term's estimators measured at a fixed checkpoint
read-only, with the loop's common random numbers, the env steps a run would spend, and settings checked
against the run's config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from pref_brl.bilevel.measure import Round, estimate, gradient, load, measure, parse_setting
from pref_brl.experiments.estimators import main
from pref_brl.trainer import Trainer
from tests.test_bilevel_learner import bilevel_cfg


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished tiny bilevel run (100-step episodes, B from its second round) with its final checkpoint."""
    from tests.conftest import tiny_config

    root = tmp_path_factory.mktemp("measure")
    cfg = bilevel_cfg(lambda name="run", **kw: tiny_config(root, name, **kw))
    Trainer(cfg, progress=False).train()
    return Path(cfg.run_dir)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


SETTINGS = ["paired-rollouts+paired_episodes=2+pair_horizon=20", "branch+paired_episodes=3+pair_horizon=20",
            "likelihood-ratio+lr_episodes=3", "likelihood-ratio+lr_episodes=2+source=fresh"]


def test_measure_reads_the_run_only_and_counts_the_env_steps_a_run_would_spend(run_dir) -> None:
    before = files(run_dir)
    measured = measure(run_dir, [parse_setting(s) for s in SETTINGS], repeats=2, reference_pairs=4,
                       progress=lambda line: None)
    rows, references, step = measured.rows, measured.references, measured.step
    assert files(run_dir) == before
    assert step == 1400 and len(references) == 2 and len(rows) == 2 * len(SETTINGS)
    by_name = {r.setting: r for r in rows if r.repeat == 0}
    assert [by_name[n].env_steps for n in by_name] == [2 * 2 * 20, 2 * 3 * 20, 0, 0]  # A's episodes are free
    assert [by_name[n].units for n in by_name] == [2, 3, 3, 2]
    assert all(-1 <= r.cosine <= 1 and r.snr > 0 for r in rows)
    assert all(-1 <= r["split_half_cosine"] <= 1 for r in references)
    assert [r.weight_mean > 0 for r in rows[:4]] == [False, False, True, True]  # NaN unless likelihood-ratio
    # repeats are fresh rounds: B re-solved from another generator seed, new units
    assert references[0]["kl_ab"] != references[1]["kl_ab"] and rows[0].snr != rows[len(SETTINGS)].snr


def test_b_equal_to_a_gives_identical_halves_and_an_exactly_zero_estimate(run_dir) -> None:
    """The harness's common random numbers: with B = A both halves of every pair and branch replay each other
    bit for bit, so every estimator's gradient is exactly 0."""
    world = load(run_dir, seed=0)
    world.cfg = dataclasses.replace(world.cfg, b_updates=0)
    world.learner.cfg = world.cfg
    rnd = Round(world, repeat=0, seed=0)
    rng = np.random.default_rng(0)
    for a, b in rnd.pairs(rng, 2, 30) + rnd.branches(rng, 3, 20):
        assert np.array_equal(a.obs, b.obs) and np.array_equal(a.act, b.act)
    for spec in SETTINGS:
        result, _ = estimate(world, rnd, parse_setting(spec), np.random.default_rng(1))
        assert torch.count_nonzero(gradient(world.learner, result)) == 0, spec


def test_branches_start_both_halves_at_a_state_of_as_episode(run_dir) -> None:
    world = load(run_dir, seed=0)
    rnd = Round(world, repeat=0, seed=0)
    branches = rnd.branches(np.random.default_rng(0), 3, 20)
    starts = [a.obs[0] for a, _ in branches]
    assert len({s.tobytes() for s in starts}) == 3  # three different states
    for a, b in branches:
        assert np.array_equal(a.obs[0], b.obs[0]) and len(a) == len(b) == 20
        assert not np.array_equal(a.act, b.act)  # B moved: the halves part


def test_cli_writes_the_table_and_refuses_a_setting_the_run_cannot_take(run_dir, tmp_path, capsys) -> None:
    out = tmp_path / "est.md"
    assert main([str(run_dir), "--out", str(out), "--repeats", "1", "--reference-pairs", "4", "--settings",
                 "branch+paired_episodes=2+pair_horizon=10"]) == 0
    text = out.read_text(encoding="utf-8")
    assert "| `branch+pair_horizon=10+paired_episodes=2` | 2 |" in text and (tmp_path / "est.md.json").is_file()
    assert "δ = 0.02)" in text  # the run's own KL budget
    assert main([str(run_dir), "--out", str(out), "--repeats", "1", "--reference-pairs", "4", "--settings",
                 "paired-rollouts+paired_episodes=2", "--kl-target", "0.5"]) == 0
    assert "δ = 0.5)" in out.read_text(encoding="utf-8")
    bad = tmp_path / "bad.md"
    assert main([str(run_dir), "--out", str(bad), "--settings", "paired-rollouts+pair_horizon=500"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pair-horizon must be in [1, 100]" in err[0] and not bad.exists()
