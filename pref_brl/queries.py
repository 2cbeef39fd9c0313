"""Query strategies: which segment pairs to show the teacher (as in B-Pref; see docs/pebble.md).

Every strategy is a small function ``fn(store, ensemble, n_queries, segment, rng, agent, *, prefs=None)``
that returns exactly ``n_queries`` pairs drawn from ``store`` (only ``agent``'s episodes when given).
Uncertainty-based strategies score a pool of ``POOL_FACTOR × n_queries`` uniform candidates with the
reward model's members (any :class:`pref_brl.protocols.RewardModel`; PEBBLE's ensemble by default) and keep
the top ones. The k-center strategies spread the queries out in the space of
flattened segment states; when ``prefs`` (the labelled pairs so far) is given, those pairs count as
already-chosen centres, as in B-Pref.

The first feedback round must use ``uniform`` (the ensemble is untrained): that is the loop's job.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from pref_brl.preferences import EpisodeStore, PreferenceBuffer, SegmentPairs
from pref_brl.protocols import RewardModel

__all__ = [
    "POOL_FACTOR",
    "QUERY_STRATEGIES",
    "QueryFn",
    "disagreement",
    "entropy",
    "kcenter",
    "kcenter_disagreement",
    "kcenter_entropy",
    "select_queries",
    "uniform",
]

QueryFn = Callable[[EpisodeStore, RewardModel, int, int, np.random.Generator, str | None], SegmentPairs]
"""``fn(store, ensemble, n_queries, segment, rng, agent) -> SegmentPairs`` (every strategy also takes an
optional keyword ``prefs: PreferenceBuffer | None``)."""

POOL_FACTOR = 10
"""Candidate pool size of the scored strategies, in multiples of ``n_queries`` (B-Pref's ``large_batch``)."""


# ---------------------------------------------------------------------- scores
@torch.no_grad()
def preference_probs(ensemble: RewardModel, pairs: SegmentPairs, chunk: int = 256) -> Tensor:
    """P(σ¹ ≻ σ⁰) per member, [M, B] on the CPU, evaluated ``chunk`` pairs at a time."""
    out = []
    device, dtype = getattr(ensemble, "device", "cpu"), getattr(ensemble, "dtype", torch.float32)
    for i in range(0, len(pairs), chunk):
        part = pairs.select(slice(i, i + chunk))
        sa0 = part.sa0().to(device, dtype)
        sa1 = part.sa1().to(device, dtype)
        out.append(torch.sigmoid(ensemble.pair_logits(sa0, sa1)).float().cpu())
    return torch.cat(out, dim=1)


def disagreement_score(probs: Tensor) -> Tensor:
    """Std across members of P(σ¹ ≻ σ⁰): [M, B] -> [B]."""
    return probs.std(dim=0, correction=0)


def entropy_score(probs: Tensor) -> Tensor:
    """Mean across members of the binary entropy of P(σ¹ ≻ σ⁰): [M, B] -> [B]."""
    p = probs.clamp(1e-7, 1 - 1e-7)
    return -(p * p.log() + (1 - p) * (1 - p).log()).mean(dim=0)


def top_k(score: Tensor, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores (ties broken by index, deterministically)."""
    return np.argsort(-score.numpy(), kind="stable")[:k]


def greedy_kcenter(
    points: Tensor, k: int, rng: np.random.Generator, centres: Tensor | None = None
) -> np.ndarray:
    """Greedy k-center: repeatedly pick the point farthest from all chosen ones (and ``centres``).

    ``points`` [P, F]; without ``centres`` the first point is drawn uniformly from ``rng``. Returns ``k``
    distinct indices in the order chosen.
    """
    p = points.shape[0]
    if not 0 < k <= p:
        raise ValueError(f"k-center needs 0 < k <= {p} points, got k={k}")
    points = points.double()
    chosen: list[int] = []
    if centres is not None and len(centres) > 0:
        nearest = torch.cdist(points, centres.double(), compute_mode="donot_use_mm_for_euclid_dist").amin(1)
    else:
        first = int(rng.integers(p))
        chosen.append(first)
        nearest = torch.linalg.vector_norm(points - points[first], dim=1)
        nearest[first] = -torch.inf
    while len(chosen) < k:
        i = int(torch.argmax(nearest))
        chosen.append(i)
        nearest = torch.minimum(nearest, torch.linalg.vector_norm(points - points[i], dim=1))
        nearest[chosen] = -torch.inf
    return np.asarray(chosen)


def _segment_features(obs0: Tensor, obs1: Tensor) -> Tensor:
    """Flattened states of both segments of each pair: [B, 2·H·O]."""
    return torch.cat([obs0.flatten(1), obs1.flatten(1)], dim=1)


def _labelled_features(prefs: PreferenceBuffer | None, obs_dim: int) -> Tensor | None:
    if prefs is None or len(prefs) == 0:
        return None
    return _segment_features(prefs.sa0[..., :obs_dim], prefs.sa1[..., :obs_dim]).cpu()


# ---------------------------------------------------------------------- strategies
def _check(n_queries: int) -> None:
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")


def uniform(
    store: EpisodeStore, ensemble: RewardModel, n_queries: int, segment: int,
    rng: np.random.Generator, agent: str | None = None, *, prefs: PreferenceBuffer | None = None,
) -> SegmentPairs:
    """Uniformly random pairs (the ensemble is not consulted)."""
    _check(n_queries)
    return store.sample_pairs(n_queries, segment, rng, agent)


def _top_scored(
    score_fn: Callable[[Tensor], Tensor], store: EpisodeStore, ensemble: RewardModel, n_queries: int,
    segment: int, rng: np.random.Generator, agent: str | None,
) -> SegmentPairs:
    _check(n_queries)
    pool = store.sample_pairs(POOL_FACTOR * n_queries, segment, rng, agent)
    return pool.select(top_k(score_fn(preference_probs(ensemble, pool)), n_queries))


def disagreement(
    store: EpisodeStore, ensemble: RewardModel, n_queries: int, segment: int,
    rng: np.random.Generator, agent: str | None = None, *, prefs: PreferenceBuffer | None = None,
) -> SegmentPairs:
    """The pairs of a 10× pool on which the members disagree most (std of P(σ¹ ≻ σ⁰))."""
    return _top_scored(disagreement_score, store, ensemble, n_queries, segment, rng, agent)


def entropy(
    store: EpisodeStore, ensemble: RewardModel, n_queries: int, segment: int,
    rng: np.random.Generator, agent: str | None = None, *, prefs: PreferenceBuffer | None = None,
) -> SegmentPairs:
    """The pairs of a 10× pool with the largest mean binary entropy of P(σ¹ ≻ σ⁰)."""
    return _top_scored(entropy_score, store, ensemble, n_queries, segment, rng, agent)


def _kcenter_after(
    score_fn: Callable[[Tensor], Tensor] | None, store: EpisodeStore, ensemble: RewardModel,
    n_queries: int, segment: int, rng: np.random.Generator, agent: str | None,
    prefs: PreferenceBuffer | None,
) -> SegmentPairs:
    _check(n_queries)
    pool = store.sample_pairs(POOL_FACTOR * n_queries, segment, rng, agent)
    if score_fn is not None:  # keep the most uncertain half, then spread out
        pool = pool.select(top_k(score_fn(preference_probs(ensemble, pool)), max(n_queries, len(pool) // 2)))
    centres = _labelled_features(prefs, pool.obs0.shape[-1])
    picked = greedy_kcenter(_segment_features(pool.obs0, pool.obs1), n_queries, rng, centres)
    return pool.select(picked)


def kcenter(
    store: EpisodeStore, ensemble: RewardModel, n_queries: int, segment: int,
    rng: np.random.Generator, agent: str | None = None, *, prefs: PreferenceBuffer | None = None,
) -> SegmentPairs:
    """Greedy k-center on the flattened segment states of a 10× pool."""
    return _kcenter_after(None, store, ensemble, n_queries, segment, rng, agent, prefs)


def kcenter_disagreement(
    store: EpisodeStore, ensemble: RewardModel, n_queries: int, segment: int,
    rng: np.random.Generator, agent: str | None = None, *, prefs: PreferenceBuffer | None = None,
) -> SegmentPairs:
    """k-center among the most disputed half of a 10× pool."""
    return _kcenter_after(disagreement_score, store, ensemble, n_queries, segment, rng, agent, prefs)


def kcenter_entropy(
    store: EpisodeStore, ensemble: RewardModel, n_queries: int, segment: int,
    rng: np.random.Generator, agent: str | None = None, *, prefs: PreferenceBuffer | None = None,
) -> SegmentPairs:
    """k-center among the highest-entropy half of a 10× pool."""
    return _kcenter_after(entropy_score, store, ensemble, n_queries, segment, rng, agent, prefs)


QUERY_STRATEGIES: dict[str, QueryFn] = {
    "uniform": uniform,
    "disagreement": disagreement,
    "entropy": entropy,
    "kcenter": kcenter,
    "kcenter_disagreement": kcenter_disagreement,
    "kcenter_entropy": kcenter_entropy,
}
"""Query strategies by name (the ``--query`` option)."""


def select_queries(
    name: str, store: EpisodeStore, ensemble: RewardModel, n_queries: int, segment: int,
    rng: np.random.Generator, agent: str | None = None, *, prefs: PreferenceBuffer | None = None,
) -> SegmentPairs:
    """Run the strategy called ``name``; a ValueError lists the known names otherwise."""
    try:
        fn = QUERY_STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown query strategy {name!r}; known: {', '.join(QUERY_STRATEGIES)}") from None
    return fn(store, ensemble, n_queries, segment, rng, agent, prefs=prefs)  # type: ignore[call-arg]
