"""Where your own code plugs into the preference loop: who labels (:class:`Teacher`) and what learns the reward
(:class:`RewardModel`). Each has one implementation here: B-Pref's scripted teacher (Lee et al., "B-Pref:
Benchmarking Preference-Based Reinforcement Learning", 2021) and PEBBLE's reward ensemble (Lee, Smith, Abbeel,
"PEBBLE", ICML 2021). A config names yours by import path, `teacher="module:function"` or
`reward_model="module:factory"`, so the run folder records which one it was (docs/library.md).

Label convention: 1.0 ⇒ σ¹ preferred, 0.0 ⇒ σ⁰ preferred, 0.5 ⇒ equally preferable, NaN ⇒ skipped (the query
still costs budget).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from pref_brl.config import TrainConfig
    from pref_brl.preferences import PreferenceBuffer, SegmentPairs

__all__ = ["EQUAL", "SKIP", "Queries", "RewardModel", "Teacher", "check_labels", "make_reward_model",
           "make_teacher", "resolve"]

EQUAL = 0.5
"""the label of two equally preferable segments"""
SKIP = float("nan")
"""the label of a skipped query"""
HUMAN = "human"
"""`teacher` of labelling by hand (pref_brl.human; docs/human.md)"""
ENSEMBLE = "ensemble"
"""`reward_model` of PEBBLE's reward ensemble"""


@dataclass(frozen=True)
class Queries:
    """One feedback round's segment pairs as a teacher sees them (float32 numpy arrays, B pairs of H steps)."""

    obs0: np.ndarray
    """[B, H, O] states of σ⁰"""
    act0: np.ndarray
    """[B, H, A] actions of σ⁰"""
    rew0: np.ndarray
    """[B, H] true rewards of σ⁰"""
    obs1: np.ndarray
    """[B, H, O] states of σ¹"""
    act1: np.ndarray
    """[B, H, A] actions of σ¹"""
    rew1: np.ndarray
    """[B, H] true rewards of σ¹"""
    mean_return: float
    """mean true return of the agent's last (up to 10) complete episodes (0 before the first one)"""
    episode_length: int
    """the environment's episode length (B-Pref's teachers scale their thresholds by H / episode_length)"""
    rng: np.random.Generator
    """the teacher's own generator, derived from the run seed and saved in checkpoints: draw noise from it"""

    def __len__(self) -> int:
        return len(self.obs0)

    @classmethod
    def of(cls, pairs: SegmentPairs, mean_return: float, episode_length: int, rng: np.random.Generator) -> Queries:
        """The teacher's view of `pairs`."""
        arrays = [t.detach().cpu().numpy() for t in (pairs.obs0, pairs.act0, pairs.rew0, pairs.obs1, pairs.act1,
                                                      pairs.rew1)]
        return cls(*arrays, mean_return=mean_return, episode_length=episode_length, rng=rng)


class Teacher(Protocol):
    """Labels a round's queries: `teacher(queries)` returns labels [B] (1, 0, 0.5 equal, NaN skip)."""

    def __call__(self, queries: Queries) -> np.ndarray: ...


@runtime_checkable
class RewardModel(Protocol):
    """A reward learned from labelled segment pairs; `RewardEnsemble` is the default implementation."""

    n_members: int
    """ensemble members (1: a single model; disagreement queries need 2 or more)"""

    def mean_reward(self, obs: Tensor, act: Tensor) -> Tensor:
        """Per-step reward [N] of states [N, O] and actions [N, A] (no gradients; the loop relabels with it)."""
        ...

    def pair_logits(self, sa0: Tensor, sa1: Tensor) -> Tensor:
        """[M, B] logits of P(σ¹ ≻ σ⁰) per member, from concat(obs, act) segments [B, H, O+A] (queries use it)."""
        ...

    def train_round(self, prefs: PreferenceBuffer, max_epochs: int, rng: np.random.Generator,
                    batch_size: int = 128) -> dict[str, float]:
        """One feedback round's training on every labelled pair so far; returns `reward/*` scalars to log."""
        ...

    def full_state(self) -> dict[str, Any]:
        """Everything a checkpoint needs (tensors, numbers, strings and containers only)."""
        ...

    def load_full_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`full_state` returned."""
        ...


def resolve(spec: str, what: str) -> Any:
    """The callable named by `spec` ("package.module:name"); a one-line ValueError says why it cannot be had.

    The module is imported with the working directory on the import path (last), as `python -m` would find it.
    """
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"{what} {spec!r} is neither a known name nor module:name")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module is reported in one line
        detail = " ".join(str(exc).split())
        raise ValueError(f"cannot import {what} {spec!r} ({type(exc).__name__}: {detail}); give an importable "
                         "module:name") from None
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"cannot import {what} {spec!r}: {module_name} has no attribute {name!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{what} {spec!r} is not callable")
    return obj


def make_teacher(name: str, rng: np.random.Generator) -> Teacher:
    """A scripted preset (drawing from `rng`) or the user's teacher named "module:function"."""
    from pref_brl.teacher import TEACHER_PRESETS, ScriptedTeacher

    if name in TEACHER_PRESETS:
        return ScriptedTeacher(TEACHER_PRESETS[name], rng)
    return resolve(name, "teacher")


def check_labels(labels: Any, n: int, teacher: str) -> np.ndarray:
    """`labels` as float32 [n], checked: each finite label in [0, 1], NaN for a skipped query."""
    out = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels, dtype=np.float32)
    if out.shape != (n,):
        raise ValueError(f"teacher {teacher!r} returned labels of shape {out.shape} for {n} queries; expected ({n},)")
    finite = out[np.isfinite(out)]
    if np.isinf(out).any() or ((finite < 0) | (finite > 1)).any():
        raise ValueError(f"teacher {teacher!r} returned a label outside [0, 1] (1: σ¹ preferred, 0: σ⁰, 0.5: "
                         "equal, NaN: skip)")
    return out


def make_reward_model(cfg: TrainConfig, obs_dim: int, act_dim: int, device: torch.device | str) -> RewardModel:
    """PEBBLE's ensemble, or `factory(obs_dim, act_dim, cfg)` named by `cfg.reward_model` ("module:factory")."""
    from pref_brl.reward_model import RewardEnsemble

    if cfg.reward_model == ENSEMBLE:
        return RewardEnsemble(obs_dim, act_dim, cfg.ensemble_size, cfg.reward_hidden, cfg.reward_depth,
                              cfg.reward_lr, device=device, seed=cfg.seed + 101)
    model = resolve(cfg.reward_model, "reward model")(obs_dim, act_dim, cfg)
    missing = [k for k in ("n_members", "mean_reward", "pair_logits", "train_round", "full_state",
                           "load_full_state") if not hasattr(model, k)]
    if missing:
        raise ValueError(f"reward model {cfg.reward_model!r} built a {type(model).__name__} without "
                         f"{', '.join(missing)} (see pref_brl.RewardModel)")
    return model
