"""Stable-Baselines3's replay buffer with what PEBBLE needs of it (Lee, Smith, Abbeel, "PEBBLE", ICML 2021)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from torch import Tensor

from pref_brl.agents.state_entropy import StateEntropy


class PreferenceReplayBuffer(ReplayBuffer):
    """SB3's `ReplayBuffer` whose stored rewards can be rewritten from (state, action) (`relabel`, after every
    reward update) and whose minibatch rewards are, while `entropy` is set (unsupervised pre-training), the
    k-NN state-entropy reward of their states against every stored state (agents.state_entropy).

    Pass it as `replay_buffer_class=PreferenceReplayBuffer` to an SB3 off-policy algorithm; the callback of
    :class:`pref_brl.sb3.PEBBLE` attaches the exploration reward and relabels.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.optimize_memory_usage:
            raise ValueError("PreferenceReplayBuffer needs optimize_memory_usage=False (next states stored apart)")
        self.entropy: StateEntropy | None = None
        """the exploration reward while pre-training; None after the first feedback round"""
        self._low = np.asarray(self.action_space.low, dtype=np.float32)
        self._high = np.asarray(self.action_space.high, dtype=np.float32)

    def filled(self) -> int:
        """How many time slots hold transitions."""
        return self.buffer_size if self.full else self.pos

    def stored_obs(self) -> Tensor:
        """Every stored state [N, O] on the buffer's device (storage order)."""
        obs = self.observations[: self.filled()].reshape(-1, *self.obs_shape)
        return torch.from_numpy(obs).to(self.device)

    def env_actions(self, n: int) -> np.ndarray:
        """The first `n` slots' actions in the environment's units (SB3 stores them scaled to [-1, 1])."""
        scaled = self.actions[:n].reshape(-1, self.action_dim)
        return self._low + 0.5 * (scaled + 1.0) * (self._high - self._low)

    def sample(self, batch_size: int, env: Any = None) -> ReplayBufferSamples:
        batch = super().sample(batch_size, env)
        if self.entropy is None:
            return batch
        reward = self.entropy.intrinsic_reward(batch.observations, self.stored_obs())
        return batch._replace(rewards=reward.reshape(-1, 1).to(batch.rewards.dtype))

    @torch.no_grad()
    def relabel(self, reward_fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        """Rewrite every stored reward as reward_fn(obs, act) (every filled slot, after wrap-around too)."""
        n = self.filled()
        if n == 0:
            return
        obs = torch.from_numpy(self.observations[:n].reshape(-1, *self.obs_shape))
        act = torch.from_numpy(self.env_actions(n).astype(np.float32))
        reward = reward_fn(obs, act).reshape(n, self.n_envs)
        self.rewards[:n] = reward.detach().cpu().numpy()
