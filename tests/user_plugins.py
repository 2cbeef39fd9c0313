"""A user's teacher and reward model, written only against pref_brl's public protocols (tests name them by
import path: `teacher="tests.user_plugins:cycling_teacher"`, `reward_model="tests.user_plugins:make_linear"`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import pref_brl

CYCLE = np.array([1.0, 0.0, pref_brl.EQUAL, pref_brl.SKIP], dtype=np.float32)
"""σ¹, σ⁰, equal, skip, σ¹, ... in query order"""


def cycling_teacher(queries: pref_brl.Queries) -> np.ndarray:
    """Labels by position, so that every kind of label occurs in a round of four queries."""
    assert queries.obs0.shape[:2] == queries.rew0.shape and queries.episode_length > 0
    return np.resize(CYCLE, len(queries))


def height_teacher(queries: pref_brl.Queries) -> np.ndarray:
    """Prefers the segment whose walker torso (observation entry 14) is higher on average."""
    return (queries.obs1[..., 14].mean(1) > queries.obs0[..., 14].mean(1)).astype(np.float32)


def wrong_shape_teacher(queries: pref_brl.Queries) -> np.ndarray:
    return np.ones(len(queries) + 1, dtype=np.float32)


class LinearReward:
    """r(s, a) = tanh(w·[s, a] + b), trained with the Bradley–Terry loss; a single model (n_members = 1)."""

    n_members = 1

    def __init__(self, obs_dim: int, act_dim: int, lr: float) -> None:
        self.weight = torch.zeros(obs_dim + act_dim, requires_grad=True)
        self.bias = torch.zeros((), requires_grad=True)
        self.optimizer = torch.optim.Adam([self.weight, self.bias], lr=lr)
        self.rounds = 0

    def _reward(self, sa: torch.Tensor) -> torch.Tensor:
        return torch.tanh(sa @ self.weight + self.bias)

    @torch.no_grad()
    def mean_reward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self._reward(torch.cat([obs, act], dim=-1).float())

    def pair_logits(self, sa0: torch.Tensor, sa1: torch.Tensor) -> torch.Tensor:
        return (self._reward(sa1).sum(-1) - self._reward(sa0).sum(-1)).unsqueeze(0)

    def train_round(self, prefs, max_epochs: int, rng: np.random.Generator, batch_size: int = 128) -> dict:
        for _ in range(max_epochs):
            logits = self.pair_logits(prefs.sa0, prefs.sa1)[0]
            loss = F.binary_cross_entropy_with_logits(logits, prefs.labels)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self.rounds += 1
        return {"reward/loss": float(loss.detach()), "reward/rounds": float(self.rounds)}

    def full_state(self) -> dict:
        return {"weight": self.weight.detach().clone(), "bias": self.bias.detach().clone(),
                "optimizer": self.optimizer.state_dict(), "rounds": self.rounds}

    def load_full_state(self, state: dict) -> None:
        with torch.no_grad():
            self.weight.copy_(state["weight"])
            self.bias.copy_(state["bias"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rounds = state["rounds"]


def make_linear(obs_dim: int, act_dim: int, cfg: pref_brl.TrainConfig) -> LinearReward:
    return LinearReward(obs_dim, act_dim, cfg.reward_lr)


def make_nothing(obs_dim: int, act_dim: int, cfg: pref_brl.TrainConfig) -> object:
    return object()
