"""The scripted preference teacher of B-Pref.

Reference: Lee et al., "B-Pref: Benchmarking Preference-Based Reinforcement Learning", NeurIPS 2021
Datasets and Benchmarks; see docs/pebble.md for where this implementation differs.

Label convention: 1.0 ⇒ σ¹ preferred, 0.0 ⇒ σ⁰ preferred, 0.5 ⇒ "equally preferable".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from pref_brl.protocols import Queries

__all__ = ["TEACHER_PRESETS", "ScriptedTeacher", "TeacherConfig", "teacher_from_name"]

EQUAL_LABEL = 0.5


@dataclass(frozen=True)
class TeacherConfig:
    """Parameters of the scripted teacher (B-Pref's "SimTeacher")."""

    beta: float = math.inf
    """Rationality: inf ⇒ the larger return always wins; finite β ≥ 0 ⇒ label ~ Bernoulli(sigmoid(β ΔR))
    (β = 0 gives coin flips; B-Pref's convention "β ≤ 0 means rational" is replaced by β = inf)."""
    gamma: float = 1.0
    """Myopia: step t of an H-step segment is weighted γ^(H-1-t) (1 ⇒ not myopic)."""
    eps_mistake: float = 0.0
    """Probability of flipping each label."""
    eps_skip: float = 0.0
    """Skip queries whose better segment has return ≤ ε_skip-scaled threshold (0 ⇒ never)."""
    eps_equal: float = 0.0
    """Label "equal" when the returns differ by less than the ε_equal-scaled threshold (0 ⇒ never)."""

    def __post_init__(self) -> None:
        if math.isnan(self.beta) or self.beta < 0:
            raise ValueError(f"teacher beta must be >= 0 or inf (rational), got {self.beta}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"teacher gamma must be in (0, 1], got {self.gamma}")
        for name in ("eps_mistake", "eps_skip", "eps_equal"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"teacher {name} must be in [0, 1], got {value}")

    @property
    def rational(self) -> bool:
        return math.isinf(self.beta)


TEACHER_PRESETS: dict[str, TeacherConfig] = {
    "oracle": TeacherConfig(),
    "mistake": TeacherConfig(eps_mistake=0.1),
    "noisy": TeacherConfig(beta=1.0),
    "skip": TeacherConfig(eps_skip=0.1),
    "myopic": TeacherConfig(gamma=0.9),
    "equal": TeacherConfig(eps_equal=0.1),
}
"""The six teachers of B-Pref."""


def teacher_from_name(name: str) -> TeacherConfig:
    """The preset called ``name``; a ValueError lists the known presets otherwise."""
    try:
        return TEACHER_PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown teacher {name!r}; known presets: {', '.join(TEACHER_PRESETS)}"
        ) from None


class ScriptedTeacher:
    """Labels segment pairs from their true rewards, with B-Pref's irrationalities.

    Thresholds are ``ε × mean_episode_return × H / episode_length`` (the mean return scaled to a segment
    of length H), with ε applied **once**. B-Pref's ``SimTeacher`` multiplies by ε again when it updates
    the thresholds after the first round (ε², a bug), so its "skip"/"equal" teachers skip or tie far less
    often than their names say; keep that in mind when comparing with its published curves.

    All randomness comes from the ``rng`` given at construction; :meth:`state_dict` saves its state.
    """

    def __init__(self, config: TeacherConfig, rng: np.random.Generator) -> None:
        self.config = config
        self.rng = rng

    def thresholds(
        self, mean_episode_return: float, segment: int, episode_length: int
    ) -> tuple[float, float]:
        """(skip, equal) thresholds on segment returns."""
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        scale = mean_episode_return * segment / episode_length
        return self.config.eps_skip * scale, self.config.eps_equal * scale

    def label(
        self, r0: Tensor, r1: Tensor, mean_episode_return: float, episode_length: int
    ) -> tuple[Tensor, Tensor]:
        """Label pairs from true per-step rewards r0, r1 [B, H].

        Returns ``keep_mask`` [B] bool (False for skipped queries; they still cost budget) and ``labels``
        [B] float32 (1 ⇒ σ¹ preferred, 0 ⇒ σ⁰, 0.5 ⇒ equal; NaN where skipped, so they cannot be trained
        on by accident). Steps follow B-Pref's scripted teacher in order.
        """
        cfg = self.config
        r0_np = _to_numpy(r0)
        r1_np = _to_numpy(r1)
        if r0_np.shape != r1_np.shape or r0_np.ndim != 2:
            raise ValueError(f"r0 and r1 must both be [B, H], got {r0_np.shape} and {r1_np.shape}")
        n, horizon = r0_np.shape
        thres_skip, thres_equal = self.thresholds(mean_episode_return, horizon, episode_length)
        # 1. undiscounted segment returns
        ret0, ret1 = r0_np.sum(1), r1_np.sum(1)
        # 2. skip queries in which neither segment is any good
        keep = np.ones(n, dtype=bool)
        if cfg.eps_skip > 0 and thres_skip > 0:  # B-Pref: a threshold <= 0 (e.g. mean return 0) keeps every query
            keep = np.maximum(ret0, ret1) > thres_skip
        # 3. equal mask, on the undiscounted returns
        equal = np.zeros(n, dtype=bool)
        if cfg.eps_equal > 0:
            equal = np.abs(ret0 - ret1) < thres_equal
        # 4. myopic re-weighting: later steps count more
        if cfg.gamma < 1.0:
            weights = cfg.gamma ** np.arange(horizon - 1, -1, -1, dtype=np.float64)
            ret0, ret1 = r0_np @ weights, r1_np @ weights
        # 5. rational or Boltzmann-rational label
        if cfg.rational:
            labels = (ret0 < ret1).astype(np.float64)
        else:
            p1 = _sigmoid(cfg.beta * (ret1 - ret0))
            labels = (self.rng.random(n) < p1).astype(np.float64)
        # 6. mistakes
        if cfg.eps_mistake > 0:
            flip = self.rng.random(n) < cfg.eps_mistake
            labels = np.where(flip, 1.0 - labels, labels)
        # 7. equal labels last
        labels[equal] = EQUAL_LABEL
        labels[~keep] = np.nan
        return torch.from_numpy(keep), torch.from_numpy(labels.astype(np.float32))

    def __call__(self, queries: Queries) -> np.ndarray:
        """The :class:`pref_brl.protocols.Teacher` interface: labels [B], NaN where a query is skipped."""
        _, labels = self.label(queries.rew0, queries.rew1, queries.mean_return, queries.episode_length)
        return labels.numpy()

    def state_dict(self) -> dict[str, Any]:
        """The generator's bit-generator state (plain dicts/ints/strings)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generator state saved by :meth:`state_dict`."""
        self.rng.bit_generator.state = state["rng"]


def _to_numpy(x: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))
