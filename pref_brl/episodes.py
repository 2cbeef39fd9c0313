"""Recording the current episode into preallocated arrays, for the query episode store."""

from __future__ import annotations

import numpy as np

from pref_brl.preferences import Episode


class EpisodeRecorder:
    """Accumulates (obs, action, true reward) of the running episode; `finish()` returns an Episode."""

    def __init__(self, max_len: int, obs_dim: int, act_dim: int) -> None:
        self.obs = np.empty((max_len, obs_dim), dtype=np.float32)
        self.act = np.empty((max_len, act_dim), dtype=np.float32)
        self.reward = np.empty(max_len, dtype=np.float32)
        self.t = 0
        self.agent, self.reset_seed, self.success = "A", 0, 0.0

    def start(self, agent: str, reset_seed: int) -> None:
        self.t, self.agent, self.reset_seed, self.success = 0, agent, reset_seed, 0.0

    def add(self, obs: np.ndarray, act: np.ndarray, true_reward: float, success: float) -> None:
        t = self.t
        self.obs[t], self.act[t], self.reward[t] = obs, act, true_reward
        self.success = max(self.success, success)
        self.t = t + 1

    def finish(self) -> Episode:
        t = self.t
        return Episode(obs=self.obs[:t].copy(), act=self.act[:t].copy(), true_reward=self.reward[:t].copy(),
                       agent=self.agent, reset_seed=self.reset_seed)
