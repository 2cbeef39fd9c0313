"""The public API: a light import, train -> RunResult, load_policy, and what a TrainConfig built directly gets."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

import pref_brl
from pref_brl.config import PRESETS, TrainConfig, preset_config
from pref_brl.envs import KNOWN_ENVS
from pref_brl.validate import ConfigError, validate

ROOT = Path(__file__).resolve().parent.parent
DOOR = "metaworld_door-open-v3"
QUICK = dict(steps=400, max_episode_steps=50, num_seed_steps=50, num_unsup_steps=100, num_interact=100,
             max_feedback=8, reward_batch=4, segment=10, eval_frequency=200, checkpoint_frequency=200)
"""tiny() overrides for a run with feedback rounds at steps 150 and 250"""


def test_import_is_light_and_versioned() -> None:
    code = ("import sys, pref_brl; print(pref_brl.__version__, 'torch' in sys.modules, "
            "'pref_brl.envs' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [metadata.version("pref-brl"), "False", "False"]


def test_every_public_name_resolves(tmp_path: Path) -> None:
    for name in pref_brl.__all__:
        assert getattr(pref_brl, name) is not None
    from pref_brl.envs import make_env

    assert pref_brl.make_env is make_env
    with pytest.raises(AttributeError):
        pref_brl.no_such_name  # noqa: B018
    # from a folder of a user's, where the repository's top-level envs/ is not on the path
    code = "import pref_brl; [getattr(pref_brl, name) for name in pref_brl.__all__]; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr[-2000:]


def test_train_returns_the_run_and_load_policy_acts(tiny) -> None:
    cfg = tiny("api", **QUICK)
    result = pref_brl.train(cfg, progress=False)
    assert result.finished and not result.interrupted and result.config == cfg
    assert result.run_dir == Path(cfg.run_dir) and result.checkpoint.exists() and result.scalars.exists()
    assert any(result.tensorboard.iterdir())
    assert result.last_eval == {k: v for k, v in json.loads((result.run_dir / "done.json").read_text()).items()
                                if k != "step"}
    assert result.records()[-1]["step"] == cfg.steps
    again = pref_brl.train(cfg, progress=False)  # a finished run answers at once, with the same result
    assert again.last_eval == result.last_eval and again.finished

    policy = pref_brl.load_policy(cfg.run_dir)
    obs = np.random.default_rng(0).standard_normal((5, policy.obs_dim)).astype(np.float32)
    actions, state = policy.predict(obs)
    assert state is None and actions.shape == (5, policy.act_dim) and np.abs(actions).max() < 1
    trainer_actor = torch.load(result.checkpoint, weights_only=True)["agents"]["A"]["actor"]
    from pref_brl.agents.sac import Actor, SACConfig, act_with

    actor = Actor(policy.obs_dim, policy.act_dim, SACConfig(hidden_dim=cfg.hidden_dim, hidden_depth=1))
    actor.load_state_dict(trainer_actor)
    np.testing.assert_allclose(policy.predict(obs[0])[0], act_with(actor, obs[0], None, torch.device("cpu")),
                               rtol=1e-6)  # the deterministic action the trainer evaluates
    assert not np.allclose(policy.predict(obs[0], deterministic=False)[0], actions[0])
    with pytest.raises(ValueError, match="has no agent 'B'"):
        pref_brl.load_policy(cfg.run_dir, agent="B")


def test_load_policy_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a pref-brl run folder"):
        pref_brl.load_policy(tmp_path)


def test_train_validates_first(tiny) -> None:
    with pytest.raises(ValueError, match="ends before the first feedback round"):
        pref_brl.train(tiny("bad", method="pebble", steps=200), progress=False)
    assert not Path(tiny("bad").run_dir).exists()


# ------------------------------------------------------------------------------------------ presets
def test_a_config_built_directly_takes_its_family_preset_for_fields_not_given() -> None:
    door = TrainConfig(env=DOOR, method="pebble", steps=5000, hidden_depth=2)
    assert door == preset_config("cpu", DOOR, method="pebble", steps=5000, hidden_depth=2)
    assert (door.lr, door.max_feedback, door.num_interact) == (3e-4, 1000, 2500)  # door-open's, not walker's
    assert TrainConfig(env="walker_walk", preset="paper") == preset_config("paper", "walker_walk")
    assert TrainConfig() == preset_config("cpu", "walker_walk")  # the dataclass defaults are walker's cpu preset
    custom = TrainConfig(env=DOOR, preset="custom")
    assert custom.hidden_depth == 2 and custom.max_feedback == 100
    validate(custom)
    for preset in PRESETS:
        for env in KNOWN_ENVS:
            validate(TrainConfig(env=env, preset=preset, method="pebble"))


def test_replace_and_config_json_keep_every_field() -> None:
    from pref_brl.runs import config_from_dict

    tiny_door = dataclasses.replace(TrainConfig(), env=DOOR, steps=2000)
    assert tiny_door.hidden_depth == 2  # replace passes every field: nothing is filled in
    cfg = preset_config("paper", DOOR, hidden_dim=64)
    assert config_from_dict(json.loads(cfg.to_json())) == cfg


@pytest.mark.parametrize("cfg, carried", [
    (dataclasses.replace(preset_config("cpu", "walker_walk"), env=DOOR), "the cpu preset's dmc values"),
    (dataclasses.replace(preset_config("cpu", DOOR), env="cheetah_run"), "the cpu preset's metaworld values"),
    (dataclasses.replace(preset_config("cpu", "walker_walk"), preset="paper"), "the cpu preset's dmc values"),
], ids=["walker-values-on-door", "door-values-on-cheetah", "cpu-values-recorded-as-paper"])
def test_a_config_carrying_another_family_preset_is_refused_in_one_line(cfg, carried) -> None:
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert carried in message and "preset='custom'" in message and "\n" not in message
    validate(dataclasses.replace(cfg, preset="custom"))
    validate(dataclasses.replace(cfg, steps=5000))  # a field where the presets differ, set its own way: as meant


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'gpu'; known presets: cpu, paper"):
        validate(TrainConfig(preset="gpu"))
