"""Unsupervised exploration with a k-NN state-entropy reward (PEBBLE pre-training; see docs/pebble.md).

The intrinsic reward of a state s is its distance to the k-th nearest neighbour (k = 5) among all stored
states (s itself excluded), divided by a running standard deviation of these distances (mean not
subtracted). The distances are computed block by block (one matrix product per block) and reduced with
``topk``, so memory stays at O(block) whatever the replay size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pref_brl.agents.networks import product

__all__ = ["RunningMoments", "StateEntropy", "knn_distance"]


class RunningMoments:
    """Exact running mean and (population) variance of a stream of batches.

    Batches are merged with the parallel update of Chan et al. (1979): for two sets of sizes n_a, n_b with
    means μ_a, μ_b and sums of squared deviations M_a, M_b, ``M = M_a + M_b + δ² n_a n_b / n`` with
    δ = μ_b − μ_a. Unlike B-Pref's ``TorchRunningMeanStd`` there is no pseudo-count prior and batch
    variances are population (not Bessel-corrected) ones, so after any sequence of updates ``mean`` and
    ``var`` equal numpy's ``mean``/``var`` of everything seen. Statistics are kept in float64 on the device
    of the first batch (no host sync per update).
    """

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.shape = tuple(shape)
        self.count = 0
        self.mean = torch.zeros(self.shape, dtype=torch.float64)
        self.m2 = torch.zeros(self.shape, dtype=torch.float64)

    def update(self, x: Tensor) -> None:
        """Merge a batch ``x`` of shape [N, *shape]."""
        x = x.detach().to(torch.float64).reshape(-1, *self.shape)
        n_b = x.shape[0]
        if n_b == 0:
            return
        if self.mean.device != x.device:
            self.mean, self.m2 = self.mean.to(x.device), self.m2.to(x.device)
        mean_b = x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0)
        n_a, n = self.count, self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta**2 * (n_a * n_b / n)
        self.count = n

    @property
    def var(self) -> Tensor:
        """Population variance of everything seen (0 before two samples)."""
        return self.m2 / self.count if self.count > 0 else torch.zeros_like(self.m2)

    @property
    def std(self) -> Tensor:
        return self.var.sqrt()

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean.cpu().clone(), "m2": self.m2.cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])
        self.mean = state["mean"].to(self.mean.device, torch.float64)
        self.m2 = state["m2"].to(self.mean.device, torch.float64)


CPU_BLOCKS = (256, 2048)
"""(batch states, stored states) per distance block on CPU: the block stays in cache (about 3x faster for
1024 states against 10k than one [1024, 16384] block)"""
GPU_BLOCKS = (1 << 30, 65536)


def knn_distance(batch_obs: Tensor, stored_obs: Tensor, k: int = 5, chunk: int | None = None,
                 batch_chunk: int | None = None) -> Tensor:
    """Distance [B] from each batch state to its k-th nearest stored state, the state itself excluded.

    The batch states are assumed to be rows of ``stored_obs``, so the answer is the (k+1)-th smallest
    distance counting the zero self-distance. Squared distances |q|² + |s|² − 2 q·s (what ``torch.cdist``
    computes for sets this large) are formed block by block, ``batch_chunk`` batch states against
    ``chunk`` stored states, and each block's top-(k+1) lists are merged, so the result does not depend on
    the blocks. Default blocks are cache-sized on CPU and large on other devices.
    """
    n = stored_obs.shape[0]
    if n < k + 1:
        raise ValueError(f"k-NN with k={k} needs at least {k + 1} stored states, got {n}")
    default_b, default_s = CPU_BLOCKS if stored_obs.device.type == "cpu" else GPU_BLOCKS
    chunk, batch_chunk = chunk or default_s, batch_chunk or default_b
    batch_obs = batch_obs.to(stored_obs.dtype)
    stored_sq = stored_obs.pow(2).sum(1)
    out = []
    for j in range(0, batch_obs.shape[0], batch_chunk):
        queries = batch_obs[j : j + batch_chunk]
        query_sq = queries.pow(2).sum(1, keepdim=True)
        best: Tensor | None = None
        for i in range(0, n, chunk):
            sq = product(queries, stored_obs[i : i + chunk].t()).mul_(-2).add_(stored_sq[i : i + chunk])
            sq = sq.add_(query_sq)
            if best is not None:
                sq = torch.cat([best, sq], dim=1)
            best = torch.topk(sq, min(k + 1, sq.shape[1]), dim=1, largest=False, sorted=False).values
        assert best is not None
        out.append(best.amax(dim=1))
    return torch.cat(out).clamp_min_(0).sqrt_()


class StateEntropy:
    """Normalised k-NN state-entropy reward.

    ``intrinsic_reward(batch_obs, stored_obs)`` returns the k-NN distance of each batch state divided by
    the running std of all distances seen so far; the moments are first updated with the raw batch values
    (as B-Pref does). The std is used only once it is positive (before that the raw distances are
    returned). :meth:`metrics` reports ``explore/state_entropy`` = the mean raw k-NN distance of the last
    call (kept as a tensor until asked for, so calling it is the only host sync).
    """

    def __init__(self, k: int = 5, chunk: int | None = None) -> None:
        if k < 1 or (chunk is not None and chunk < 1):
            raise ValueError(f"StateEntropy needs k >= 1 and chunk >= 1, got k={k}, chunk={chunk}")
        self.k = k
        self.chunk = chunk
        self.moments = RunningMoments()
        self._last_mean: Tensor | None = None

    @torch.no_grad()
    def intrinsic_reward(self, batch_obs: Tensor, stored_obs: Tensor) -> Tensor:
        """Normalised intrinsic reward [B] of ``batch_obs`` [B, O] against all ``stored_obs`` [N, O]."""
        dist = knn_distance(batch_obs, stored_obs, self.k, self.chunk)
        self.moments.update(dist)
        self._last_mean = dist.mean()
        std = self.moments.std.to(dist.dtype)
        return dist / torch.where(std > 0, std, torch.ones_like(std))

    def metrics(self) -> dict[str, float]:
        """``explore/state_entropy``: mean raw k-NN distance of the last batch (empty before any call)."""
        if self._last_mean is None:
            return {}
        return {"explore/state_entropy": float(self._last_mean)}

    def state_dict(self) -> dict[str, Any]:
        return {"k": self.k, "moments": self.moments.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.k = int(state["k"])
        self.moments.load_state_dict(state["moments"])
