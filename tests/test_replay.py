"""Replay buffer: storage, sampling, relabelling (also after the ring wraps), the per-slot cache, state round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pref_brl.agents.replay import ReplayBuffer


def fill(buf: ReplayBuffer, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        buf.add(rng.normal(size=3), rng.uniform(-1, 1, 2), float(i), rng.normal(size=3), terminated=(i % 7 == 0))


def reward_fn(obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    return obs.sum(-1) * 2 + act.prod(-1)


def test_relabel_rewrites_every_slot_after_wrap() -> None:
    buf = ReplayBuffer(3, 2, capacity=10)
    fill(buf, 25)
    assert len(buf) == 10 and buf.pos == 5
    buf.relabel(reward_fn, chunk=3)
    torch.testing.assert_close(buf.reward[:, 0], reward_fn(buf.obs, buf.act))


def test_relabel_before_wrap_leaves_empty_slots_alone() -> None:
    buf = ReplayBuffer(3, 2, capacity=10)
    fill(buf, 4)
    buf.reward[4:] = -123.0
    buf.relabel(reward_fn)
    torch.testing.assert_close(buf.reward[:4, 0], reward_fn(buf.obs[:4], buf.act[:4]))
    assert torch.all(buf.reward[4:] == -123.0)


def test_wrap_overwrites_oldest_and_marks_terminals() -> None:
    buf = ReplayBuffer(3, 2, capacity=10)
    fill(buf, 13)
    assert buf.reward[:3, 0].tolist() == [10.0, 11.0, 12.0]
    # slot 0 now holds i = 10 (not a terminal); slot 7 still holds i = 7, a terminal (i % 7 == 0)
    assert buf.not_done[0, 0] == 1.0 and buf.not_done[7, 0] == 0.0


def test_sampling_is_reproducible_and_in_range() -> None:
    buf = ReplayBuffer(3, 2, capacity=50)
    fill(buf, 20)
    a = buf.sample(64, torch.Generator().manual_seed(0))
    b = buf.sample(64, torch.Generator().manual_seed(0))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert a.obs.shape == (64, 3) and a.reward.shape == (64, 1) and a.not_done.shape == (64, 1)
    assert set(a.reward[:, 0].tolist()) <= set(range(20))


def test_state_dict_round_trip() -> None:
    buf = ReplayBuffer(3, 2, capacity=10)
    fill(buf, 17)
    other = ReplayBuffer(3, 2, capacity=10)
    other.load_state_dict(buf.state_dict())
    assert other.pos == buf.pos and len(other) == len(buf) and other.cache is None
    for name in ("obs", "act", "reward", "next_obs", "not_done", "agent"):
        assert torch.equal(getattr(other, name), getattr(buf, name))
    buf.cached(torch.tensor([0, 3]), reward_fn)  # the cache goes with the buffer, NaN (not computed) included
    other.load_state_dict(buf.state_dict())
    assert torch.allclose(other.cache, buf.cache, equal_nan=True)
    assert int(torch.isnan(other.cache).sum()) == 8
    fn = Counted()
    other.cached(torch.tensor([0, 3]), fn)
    assert fn.rows == 0


class Counted:
    """reward_fn, counting the rows it is asked for."""

    def __init__(self) -> None:
        self.rows = 0

    def __call__(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        self.rows += len(obs)
        return reward_fn(obs, act)


def test_cached_values_are_computed_once_per_slot_until_overwritten_or_relabelled() -> None:
    buf = ReplayBuffer(3, 2, capacity=10)
    fill(buf, 8)
    fn = Counted()
    idx = torch.tensor([1, 1, 5, 2, 5])
    torch.testing.assert_close(buf.cached(idx, fn), reward_fn(buf.obs[idx], buf.act[idx]))
    assert fn.rows == 3  # slots 1, 2 and 5, once each
    torch.testing.assert_close(buf.cached(torch.tensor([5, 1, 0]), fn), reward_fn(buf.obs[[5, 1, 0]],
                                                                               buf.act[[5, 1, 0]]))
    assert fn.rows == 4  # only slot 0 was new
    fill(buf, 4, seed=1)  # the ring wraps: slots 8, 9, 0 and 1 now hold other transitions
    every = torch.arange(10)
    torch.testing.assert_close(buf.cached(every, fn), reward_fn(buf.obs, buf.act))
    assert fn.rows == 4 + 10 - 2  # all but slots 2 and 5, still valid
    buf.relabel(lambda obs, act: obs[:, 0])  # a new reward model: every cached value is stale
    buf.obs.mul_(2)  # (so that a stale value would show)
    torch.testing.assert_close(buf.cached(every, fn), reward_fn(buf.obs, buf.act))
    assert fn.rows == 12 + 10


def _numbered(capacity: int, count: int) -> ReplayBuffer:
    """A buffer that was given transitions 0, 1, …, count-1 (the number in every field)."""
    buffer = ReplayBuffer(2, 1, capacity)
    for i in range(count):
        buffer.add(np.full(2, i), np.full(1, i), float(i), np.full(2, i), False)
    return buffer


def _oldest_first(buffer: ReplayBuffer) -> list[int]:
    return [int(buffer.reward[(buffer.pos - buffer.size + j) % buffer.capacity, 0]) for j in range(buffer.size)]


@pytest.mark.parametrize("capacity", [1, 3, 5, 8])
@pytest.mark.parametrize("count", [0, 1, 2, 3, 5, 8, 13])
@pytest.mark.parametrize("new_capacity", [1, 2, 3, 5, 8, 20])
def test_loading_into_another_capacity_keeps_the_newest_in_order(capacity, count, new_capacity) -> None:
    # a run continued to more steps (capacity = steps) loads its saved buffer into a larger one: every kept
    # transition must stay, and the next ones go after the newest, as in a buffer of that size all along
    saved = _numbered(capacity, count)
    if count:
        saved.cached(torch.arange(saved.size), lambda obs, act: obs[:, 0])  # each slot's cache: its number
    loaded = ReplayBuffer(2, 1, new_capacity)
    loaded.load_state_dict(saved.state_dict())
    kept = list(range(count))[-capacity:][-new_capacity:] if count else []
    assert _oldest_first(loaded) == kept
    n = loaded.size
    for field in (loaded.obs, loaded.act, loaded.next_obs):  # every field moves with its transition
        assert torch.equal(field[:n, 0], loaded.reward[:n, 0])
    if count:
        assert torch.equal(loaded.cache[:n], loaded.reward[:n, 0]) and torch.isnan(loaded.cache[n:]).all()
    if new_capacity == capacity or (new_capacity >= count and saved.pos in (0, saved.size)):
        # the same slots: a run loaded at its own size (or grown before it wrapped) samples the same transitions
        assert torch.equal(loaded.reward[:n], saved.reward[:n])
    if new_capacity == capacity:
        assert loaded.pos == saved.pos
    for i in range(100, 104):
        loaded.add(np.full(2, i), np.full(1, i), float(i), np.full(2, i), False)
    assert _oldest_first(loaded) == (kept + list(range(100, 104)))[-new_capacity:]
    if count:  # new transitions have no cached value; the kept ones keep theirs
        assert [math.isnan(loaded.cache[(loaded.pos - loaded.size + j) % new_capacity]) for j in range(loaded.size)] \
            == [v >= 100 for v in _oldest_first(loaded)]
