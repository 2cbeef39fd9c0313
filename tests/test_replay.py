"""Replay buffer: storage, sampling, relabelling (also after the ring wraps), state round trip."""

from __future__ import annotations

import numpy as np
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
    assert other.pos == buf.pos and len(other) == len(buf)
    for name in ("obs", "act", "reward", "next_obs", "not_done", "agent"):
        assert torch.equal(getattr(other, name), getattr(buf, name))
