import numpy as np
import pytest
import torch

from pref_brl.preferences import Episode, EpisodeStore, PreferenceBuffer
from pref_brl.queries import (
    POOL_FACTOR,
    QUERY_STRATEGIES,
    entropy_score,
    greedy_kcenter,
    preference_probs,
    select_queries,
)
from pref_brl.reward_model import RewardEnsemble

OBS, ACT, H = 2, 1, 4


def store_of_levels(
    levels, agent: str = "A", length: int = 12, store: EpisodeStore | None = None
) -> EpisodeStore:
    """Episodes with a constant first state feature ``level`` and the agent's tag in the second."""
    store = store or EpisodeStore()
    for v in levels:
        obs = np.tile(np.array([[v, 1.0 if agent == "B" else 0.0]], np.float32), (length, 1))
        store.add(Episode(obs, np.zeros((length, ACT), np.float32), np.full(length, v, np.float32), agent))
    return store


def linear_ensemble(coefs) -> RewardEnsemble:
    """No hidden layer: member m's reward is tanh(coefs[m] * s[0])."""
    ens = RewardEnsemble(OBS, ACT, n_members=len(coefs), n_layers=0)
    with torch.no_grad():
        ens.weights[0].zero_()
        ens.biases[0].zero_()
        ens.weights[0][:, 0, 0] = torch.tensor(coefs)
    return ens


def pool_levels(store: EpisodeStore, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The first-feature level of both segments of the pool a scored strategy draws with this seed."""
    pool = store.sample_pairs(POOL_FACTOR * n, H, np.random.default_rng(seed))
    return pool.obs0[:, 0, 0].numpy(), pool.obs1[:, 0, 0].numpy()


@pytest.mark.parametrize("name", sorted(QUERY_STRATEGIES))
def test_every_strategy_returns_exactly_n_pairs(name):
    store = store_of_levels(np.linspace(-1, 1, 9))
    ens = RewardEnsemble(OBS, ACT, hidden=16)
    for n in (1, 7):
        pairs = select_queries(name, store, ens, n, H, np.random.default_rng(0))
        assert len(pairs) == n
        assert pairs.obs0.shape == (n, H, OBS) and pairs.act1.shape == (n, H, ACT)
        assert pairs.rew0.shape == (n, H)
    with pytest.raises(ValueError, match="n_queries"):
        select_queries(name, store, ens, 0, H, np.random.default_rng(0))


@pytest.mark.parametrize("name", sorted(QUERY_STRATEGIES))
def test_strategies_respect_agent_filter(name):
    store = store_of_levels(np.linspace(-1, 1, 5), agent="A")
    store_of_levels(np.linspace(-1, 1, 5), agent="B", store=store)
    ens = RewardEnsemble(OBS, ACT, hidden=16)
    pairs = select_queries(name, store, ens, 5, H, np.random.default_rng(1), "B")
    assert bool((pairs.obs0[..., 1] == 1).all()) and bool((pairs.obs1[..., 1] == 1).all())


def test_unknown_strategy_lists_known_names():
    with pytest.raises(ValueError, match="uniform, disagreement, entropy, kcenter"):
        select_queries("random", EpisodeStore(), linear_ensemble([1.0]), 1, H, np.random.default_rng(0))


def test_disagreement_picks_most_disputed_pairs():
    # members -1, 0, +1 times the same reward: they disagree more the larger |tanh v1 - tanh v0|
    store = store_of_levels(np.linspace(-1, 1, 21))
    n, seed = 6, 3
    ens = linear_ensemble([-1.0, 0.0, 1.0])
    pairs = select_queries("disagreement", store, ens, n, H, np.random.default_rng(seed))
    v0, v1 = pool_levels(store, n, seed)
    dispute = np.abs(np.tanh(v1) - np.tanh(v0))
    picked = np.abs(np.tanh(pairs.obs1[:, 0, 0].numpy()) - np.tanh(pairs.obs0[:, 0, 0].numpy()))
    np.testing.assert_allclose(np.sort(picked), np.sort(dispute)[-n:], rtol=1e-5)
    assert picked.min() > np.median(dispute)


def test_entropy_picks_least_certain_pairs():
    # all members agree, so the entropy is largest where the two returns are closest
    store = store_of_levels(np.linspace(-1, 1, 21))
    n, seed = 6, 4
    ens = linear_ensemble([2.0, 2.0, 2.0])
    pairs = select_queries("entropy", store, ens, n, H, np.random.default_rng(seed))
    v0, v1 = pool_levels(store, n, seed)
    gap = np.abs(np.tanh(2 * v1) - np.tanh(2 * v0))
    picked = np.abs(np.tanh(2 * pairs.obs1[:, 0, 0].numpy()) - np.tanh(2 * pairs.obs0[:, 0, 0].numpy()))
    np.testing.assert_allclose(np.sort(picked), np.sort(gap)[:n], atol=1e-6)


def test_entropy_score_is_binary_entropy():
    probs = torch.tensor([[0.5, 0.9, 0.1], [0.5, 0.9, 0.9]])
    h = lambda p: -(p * np.log(p) + (1 - p) * np.log(1 - p))  # noqa: E731
    np.testing.assert_allclose(entropy_score(probs).numpy(), [np.log(2), h(0.9), h(0.9)], rtol=1e-5)


def test_preference_probs_chunking():
    store = store_of_levels(np.linspace(-1, 1, 5))
    pool = store.sample_pairs(23, H, np.random.default_rng(0))
    ens = RewardEnsemble(OBS, ACT, hidden=16)
    full = torch.sigmoid(ens.pair_logits(pool.sa0(), pool.sa1())).detach()
    torch.testing.assert_close(preference_probs(ens, pool, chunk=5), full)


def test_greedy_kcenter_spreads_out():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(10, 2, generator=g) for c in centres])  # 3 tight clusters
    for seed in range(5):
        picked = greedy_kcenter(points, 3, np.random.default_rng(seed))
        assert sorted(i // 10 for i in picked) == [0, 1, 2]
    # labelled pairs count as chosen centres: cluster 0 is already covered
    picked = greedy_kcenter(points, 2, np.random.default_rng(0), centres=centres[:1])
    assert sorted(i // 10 for i in picked) == [1, 2]
    # never repeats a point, even when all points coincide
    assert len(set(greedy_kcenter(torch.zeros(5, 2), 5, np.random.default_rng(0)).tolist())) == 5


def test_kcenter_strategy_covers_all_distinct_pairs():
    # two episode kinds => four distinct pair kinds; 4 k-center queries must take one of each
    store = store_of_levels([0.0, 10.0] * 5)
    ens = RewardEnsemble(OBS, ACT, hidden=8)
    pairs = select_queries("kcenter", store, ens, 4, H, np.random.default_rng(0))
    kinds = {(float(a), float(b)) for a, b in zip(pairs.obs0[:, 0, 0], pairs.obs1[:, 0, 0], strict=True)}
    assert kinds == {(0.0, 0.0), (0.0, 10.0), (10.0, 0.0), (10.0, 10.0)}


def test_kcenter_uses_labelled_pairs_as_centres():
    store = store_of_levels([0.0, 10.0] * 5)
    ens = RewardEnsemble(OBS, ACT, hidden=8)
    labelled = PreferenceBuffer()
    first = select_queries("kcenter", store, ens, 4, H, np.random.default_rng(0))
    covered = first.select([i for i in range(4) if float(first.obs0[i, 0, 0]) == float(first.obs1[i, 0, 0])])
    labelled.add(covered, torch.ones(len(covered)))  # (0, 0) and (10, 10) are already labelled
    pairs = select_queries("kcenter", store, ens, 2, H, np.random.default_rng(1), prefs=labelled)
    kinds = {(float(a), float(b)) for a, b in zip(pairs.obs0[:, 0, 0], pairs.obs1[:, 0, 0], strict=True)}
    assert kinds == {(0.0, 10.0), (10.0, 0.0)}


def test_kcenter_disagreement_stays_in_the_uncertain_half():
    store = store_of_levels(np.linspace(-1, 1, 21))
    n, seed = 5, 2
    pairs = select_queries("kcenter_disagreement", store, linear_ensemble([-1.0, 0.0, 1.0]), n, H,
                           np.random.default_rng(seed))
    v0, v1 = pool_levels(store, n, seed)
    dispute = np.sort(np.abs(np.tanh(v1) - np.tanh(v0)))
    picked = np.abs(np.tanh(pairs.obs1[:, 0, 0].numpy()) - np.tanh(pairs.obs0[:, 0, 0].numpy()))
    assert picked.min() >= dispute[len(dispute) // 2] - 1e-6
