import io

import numpy as np
import pytest
import torch

from pref_brl.preferences import Episode, EpisodeStore, PreferenceBuffer, SegmentPairs


def make_episode(ep_id: float, length: int = 30, agent: str = "A", seed: int = 0) -> Episode:
    """obs[t] = (ep_id, t) so a segment tells where it was cut from; act = -obs; reward = t."""
    t = np.arange(length, dtype=np.float32)
    obs = np.stack([np.full(length, ep_id, np.float32), t], axis=1)
    return Episode(obs=obs, act=-obs, true_reward=t, agent=agent, reset_seed=seed)


def roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_episode_validates_and_converts():
    ep = Episode(obs=np.zeros((4, 2), np.float64), act=torch.zeros(4, 1), true_reward=[1, 2, 3, 4])
    assert ep.obs.dtype == np.float32 and ep.act.dtype == np.float32
    assert len(ep) == 4 and ep.true_return == 10.0
    assert ep.agent == "A"
    with pytest.raises(ValueError, match="length"):
        Episode(obs=np.zeros((4, 2)), act=np.zeros((3, 1)), true_reward=np.zeros(4))


def test_store_keeps_last_capacity_and_filters_by_agent():
    store = EpisodeStore(capacity=100)
    for i in range(130):
        store.add(make_episode(i, agent="B" if i % 3 == 0 else "A", seed=i))
    assert len(store) == 100
    ids = [int(ep.obs[0, 0]) for ep in store.episodes()]
    assert ids == list(range(30, 130))
    assert all(ep.agent == "B" for ep in store.episodes("B"))
    assert len(store.episodes("B")) + len(store.episodes("A")) == 100
    recent_b = store.recent("B", 3)
    assert [ep.reset_seed for ep in recent_b] == [123, 126, 129]
    assert store.recent("A", 0) == []


def test_sample_pairs_cuts_real_contiguous_segments():
    store = EpisodeStore()
    for i in range(5):
        store.add(make_episode(i, length=20 + i))
    store.add(make_episode(99, length=5))  # too short: never eligible
    pairs = store.sample_pairs(400, segment=10, rng=np.random.default_rng(0))
    assert len(pairs) == 400 and pairs.segment == 10
    assert pairs.obs0.shape == (400, 10, 2) and pairs.act1.shape == (400, 10, 2)
    assert pairs.rew0.shape == (400, 10)
    assert pairs.sa0().shape == (400, 10, 4) and pairs.obs0.dtype == torch.float32
    for obs, act, rew in ((pairs.obs0, pairs.act0, pairs.rew0), (pairs.obs1, pairs.act1, pairs.rew1)):
        ep_ids = obs[:, :, 0]
        assert bool((ep_ids == ep_ids[:, :1]).all()), "a segment mixes episodes"
        assert not bool((ep_ids == 99).any())
        steps = obs[:, :, 1]
        assert bool((steps.diff(dim=1) == 1).all()), "segment is not contiguous"
        assert bool((steps[:, -1] < 20 + ep_ids[:, 0]).all()), "segment runs past the episode"
        assert torch.equal(act, -obs) and torch.equal(rew, steps)
    # every eligible episode and both extreme start indices get drawn
    assert set(pairs.obs0[:, 0, 0].long().tolist()) == set(range(5))
    assert int(pairs.obs0[:, 0, 1].min()) == 0


def test_sample_pairs_agent_filter_and_errors():
    store = EpisodeStore()
    store.add(make_episode(1, agent="A"))
    store.add(make_episode(2, agent="B"))
    pairs = store.sample_pairs(50, 5, np.random.default_rng(1), agent="B")
    assert bool((pairs.obs0[:, :, 0] == 2).all()) and bool((pairs.obs1[:, :, 0] == 2).all())
    with pytest.raises(ValueError, match="at least 40 steps"):
        store.sample_pairs(3, 40, np.random.default_rng(0))
    with pytest.raises(ValueError, match="agent 'C'"):
        store.sample_pairs(3, 5, np.random.default_rng(0), agent="C")


def test_sample_pairs_is_deterministic_given_rng():
    store = EpisodeStore()
    for i in range(4):
        store.add(make_episode(i))
    a = store.sample_pairs(20, 7, np.random.default_rng(5))
    b = store.sample_pairs(20, 7, np.random.default_rng(5))
    assert torch.equal(a.obs0, b.obs0) and torch.equal(a.obs1, b.obs1)


def test_segment_pairs_select_and_cat():
    store = EpisodeStore()
    store.add(make_episode(3))
    pairs = store.sample_pairs(6, 4, np.random.default_rng(2))
    sub = pairs.select([4, 1])
    assert len(sub) == 2 and torch.equal(sub.obs1[0], pairs.obs1[4])
    assert torch.equal(sub.rew0[1], pairs.rew0[1])
    both = sub.cat(pairs.select(np.array([True, False, False, False, False, True])))
    assert len(both) == 4 and torch.equal(both.act0[3], pairs.act0[5])
    assert torch.equal(pairs.select(slice(1, 3)).obs0, pairs.obs0[1:3])


def test_store_state_dict_roundtrip():
    store = EpisodeStore(capacity=3)
    for i in range(5):
        store.add(make_episode(i, length=8 + i, agent="AB"[i % 2], seed=10 + i))
    other = EpisodeStore()
    other.load_state_dict(roundtrip(store.state_dict()))
    assert other.capacity == 3 and len(other) == 3
    for a, b in zip(store.episodes(), other.episodes(), strict=True):
        assert np.array_equal(a.obs, b.obs) and np.array_equal(a.act, b.act)
        assert np.array_equal(a.true_reward, b.true_reward)
        assert (a.agent, a.reset_seed) == (b.agent, b.reset_seed)
    other.add(make_episode(9))
    assert len(other) == 3  # capacity restored too


def random_pairs(n: int, h: int = 4, o: int = 3, a: int = 2, seed: int = 0) -> SegmentPairs:
    g = torch.Generator().manual_seed(seed)
    return SegmentPairs(*(torch.randn(n, h, d, generator=g) for d in (o, a)), torch.randn(n, h, generator=g),
                        *(torch.randn(n, h, d, generator=g) for d in (o, a)), torch.randn(n, h, generator=g))


def test_preference_buffer_grows_and_keeps_everything():
    buf = PreferenceBuffer()
    assert len(buf) == 0
    chunks = [random_pairs(n, seed=n) for n in (5, 20, 1, 30)]
    labels = [torch.tensor([0.0, 1.0, 0.5])[torch.arange(len(c)) % 3] for c in chunks]
    for c, y in zip(chunks, labels, strict=True):
        buf.add(c, y)
    assert len(buf) == 56
    assert torch.equal(buf.sa0, torch.cat([c.sa0() for c in chunks]))
    assert torch.equal(buf.sa1, torch.cat([c.sa1() for c in chunks]))
    assert torch.equal(buf.labels, torch.cat(labels))
    assert torch.equal(buf.rew1, torch.cat([c.rew1 for c in chunks]))


def test_preference_buffer_rejects_bad_labels():
    buf = PreferenceBuffer()
    with pytest.raises(ValueError, match="finite"):
        buf.add(random_pairs(2), torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="2 pairs but 3 labels"):
        buf.add(random_pairs(2), torch.tensor([1.0, 0.0, 0.0]))
    buf.add(random_pairs(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        buf.add(random_pairs(2, h=5), torch.tensor([1.0, 0.0]))


def test_preference_buffer_state_dict_roundtrip():
    buf = PreferenceBuffer()
    buf.add(random_pairs(7), torch.tensor([0, 1, 0.5, 1, 0, 0, 1]))
    other = PreferenceBuffer()
    other.load_state_dict(roundtrip(buf.state_dict()))
    assert len(other) == 7
    for key in ("sa0", "sa1", "labels", "rew0", "rew1"):
        assert torch.equal(getattr(other, key), getattr(buf, key))
    other.add(random_pairs(3, seed=1), torch.ones(3))
    assert len(other) == 10
    empty = PreferenceBuffer()
    empty.load_state_dict(roundtrip(PreferenceBuffer().state_dict()))
    assert len(empty) == 0
