"""Query candidates and labelled preferences (see docs/pebble.md).

Three containers:

* :class:`EpisodeStore` -- the last ``capacity`` (default 100) *complete* episodes, from which query
  candidates are cut. Each episode remembers which agent produced it and its reset seed (the bilevel
  method pairs episodes of agents A and B that share a reset seed, see docs/bilevel.md).
* :class:`SegmentPairs` -- a batch of segment pairs (σ⁰, σ¹) with observations, actions and true rewards.
* :class:`PreferenceBuffer` -- every labelled pair ever collected, as flat ``concat(obs, act)`` tensors.

Label convention everywhere: ``1.0`` means σ¹ is preferred, ``0.0`` means σ⁰ is preferred, ``0.5`` means
"equally preferable".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["Episode", "EpisodeStore", "PreferenceBuffer", "SegmentPairs", "episode_state"]


@dataclass
class Episode:
    """One complete episode as seen by the query sampler.

    ``obs[t]`` is the state in which ``act[t]`` was taken and ``true_reward[t]`` received, so all three have
    the same length T (the final next-state is not stored). Arrays are converted to float32 numpy.
    """

    obs: np.ndarray
    """[T, O] states at which actions were taken."""
    act: np.ndarray
    """[T, A] actions."""
    true_reward: np.ndarray
    """[T] the environment's reward (only the scripted teacher may look at it)."""
    agent: str = "A"
    """Which agent produced it: "A" (the deployed agent) or "B" (the bilevel penalised agent)."""
    reset_seed: int = -1
    """The seed passed to ``env.reset``; -1 when unknown."""

    def __post_init__(self) -> None:
        self.obs = _as_f32(self.obs)
        self.act = _as_f32(self.act)
        self.true_reward = _as_f32(self.true_reward).reshape(-1)
        if self.obs.ndim != 2 or self.act.ndim != 2:
            raise ValueError(f"Episode obs/act must be 2-D, got {self.obs.shape} and {self.act.shape}")
        n = len(self.obs)
        if len(self.act) != n or len(self.true_reward) != n:
            raise ValueError(
                f"Episode arrays disagree in length: obs {n}, act {len(self.act)}, "
                f"true_reward {len(self.true_reward)}"
            )

    def __len__(self) -> int:
        return len(self.obs)

    @property
    def true_return(self) -> float:
        """Undiscounted sum of the true rewards."""
        return float(self.true_reward.sum(dtype=np.float64))


def _as_f32(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


@dataclass
class SegmentPairs:
    """A batch of B segment pairs of length H; float32 CPU tensors (or any device after :meth:`to`)."""

    obs0: Tensor
    """[B, H, O] states of σ⁰."""
    act0: Tensor
    """[B, H, A] actions of σ⁰."""
    rew0: Tensor
    """[B, H] true rewards of σ⁰ (teacher input)."""
    obs1: Tensor
    """[B, H, O] states of σ¹."""
    act1: Tensor
    """[B, H, A] actions of σ¹."""
    rew1: Tensor
    """[B, H] true rewards of σ¹."""

    def sa0(self) -> Tensor:
        """[B, H, O+A] concat(obs, act) of σ⁰, the reward model's input."""
        return torch.cat([self.obs0, self.act0], dim=-1)

    def sa1(self) -> Tensor:
        """[B, H, O+A] concat(obs, act) of σ¹."""
        return torch.cat([self.obs1, self.act1], dim=-1)

    def __len__(self) -> int:
        return self.obs0.shape[0]

    @property
    def segment(self) -> int:
        """Segment length H."""
        return self.obs0.shape[1]

    def _map(self, fn: Any) -> SegmentPairs:
        return SegmentPairs(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def select(self, idx: Tensor | np.ndarray | Sequence[int] | slice) -> SegmentPairs:
        """The pairs at ``idx`` (an index array, boolean mask or slice)."""
        if not isinstance(idx, slice):
            idx = torch.as_tensor(np.asarray(idx) if not isinstance(idx, Tensor) else idx)
            idx = idx.to(self.obs0.device)
        return self._map(lambda t: t[idx])

    def cat(self, other: SegmentPairs) -> SegmentPairs:
        """These pairs followed by ``other``'s."""
        return SegmentPairs(
            **{f.name: torch.cat([getattr(self, f.name), getattr(other, f.name)]) for f in fields(self)}
        )

    def to(self, device: torch.device | str) -> SegmentPairs:
        """A copy on ``device``."""
        return self._map(lambda t: t.to(device))


class EpisodeStore:
    """The last ``capacity`` complete episodes (oldest first), the pool query candidates are cut from."""

    def __init__(self, capacity: int = 100) -> None:
        if capacity < 1:
            raise ValueError(f"EpisodeStore capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._episodes: deque[Episode] = deque(maxlen=capacity)

    def add(self, ep: Episode) -> None:
        """Append a complete episode, dropping the oldest one when full."""
        self._episodes.append(ep)

    def __len__(self) -> int:
        return len(self._episodes)

    def episodes(self, agent: str | None = None) -> list[Episode]:
        """Stored episodes, oldest first; only ``agent``'s when given."""
        return [ep for ep in self._episodes if agent is None or ep.agent == agent]

    def recent(self, agent: str, k: int) -> list[Episode]:
        """The last ``k`` episodes of ``agent`` (oldest first; fewer if fewer are stored)."""
        eps = self.episodes(agent)
        return eps[-k:] if k > 0 else []

    def sample_pairs(
        self, n: int, segment: int, rng: np.random.Generator, agent: str | None = None
    ) -> SegmentPairs:
        """``n`` random segment pairs of length ``segment``.

        Each segment draws an episode uniformly (with replacement) among the eligible ones -- those of
        ``agent`` (all when None) at least ``segment`` steps long -- and a start index uniformly.
        """
        if n < 1 or segment < 1:
            raise ValueError(f"sample_pairs needs n >= 1 and segment >= 1, got n={n}, segment={segment}")
        eligible = [ep for ep in self.episodes(agent) if len(ep) >= segment]
        if not eligible:
            who = "any agent" if agent is None else f"agent {agent!r}"
            raise ValueError(
                f"No stored episode of {who} has at least {segment} steps "
                f"({len(self)} episodes stored); cannot sample query segments"
            )
        lengths = np.array([len(ep) for ep in eligible])
        picks = rng.integers(len(eligible), size=(2, n))
        starts = rng.integers(0, lengths[picks] - segment + 1)
        halves = [self._cut(eligible, picks[j], starts[j], segment) for j in range(2)]
        return SegmentPairs(*halves[0], *halves[1])

    @staticmethod
    def _cut(
        eligible: list[Episode], picks: np.ndarray, starts: np.ndarray, segment: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        obs = np.stack([eligible[i].obs[s : s + segment] for i, s in zip(picks, starts, strict=True)])
        act = np.stack([eligible[i].act[s : s + segment] for i, s in zip(picks, starts, strict=True)])
        rew = np.stack([eligible[i].true_reward[s : s + segment] for i, s in zip(picks, starts, strict=True)])
        return torch.from_numpy(obs), torch.from_numpy(act), torch.from_numpy(rew)

    def state_dict(self) -> dict[str, Any]:
        """Tensors, strings and ints only, so ``torch.load(weights_only=True)`` can read it back."""
        return {"capacity": self.capacity, "episodes": [episode_state(ep) for ep in self._episodes]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the contents (and capacity) saved by :meth:`state_dict`."""
        self.capacity = int(state["capacity"])
        self._episodes = deque((Episode(**ep) for ep in state["episodes"]), maxlen=self.capacity)


def episode_state(ep: Episode) -> dict[str, Any]:
    """An episode as tensors, a string and an int (``Episode(**state)`` rebuilds it)."""
    return {"obs": torch.from_numpy(ep.obs), "act": torch.from_numpy(ep.act),
            "true_reward": torch.from_numpy(ep.true_reward), "agent": ep.agent, "reset_seed": int(ep.reset_seed)}


class PreferenceBuffer:
    """Every labelled segment pair ever collected (as in PEBBLE, all labels are used at every round).

    Pairs are kept as ``concat(obs, act)`` tensors ``sa0``/``sa1`` of shape [N, H, D] with ``labels`` [N]
    (1 ⇒ σ¹ preferred, 0 ⇒ σ⁰, 0.5 ⇒ equal) and the true rewards ``rew0``/``rew1`` [N, H] for diagnostics.
    Storage is preallocated and doubles when full; the public attributes are views of the filled part.
    """

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self._n = 0
        self._store: dict[str, Tensor] = {}

    def __len__(self) -> int:
        return self._n

    def add(self, pairs: SegmentPairs, labels: Tensor) -> None:
        """Append labelled pairs; ``labels`` [B] must be finite and in [0, 1]."""
        labels = torch.as_tensor(labels, dtype=self.dtype).reshape(-1).to(self.device)
        if len(labels) != len(pairs):
            raise ValueError(f"{len(pairs)} pairs but {len(labels)} labels")
        if not bool(torch.isfinite(labels).all()) or bool(((labels < 0) | (labels > 1)).any()):
            raise ValueError("preference labels must be finite and in [0, 1] (drop skipped queries first)")
        new = {
            "sa0": pairs.sa0(),
            "sa1": pairs.sa1(),
            "rew0": pairs.rew0,
            "rew1": pairs.rew1,
            "labels": labels,
        }
        self._append({k: v.to(self.device, self.dtype) for k, v in new.items()})

    def _append(self, new: dict[str, Tensor]) -> None:
        b = len(new["labels"])
        if b == 0:
            return
        if not self._store:
            self._store = {k: v.new_empty((max(b, 16), *v.shape[1:])) for k, v in new.items()}
        elif new["sa0"].shape[1:] != self._store["sa0"].shape[1:]:
            raise ValueError(
                f"pair shape {tuple(new['sa0'].shape[1:])} differs from stored "
                f"{tuple(self._store['sa0'].shape[1:])}"
            )
        capacity = len(self._store["labels"])
        if self._n + b > capacity:
            grown = max(2 * capacity, self._n + b)
            for k, v in self._store.items():
                bigger = v.new_empty((grown, *v.shape[1:]))
                bigger[: self._n] = v[: self._n]
                self._store[k] = bigger
        for k, v in new.items():
            self._store[k][self._n : self._n + b] = v
        self._n += b

    def _view(self, key: str) -> Tensor:
        if not self._store:
            raise ValueError("PreferenceBuffer is empty")
        return self._store[key][: self._n]

    @property
    def sa0(self) -> Tensor:
        """[N, H, O+A] σ⁰ inputs of every labelled pair."""
        return self._view("sa0")

    @property
    def sa1(self) -> Tensor:
        """[N, H, O+A] σ¹ inputs of every labelled pair."""
        return self._view("sa1")

    @property
    def labels(self) -> Tensor:
        """[N] labels (1 ⇒ σ¹ preferred, 0 ⇒ σ⁰, 0.5 ⇒ equal)."""
        return self._view("labels")

    @property
    def rew0(self) -> Tensor:
        """[N, H] true rewards of σ⁰ (diagnostics only)."""
        return self._view("rew0")

    @property
    def rew1(self) -> Tensor:
        """[N, H] true rewards of σ¹ (diagnostics only)."""
        return self._view("rew1")

    def state_dict(self) -> dict[str, Any]:
        """The filled part of the storage, as CPU tensors."""
        return {"n": self._n, **{k: v[: self._n].cpu().clone() for k, v in self._store.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the contents with those saved by :meth:`state_dict`."""
        self._n = 0
        self._store = {}
        if int(state["n"]) > 0:
            keys = ("sa0", "sa1", "rew0", "rew1", "labels")
            self._append({k: state[k].to(self.device, self.dtype) for k in keys})
