"""Replay buffer in preallocated torch storage whose rewards can be rewritten in place (relabelling)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


class Batch(NamedTuple):
    """A minibatch of transitions; `not_done` is 0 only at true terminals (never at time limits)."""

    obs: Tensor
    act: Tensor
    reward: Tensor
    next_obs: Tensor
    not_done: Tensor


class ReplayBuffer:
    """Ring buffer of (s, a, r, s', not_done, agent) in preallocated tensors on `device`.

    `relabel(fn)` recomputes every stored reward from (obs, act): it walks the filled slots, which are
    `[0, size)` whether or not the ring has wrapped, so relabelling stays correct after wrap-around.

    `cached(idx, fn)` gives a per-slot value of (obs, act) under the current reward model, computed once per
    slot and kept until the slot is overwritten or the rewards are relabelled (the model changed): the
    reward-uncertainty bonus's ensemble std, which would otherwise cost an ensemble pass per minibatch.
    """

    def __init__(self, obs_dim: int, act_dim: int, capacity: int, device: str | torch.device = "cpu") -> None:
        self.capacity = int(capacity)
        self.device = torch.device(device)
        kw = {"device": self.device, "dtype": torch.float32}
        self.obs = torch.empty(capacity, obs_dim, **kw)
        self.act = torch.empty(capacity, act_dim, **kw)
        self.reward = torch.empty(capacity, 1, **kw)
        self.next_obs = torch.empty(capacity, obs_dim, **kw)
        self.not_done = torch.empty(capacity, 1, **kw)
        self.agent = torch.zeros(capacity, dtype=torch.uint8, device=self.device)
        self.pos = 0
        self.size = 0
        self.cache: Tensor | None = None
        """per-slot values of `cached` (NaN: not computed for the slot's transition and reward model); made on
        first use"""

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, act: np.ndarray, reward: float, next_obs: np.ndarray,
            terminated: bool, agent: int = 0) -> None:
        """Store one transition (`terminated` is a true terminal, not a time-limit truncation)."""
        i = self.pos
        self.obs[i] = torch.as_tensor(obs)
        self.act[i] = torch.as_tensor(act)
        self.reward[i, 0] = float(reward)
        self.next_obs[i] = torch.as_tensor(next_obs)
        self.not_done[i, 0] = 0.0 if terminated else 1.0
        self.agent[i] = agent
        if self.cache is not None:
            self.cache[i] = math.nan
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """Uniform minibatch (with replacement) drawn from `generator`."""
        return self.gather(self.sample_indices(batch_size, generator))

    def sample_indices(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """The slots of a uniform minibatch (with replacement): `sample` is `gather(sample_indices(...))`."""
        return torch.randint(0, self.size, (batch_size,), generator=generator, device=self.device)

    def gather(self, idx: Tensor) -> Batch:
        return Batch(self.obs[idx], self.act[idx], self.reward[idx], self.next_obs[idx], self.not_done[idx])

    @torch.no_grad()
    def cached(self, idx: Tensor, fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """fn(obs, act) [len(idx)] of the slots `idx`, computed only for slots without a value since they were
        last written or relabelled, and kept for the next call."""
        if self.cache is None:
            self.cache = torch.full((self.capacity,), math.nan, device=self.device)
        values = self.cache[idx]
        missing = torch.isnan(values)
        if bool(missing.any()):
            new = torch.unique(idx[missing])
            self.cache[new] = fn(self.obs[new], self.act[new]).reshape(-1).to(self.cache.dtype)
            values = self.cache[idx]
        return values

    def recent_obs(self, count: int, agent: int | None = None) -> Tensor:
        """The `count` most recently stored observations (fewer if the buffer holds fewer); only those
        stored by `agent` when given (then among the last 4·count transitions)."""
        window = min(count if agent is None else 4 * count, self.size)
        idx = (torch.arange(self.pos - window, self.pos, device=self.device)) % self.capacity
        if agent is not None:
            idx = idx[self.agent[idx] == agent][-count:]
        return self.obs[idx]

    def stored_obs(self) -> Tensor:
        """Every stored observation (a view; order is storage order, not time order)."""
        return self.obs[: self.size]

    @torch.no_grad()
    def relabel(self, reward_fn: Callable[[Tensor, Tensor], Tensor], chunk: int = 65536) -> None:
        """Rewrite every stored reward as reward_fn(obs, act), in large chunks; the cached values go with the
        old rewards."""
        for start in range(0, self.size, chunk):
            end = min(start + chunk, self.size)
            self.reward[start:end, 0] = reward_fn(self.obs[start:end], self.act[start:end]).reshape(-1)
        if self.cache is not None:
            self.cache.fill_(math.nan)

    def state_dict(self) -> dict:
        n = self.size
        state = {"obs": self.obs[:n].clone(), "act": self.act[:n].clone(), "reward": self.reward[:n].clone(),
                 "next_obs": self.next_obs[:n].clone(), "not_done": self.not_done[:n].clone(),
                 "agent": self.agent[:n].clone(), "pos": self.pos, "size": n}
        if self.cache is not None:
            state["cache"] = self.cache[:n].clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Load a saved buffer, into a buffer of another capacity too (a run continued to more steps, whose
        capacity is its step count): a larger one keeps every transition and the next one goes after the
        newest, a smaller one keeps the newest `capacity`. At the same capacity the slots are kept as saved."""
        n, pos = state["size"], state["pos"]
        names = ("obs", "act", "reward", "next_obs", "not_done", "agent")
        self.cache = None  # a checkpoint from before the cache (or without one) starts with none: all computed anew
        if "cache" in state:
            self.cache = torch.full((self.capacity,), math.nan, device=self.device)
            names += ("cache",)
        tensors = {name: state[name] for name in names}
        if n != self.capacity and pos < n:  # a full ring (its oldest slot is `pos`), laid out oldest first
            tensors = {name: torch.cat([t[pos:], t[:pos]]) for name, t in tensors.items()}
            pos = n
        if n > self.capacity:
            tensors = {name: t[n - self.capacity:] for name, t in tensors.items()}
            n = pos = self.capacity
        for name, value in tensors.items():
            getattr(self, name)[:n] = value.to(self.device)
        self.pos, self.size = pos % self.capacity, n
