"""Preference files: a run's labelled pairs out to `.npz` and back, and a run seeded from one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import pref_brl
from pref_brl.datasets import PreferenceData
from pref_brl.trainer import Trainer
from pref_brl.validate import ConfigError, validate
from tests.test_library import QUICK

CYCLING = "tests.user_plugins:cycling_teacher"


def synthetic(n: int = 3, segment: int = 10, obs_dim: int = 24, act_dim: int = 6) -> PreferenceData:
    rng = np.random.default_rng(0)
    return PreferenceData(
        obs0=rng.standard_normal((n, segment, obs_dim)), act0=rng.uniform(-1, 1, (n, segment, act_dim)),
        rew0=rng.uniform(0, 1, (n, segment)), obs1=rng.standard_normal((n, segment, obs_dim)),
        act1=rng.uniform(-1, 1, (n, segment, act_dim)), rew1=rng.uniform(0, 1, (n, segment)),
        labels=np.resize(np.array([1.0, 0.0, 0.5]), n), teacher=np.array(["human"] * n), env="walker_walk")


def test_export_round_trips_and_seeds_a_run(tiny, tmp_path: Path) -> None:
    first = pref_brl.train(tiny("first", method="pebble", teacher=CYCLING, **QUICK), progress=False)
    path = pref_brl.export_preferences(first.run_dir, tmp_path / "labels.npz")
    data = pref_brl.load_preferences(path)
    prefs = torch.load(first.checkpoint, weights_only=True)["learner"]["prefs"]
    assert len(data) == prefs["n"] == 6 and data.env == "walker_walk" and set(data.teacher.tolist()) == {CYCLING}
    np.testing.assert_array_equal(np.concatenate([data.obs0, data.act0], -1), prefs["sa0"].numpy())
    np.testing.assert_array_equal(np.concatenate([data.obs1, data.act1], -1), prefs["sa1"].numpy())
    np.testing.assert_array_equal(data.labels, prefs["labels"].numpy())
    assert data.labels.tolist() == [1.0, 0.0, 0.5] * 2 and data.rew0.shape == (6, 10)
    with np.load(path, allow_pickle=False) as npz:  # plain arrays, no pickles
        assert str(npz["format"]) == "pref-brl-preferences" and int(npz["version"]) == 1

    seeded_cfg = tiny("seeded", method="pebble", seed=1, preferences=str(path), **QUICK)
    validate(seeded_cfg)
    trainer = Trainer(seeded_cfg, progress=False)
    assert len(trainer.learner.prefs) == 6  # in the buffer before the first round
    trainer.train()
    assert trainer.learner.total == 8 and len(trainer.learner.prefs) == 14  # the budget counts new queries only
    again = pref_brl.load_preferences(pref_brl.export_preferences(seeded_cfg.run_dir, tmp_path / "again.npz"))
    assert again.teacher.tolist() == [CYCLING] * 6 + ["oracle"] * 8  # who labelled each pair survives
    np.testing.assert_array_equal(again.obs0[:6], data.obs0)


def test_save_and_load_keep_every_array(tmp_path: Path) -> None:
    data = synthetic()
    back = pref_brl.load_preferences(pref_brl.save_preferences(data, tmp_path / "h"))  # .npz is appended
    for key in ("obs0", "act0", "rew0", "obs1", "act1", "rew1", "labels"):
        np.testing.assert_array_equal(getattr(back, key), getattr(data, key).astype(np.float32))
    assert back.teacher.tolist() == ["human"] * 3 and back.env == "walker_walk"


def test_bad_files_are_refused_in_one_line(tiny, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not numpy", encoding="utf-8")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    pref_brl.save_preferences(synthetic(segment=7), tmp_path / "short.npz")
    pref_brl.save_preferences(synthetic(obs_dim=5), tmp_path / "small.npz")
    cases = {"missing.npz": "cannot read the preference file", "notes.txt": "notes.txt is not an .npz file",
             "other.npz": "is not a pref-brl preference file", "short.npz": "segments are 7 steps long"}
    for name, fragment in cases.items():
        with pytest.raises(ConfigError) as info:
            validate(tiny(method="pebble", preferences=str(tmp_path / name), **QUICK))
        assert fragment in str(info.value) and "\n" not in str(info.value)
    cfg = tiny("small", method="pebble", preferences=str(tmp_path / "small.npz"), **QUICK)
    with pytest.raises(ConfigError, match="5-dim states and 6-dim actions; this env has 24 and 6"):
        Trainer(cfg, progress=False)
    assert not Path(cfg.run_dir).exists()
    with pytest.raises(ValueError, match="no labelled pairs"):
        pref_brl.export_preferences(pref_brl.train(tiny("sac", **QUICK), progress=False).run_dir, tmp_path / "x")
