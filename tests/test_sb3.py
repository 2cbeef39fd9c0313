"""PEBBLE around Stable-Baselines3 agents: exploration reward, feedback rounds from the callback, relabelling of
SB3's replay buffer, the critic reset, evaluation and the run folder; from Python and from the command line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import pref_brl
from pref_brl.experiments.train import main as train_main
from pref_brl.runs import RunFolderError
from pref_brl.sb3 import PEBBLE, SB3Trainer
from pref_brl.sb3 import pebble as sb3_pebble
from pref_brl.training import make_trainer
from pref_brl.validate import ConfigError, validate
from tests.test_crash_safety import cli_args
from tests.test_library import QUICK


def test_sb3_sac_learns_from_preferences_through_feedback_rounds(tiny, monkeypatch) -> None:
    cfg = tiny("sb3-sac", method="pebble", agent="sb3-sac", **QUICK)
    trainer = make_trainer(cfg, progress=False)
    assert isinstance(trainer, SB3Trainer)
    model, learner = trainer.model, trainer.pebble.learner
    buffer = model.replay_buffer
    resets, original_reset = [], sb3_pebble.reset_critic

    def reset_and_check(m) -> None:
        actor, critic = ([p.clone() for p in net.parameters()] for net in (m.actor, m.critic))
        assert buffer.entropy is not None  # pre-training used the state-entropy reward until now
        original_reset(m)
        assert all(torch.equal(a, b) for a, b in zip(actor, m.actor.parameters()))
        assert not any(torch.equal(a, b) for a, b in zip(critic, m.critic.parameters()) if a.dim() == 2)
        assert all(torch.equal(a, b) for a, b in zip(m.critic.parameters(), m.critic_target.parameters()))
        resets.append(m.num_timesteps)

    monkeypatch.setattr(sb3_pebble, "reset_critic", reset_and_check)
    trainer.train()
    assert resets == [cfg.feedback_starts] and buffer.entropy is None
    assert (learner.total, learner.rounds) == (8, 2)
    n = buffer.filled()
    obs, act = torch.from_numpy(buffer.observations[:n, 0]), torch.from_numpy(buffer.actions[:n, 0])
    expected = learner.reward_model.mean_reward(obs, act)
    torch.testing.assert_close(torch.from_numpy(buffer.rewards[:n, 0]), expected)  # relabelled + the VecEnv's r̂
    assert float(expected.abs().sum()) > 0

    result = pref_brl.train(cfg, progress=False)  # finished: answers from done.json
    records = result.records()
    assert [r["feedback/total"] for r in records if "feedback/total" in r] == [4.0, 8.0]
    explore = [r["step"] for r in records if "explore/state_entropy" in r]
    assert explore and max(explore) <= cfg.feedback_starts
    keys = set().union(*records)
    assert {"rollout/ep_rew_mean", "rollout/ep_learned_rew_mean", "train/actor_loss", "train/critic_loss",
            "train/ent_coef", "time/fps", "eval/mean_reward", "reward/loss", "reward/true_corr"} <= keys
    assert [r["step"] for r in records if "eval/mean_reward" in r] == [200, 400]
    assert result.finished and set(result.last_eval) == {"eval/mean_reward"}
    assert any(result.tensorboard.iterdir()) and (result.run_dir / "sb3_model.zip").exists()
    action, _ = result.load_policy().predict(np.zeros(24, dtype=np.float32))
    assert action.shape == (6,)
    assert len(pref_brl.load_preferences(pref_brl.export_preferences(result.run_dir, result.run_dir / "p"))) == 8

    (result.run_dir / "done.json").unlink()
    with pytest.raises(RunFolderError, match="do not resume"):
        make_trainer(cfg, progress=False)


def test_cli_trains_an_sb3_td3_agent(tiny, capsys) -> None:
    cfg = tiny("sb3-td3", method="pebble", agent="sb3-td3", **QUICK)
    assert train_main([*cli_args(cfg), "--quiet"]) == 0
    run_dir = Path(cfg.run_dir)
    assert (run_dir / "sb3_model.zip").exists() and (run_dir / "done.json").exists()
    records = pref_brl.RunResult(run_dir, cfg, {}, True).records()
    assert [r["feedback/total"] for r in records if "feedback/total" in r] == [4.0, 8.0]
    assert any("train/actor_loss" in r for r in records)
    assert f"run folder: {run_dir}" in capsys.readouterr().out


def test_pebble_callback_needs_the_preference_buffer(tiny) -> None:
    from stable_baselines3 import SAC

    pebble = PEBBLE(tiny(method="pebble", **QUICK))
    model = SAC("MlpPolicy", pebble.env, learning_starts=50, policy_kwargs=dict(net_arch=[16]), seed=0)
    with pytest.raises(TypeError, match="replay_buffer_class=pref_brl.sb3.PreferenceReplayBuffer"):
        model.learn(10, callback=pebble.callback())


def test_sb3_agents_run_sac_and_pebble_only(tiny) -> None:
    with pytest.raises(ConfigError, match="--agent sb3-sac runs methods sac and pebble; method bilevel"):
        validate(tiny(method="bilevel", agent="sb3-sac", **QUICK))
    if importlib.util.find_spec("sb3_contrib") is None:
        with pytest.raises(ConfigError, match="--agent sb3-tqc needs the sb3-contrib package"):
            validate(tiny(method="pebble", agent="sb3-tqc", **QUICK))
