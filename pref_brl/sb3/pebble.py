"""PEBBLE around a Stable-Baselines3 off-policy agent (Lee, Smith, Abbeel, "PEBBLE", ICML 2021).

Three pieces, bundled by :class:`PEBBLE`:

* :class:`PreferenceVecEnv` -- a VecEnv wrapper that hands SB3 the learned reward r̂(s, a) (0 before the first
  feedback round, as in our loop) and records each episode's states, actions and true rewards for the queries;
  the true return still reaches SB3's `Monitor` underneath (`rollout/ep_rew_mean`).
* :class:`pref_brl.sb3.buffer.PreferenceReplayBuffer` -- the state-entropy reward while pre-training, and
  relabelling after every reward update.
* :class:`PreferenceCallback` -- feedback rounds (queries, teacher, reward model, relabel, PEBBLE's critic reset
  after the first round), evaluation and logging through SB3's logger, under the names SB3 writes.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper
from torch import nn

from pref_brl.config import TrainConfig
from pref_brl.envs import episode_length, is_metaworld, make_env
from pref_brl.episodes import EpisodeRecorder
from pref_brl.feedback import Collaborators, PreferenceLearner
from pref_brl.sb3.buffer import PreferenceReplayBuffer

EVAL_SEED_OFFSET = 1_000_003
"""evaluation episodes reset from the same seeds as our trainer's"""


class SB3PreferenceLearner(PreferenceLearner):
    """PEBBLE's learner whose agent and replay buffer are an SB3 model's (attached when training starts)."""

    def reset_after_first_round(self) -> dict[str, Any]:
        """PEBBLE: fresh critics (actor and temperature kept), then `reset_update` SB3 gradient steps."""
        model = self.loop.agent
        reset_critic(model)
        model.train(gradient_steps=self.cfg.reset_update, batch_size=model.batch_size)
        model.policy.set_training_mode(False)
        return {}


def reset_critic(model: OffPolicyAlgorithm) -> None:
    """Re-initialise an SB3 model's critic (SAC, TD3, TQC), copy it into the target, give it a fresh optimiser."""
    critic, policy = model.critic, model.policy
    for layer in critic.modules():
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()
    model.critic_target.load_state_dict(critic.state_dict())
    params = [p for name, p in critic.named_parameters() if "features_extractor" not in name]
    critic.optimizer = policy.optimizer_class(params, lr=model.lr_schedule(1.0), **policy.optimizer_kwargs)


class PreferenceVecEnv(VecEnvWrapper):
    """Replaces the reward by the learner's r̂(s, a) (the true one without a learner) and records episodes."""

    def __init__(self, venv: VecEnv, learner: PreferenceLearner | None, ep_len: int, returns: deque[float]) -> None:
        super().__init__(venv)
        obs_dim, act_dim = venv.observation_space.shape[0], venv.action_space.shape[0]
        self.learner = learner
        self.recorders = [EpisodeRecorder(ep_len, obs_dim, act_dim) for _ in range(venv.num_envs)]
        self.returns = returns
        """true returns of the last complete episodes (the teacher's thresholds read them)"""
        self.learned_returns: deque[float] = deque(maxlen=10)
        """learned returns of the last complete episodes"""
        self._obs = np.zeros((venv.num_envs, obs_dim), dtype=np.float32)
        self._actions = np.zeros((venv.num_envs, act_dim), dtype=np.float32)

    def reset(self) -> np.ndarray:
        obs = self.venv.reset()
        self._obs = np.asarray(obs, dtype=np.float32)
        for recorder in self.recorders:
            recorder.start("A", -1)
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float32)
        self.venv.step_async(actions)

    def step_wait(self):
        obs, true_reward, dones, infos = self.venv.step_wait()
        reward = np.array(true_reward, dtype=np.float32)
        for i, info in enumerate(infos):
            self.recorders[i].add(self._obs[i], self._actions[i], float(true_reward[i]), float(info.get("success", 0)))
            if self.learner is not None:
                reward[i] = self.learner.step_reward(self._obs[i], self._actions[i])
            if dones[i]:
                self._end_episode(i, info)
        self._obs = np.asarray(obs, dtype=np.float32)
        return obs, reward, dones, infos

    def _end_episode(self, i: int, info: dict[str, Any]) -> None:
        recorder = self.recorders[i]
        episode = recorder.finish()
        self.returns.append(episode.true_return)
        if "success" in info:
            info["is_success"] = recorder.success  # SB3 logs rollout/success_rate from it
        if self.learner is not None:
            self.learner.add_episode(episode)
            self.learned_returns.append(self.learner.learned_return(episode))
        recorder.start("A", -1)


class PEBBLE:
    """PEBBLE's preference learning for an SB3 off-policy model you build on :attr:`env`, with
    `replay_buffer_class=PreferenceReplayBuffer` and `learning_starts=cfg.num_seed_steps`; pass
    :meth:`callback` to `model.learn`. `cfg` sets the env, the schedule (seed, exploration and feedback steps),
    the label budget, teacher, queries and reward model; the agent's own settings are the model's. With
    method sac there is no preference learning: the true reward, evaluation and logging only.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        from pref_brl.validate import validate

        validate(cfg)
        self.cfg = cfg
        limit = cfg.max_episode_steps or None
        self.ep_len = cfg.max_episode_steps or episode_length(cfg.env)
        env = make_env(cfg.env, cfg.seed, goal_mode=cfg.goal_mode, max_episode_steps=limit)
        self.eval_env = make_env(cfg.env, cfg.seed + 1, goal_mode=cfg.goal_mode, max_episode_steps=limit)
        """the evaluation environment (reset from fixed seeds)"""
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        returns: deque[float] = deque(maxlen=10)
        loop = Collaborators(agent=None, replay=None, sample_generator=torch.Generator(), returns=returns,
                             ep_len=self.ep_len)
        self.learner = SB3PreferenceLearner(cfg, obs_dim, act_dim, loop) if cfg.uses_preferences else None
        """PEBBLE's learner (reward model, labels, teacher); None for method sac"""
        self.env = PreferenceVecEnv(DummyVecEnv([lambda: Monitor(env)]), self.learner, self.ep_len, returns)
        """the training VecEnv to build the SB3 model on"""
        self.last_eval: dict[str, float] = {}
        """the last evaluation's scalars"""

    def callback(self, should_stop: Callable[[], Any] | None = None,
                 on_step_end: Callable[[int, int], None] | None = None, evaluated: int = 0) -> PreferenceCallback:
        """The callback to pass to `model.learn`; training stops when `should_stop()` is true.
        `on_step_end(step, last evaluation's step)` runs after each step's schedule (the run's checkpoints);
        `evaluated` is the step of the last evaluation when training resumes."""
        return PreferenceCallback(self, should_stop, on_step_end, evaluated)

    @torch.no_grad()
    def evaluate(self, model: OffPolicyAlgorithm) -> dict[str, float]:
        """Deterministic episodes on the evaluation env from fixed reset seeds (those of our trainer)."""
        cfg, returns, successes = self.cfg, [], []
        for i in range(cfg.num_eval_episodes):
            obs, _ = self.eval_env.reset(seed=EVAL_SEED_OFFSET + 1000 * cfg.seed + i)
            total, success, done = 0.0, 0.0, False
            while not done:
                action, _ = model.predict(obs, deterministic=True)
                obs, reward, terminated, truncated, info = self.eval_env.step(action)
                total += float(reward)
                success = max(success, float(info.get("success", 0.0)))
                done = terminated or truncated
            returns.append(total)
            successes.append(success)
        out = {"eval/mean_reward": float(np.mean(returns))}
        if is_metaworld(cfg.env):
            out["eval/success_rate"] = float(np.mean(successes))
        self.last_eval = dict(out)
        if self.learner is not None:
            out.update(self.learner.eval_metrics())
        return out


class PreferenceCallback(BaseCallback):
    """Runs :class:`PEBBLE`'s schedule inside SB3's `learn`: after each collected step (and its storage)."""

    def __init__(self, pebble: PEBBLE, should_stop: Callable[[], Any] | None = None,
                 on_step_end: Callable[[int, int], None] | None = None, evaluated: int = 0) -> None:
        super().__init__()
        self.pebble = pebble
        self.should_stop = should_stop or (lambda: False)
        self.on_step_end = on_step_end
        self.evaluated = evaluated
        """the step of the last evaluation"""

    def _on_training_start(self) -> None:
        learner, buffer = self.pebble.learner, self.model.replay_buffer
        if learner is None:
            return
        if not isinstance(buffer, PreferenceReplayBuffer):
            raise TypeError("PEBBLE relabels the replay buffer: build the model with "
                            "replay_buffer_class=pref_brl.sb3.PreferenceReplayBuffer")
        learner.loop = dataclasses.replace(learner.loop, agent=self.model, replay=buffer)
        buffer.entropy = learner.entropy if learner.rounds == 0 else None

    def _on_step(self) -> bool:
        return not self.should_stop()

    def _on_rollout_end(self) -> None:
        step, cfg, learner = self.num_timesteps, self.pebble.cfg, self.pebble.learner
        if learner is not None:
            if step >= learner.next_round and learner.total < cfg.max_feedback:
                self.record(learner.feedback_round(step))
                self.model.replay_buffer.entropy = None
                self.logger.dump(step)
            self.record(learner.explore_metrics(step))
            learned = self.pebble.env.learned_returns
            if learned:
                self.logger.record("rollout/ep_learned_rew_mean", float(np.mean(learned)))
        if step // cfg.eval_frequency > self.evaluated // cfg.eval_frequency or self.evaluated < cfg.steps <= step:
            self.evaluated = step
            self.record(self.pebble.evaluate(self.model))
            self.logger.dump(step)
        if self.on_step_end is not None:
            self.on_step_end(step, self.evaluated)

    def record(self, scalars: dict[str, Any]) -> None:
        for key, value in scalars.items():
            self.logger.record(key, float(value))
