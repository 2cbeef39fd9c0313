"""A user's teacher and reward model, named by import path, label and learn through whole feedback rounds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import pref_brl
from pref_brl.preferences import Episode, EpisodeStore
from pref_brl.protocols import Queries, resolve
from pref_brl.reward_model import RewardEnsemble
from pref_brl.teacher import TEACHER_PRESETS, ScriptedTeacher
from pref_brl.trainer import Trainer
from pref_brl.validate import ConfigError, validate
from tests.test_library import QUICK

PLUGINS = "tests.user_plugins"


def test_user_teacher_labels_equal_and_skip_and_is_recorded(tiny) -> None:
    cfg = tiny("teacher", method="pebble", teacher=f"{PLUGINS}:cycling_teacher", **QUICK)
    trainer = Trainer(cfg, progress=False)
    trainer.train()
    learner = trainer.learner
    assert (learner.total, learner.labeled, learner.rounds) == (8, 6, 2)  # 2 rounds of 4: one skip each
    assert learner.prefs.labels.tolist() == [1.0, 0.0, 0.5] * 2
    assert json.loads((Path(cfg.run_dir) / "config.json").read_text())["teacher"] == f"{PLUGINS}:cycling_teacher"
    rounds = [r for r in pref_brl.RunResult(Path(cfg.run_dir), cfg, {}, True).records() if "feedback/labeled" in r]
    assert [r["feedback/labeled"] for r in rounds] == [3.0, 6.0] and all("reward/loss" in r for r in rounds)


def test_user_reward_model_trains_relabels_and_checkpoints(tiny) -> None:
    cfg = tiny("reward", method="pebble", reward_model=f"{PLUGINS}:make_linear", query="entropy", **QUICK)
    trainer = Trainer(cfg, progress=False)
    learner = trainer.learner
    original = learner.feedback_round

    def round_then_check(step: int) -> dict:
        out = original(step)
        replay = trainer.replay
        expected = learner.reward_model.mean_reward(replay.obs[: len(replay)], replay.act[: len(replay)])
        torch.testing.assert_close(replay.reward[: len(replay), 0], expected)  # relabelled with the user's model
        return out

    learner.feedback_round = round_then_check
    trainer.train()
    model = learner.reward_model
    assert model.rounds == 2 and learner.labeled == 8 and bool(model.weight.abs().sum() > 0)
    records = pref_brl.RunResult(Path(cfg.run_dir), cfg, {}, True).records()
    assert [r["reward/rounds"] for r in records if "reward/rounds" in r] == [1.0, 2.0]
    assert any("reward/true_corr" in r for r in records) and not any("reward/ensemble_std" in r for r in records)
    resumed = Trainer(cfg, progress=False)  # a finished folder: its checkpoint is loaded
    assert torch.equal(resumed.learner.reward_model.weight, model.weight) and resumed.learner.reward_model.rounds == 2
    resumed.close()


def test_bilevel_family_refuses_another_reward_model(tiny) -> None:
    for method in ("bilevel", "sobirl", "mrn"):
        with pytest.raises(ConfigError, match=f"method {method} works on the members of PEBBLE's reward ensemble"):
            validate(tiny(method=method, reward_model=f"{PLUGINS}:make_linear", **QUICK))


@pytest.mark.parametrize("changes, fragment", [
    (dict(reward_model=f"{PLUGINS}:make_linear", query="disagreement"), "ranks pairs by the disagreement"),
    (dict(reward_model=f"{PLUGINS}:make_nothing"), "built a object without n_members, mean_reward"),
], ids=["single-model-disagreement", "not-a-reward-model"])
def test_unusable_reward_model_is_refused_before_the_run_folder(tiny, changes, fragment) -> None:
    cfg = tiny("refused", method="pebble", **{**QUICK, **changes})
    validate(cfg)  # importable: only the built model can tell
    with pytest.raises(ConfigError, match=fragment):
        Trainer(cfg, progress=False)
    assert not Path(cfg.run_dir).exists()


@pytest.mark.parametrize("spec, fragment", [
    ("no_such_module_xyz:label", "cannot import teacher 'no_such_module_xyz:label' (ModuleNotFoundError"),
    ("json:no_such_name", "json has no attribute 'no_such_name'"),
    ("json:__doc__", "is not callable"),
    ("orakel", "unknown teacher 'orakel'; known: oracle"),
])
def test_bad_teacher_names_fail_validation(tiny, spec, fragment) -> None:
    with pytest.raises(ConfigError) as info:
        validate(tiny(method="pebble", teacher=spec, **QUICK))
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_teacher_output_is_checked(tiny) -> None:
    cfg = tiny("shape", method="pebble", teacher=f"{PLUGINS}:wrong_shape_teacher", **QUICK)
    with pytest.raises(ValueError, match="returned labels of shape \\(5,\\) for 4 queries"):
        Trainer(cfg, progress=False).train()


def test_scripted_teacher_speaks_the_protocol() -> None:
    store = EpisodeStore()
    rng = np.random.default_rng(0)
    for _ in range(3):
        store.add(Episode(rng.standard_normal((30, 4)), rng.uniform(-1, 1, (30, 2)), rng.uniform(0, 1, 30)))
    pairs = store.sample_pairs(64, 10, rng)
    a = ScriptedTeacher(TEACHER_PRESETS["skip"], np.random.default_rng(5))
    b = ScriptedTeacher(TEACHER_PRESETS["skip"], np.random.default_rng(5))
    keep, expected = a.label(pairs.rew0, pairs.rew1, 5.0, 30)
    got = b(Queries.of(pairs, 5.0, 30, b.rng))
    np.testing.assert_array_equal(np.isnan(got), ~keep.numpy())
    np.testing.assert_array_equal(got[keep.numpy()], expected.numpy()[keep.numpy()])
    assert isinstance(RewardEnsemble(4, 2), pref_brl.RewardModel)
    assert resolve(f"{PLUGINS}:cycling_teacher", "teacher").__name__ == "cycling_teacher"
