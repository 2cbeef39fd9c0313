"""PEBBLE around Stable-Baselines3 agents: exploration reward, feedback rounds from the callback, relabelling of
SB3's replay buffer, the critic reset, evaluation and the run folder; from Python and from the command line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import pref_brl
from pref_brl.experiments.train import main as train_main
from pref_brl.sb3 import PEBBLE, SB3Trainer
from pref_brl.sb3 import pebble as sb3_pebble
from pref_brl.training import make_trainer
from pref_brl.validate import ConfigError, validate
from tests.conftest import scalars_without_time
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



class Killed(Exception):
    pass


def test_an_sb3_run_killed_mid_run_resumes_from_its_checkpoint_and_finishes_like_one_never_stopped(tiny,
                                                                                                     monkeypatch):
    """Killed at step 330 (a checkpoint at 200, feedback rounds at 150 and 250), the run resumes from 200: the
    labels, the reward model and SB3's step counter come back, the logs after the checkpoint are dropped, the
    round at 250 runs again, and it ends with the schedule of an uninterrupted run."""
    straight, killed = (tiny(name, method="pebble", agent="sb3-sac", **QUICK) for name in ("straight", "killed"))
    make_trainer(straight, progress=False).train()
    original = sb3_pebble.PreferenceCallback._on_step

    def die_at_330(self):
        if self.num_timesteps == 330:
            raise Killed
        return original(self)

    monkeypatch.setattr(sb3_pebble.PreferenceCallback, "_on_step", die_at_330)
    with pytest.raises(Killed):
        make_trainer(killed, progress=False).train()
    run = Path(killed.run_dir)
    assert not (run / "done.json").exists()
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["step"] == 200 and state["learner"]["counters"][0] == 4  # labels so far
    monkeypatch.setattr(sb3_pebble.PreferenceCallback, "_on_step", original)
    trainer = make_trainer(killed, progress=False)
    assert trainer.model.num_timesteps == 200 and trainer.pebble.learner.total == 4
    assert trainer.model.replay_buffer.filled() == 200  # the transitions before the checkpoint are back
    trainer.train()
    assert (run / "done.json").exists() and (run / "sb3_model.zip").exists()
    steps = [r["step"] for r in scalars_without_time(run)]
    assert steps == sorted(steps)  # nothing logged twice: the killed session's lines after 200 were dropped
    for record in (scalars_without_time(straight.run_dir), scalars_without_time(run)):
        assert [r["feedback/total"] for r in record if "feedback/total" in r] == [4.0, 8.0]
        assert [r["step"] for r in record if "eval/mean_reward" in r] == [200, 400]
    named = set(torch.load(run / "checkpoint.pt", weights_only=True)["sb3"].values())
    named |= set(torch.load(run / "checkpoint.prev.pt", weights_only=True)["sb3"].values())
    assert {p.name for p in run.glob("sb3_checkpoint_*")} == named  # older SB3 files are cleaned up
    assert len(json.loads((run / "versions.json").read_text(encoding="utf-8"))) == 2  # the resume is recorded


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
