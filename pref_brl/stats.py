"""Aggregate scores across seeds with rliable's conventions (Agarwal et al., 2021), in numpy.

Scores are arrays of shape (runs, tasks): one row per seed, one column per task (here: an environment, or a
point of a learning curve). Intervals are 95% percentile intervals of a stratified bootstrap: runs are
resampled with replacement within each task, independently across tasks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Aggregate = Callable[[np.ndarray], np.ndarray]


def mean(scores: np.ndarray) -> np.ndarray:
    """Mean over runs and tasks (the last two axes)."""
    return scores.mean(axis=(-2, -1))


def iqm(scores: np.ndarray) -> np.ndarray:
    """Interquartile mean over runs and tasks: the mean of the middle 50% (floor(n/4) cut at each end).

    Equals scipy.stats.trim_mean(x, 0.25) on the flattened scores, as rliable's IQM does.
    """
    flat = np.sort(scores.reshape(*scores.shape[:-2], -1), axis=-1)
    cut = flat.shape[-1] // 4
    return flat[..., cut:flat.shape[-1] - cut].mean(axis=-1)


AGGREGATES: dict[str, Aggregate] = {"mean": mean, "iqm": iqm}


def stratified_bootstrap_ci(scores: np.ndarray, aggregate: Aggregate, reps: int = 2000, size: float = 0.95,
                            rng: np.random.Generator | None = None) -> tuple[float, float]:
    """Percentile interval of `aggregate` under the stratified bootstrap of (runs, tasks) `scores`."""
    rng = rng if rng is not None else np.random.default_rng(0)
    runs, tasks = scores.shape
    idx = rng.integers(0, runs, size=(reps, runs, tasks))
    samples = aggregate(np.take_along_axis(scores[None], idx, axis=1))
    lo, hi = np.percentile(samples, [50 * (1 - size), 50 * (1 + size)])
    return float(lo), float(hi)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y): per task, the chance that a run of X beats a run of Y (ties count half), averaged over tasks.

    `x` (runs_x, tasks) and `y` (runs_y, tasks), with optional leading batch axes; this is rliable's
    Mann-Whitney-U form of the probability of improvement.
    """
    diff = x[..., :, None, :] - y[..., None, :, :]
    per_task = (diff > 0).mean(axis=(-3, -2)) + 0.5 * (diff == 0).mean(axis=(-3, -2))
    return per_task.mean(axis=-1)


def probability_of_improvement_ci(x: np.ndarray, y: np.ndarray, reps: int = 2000, size: float = 0.95,
                                  rng: np.random.Generator | None = None) -> tuple[float, float]:
    """Percentile interval of P(X > Y), resampling the runs of X and of Y independently within each task."""
    rng = rng if rng is not None else np.random.default_rng(0)
    ix = rng.integers(0, x.shape[0], size=(reps, *x.shape))
    iy = rng.integers(0, y.shape[0], size=(reps, *y.shape))
    samples = probability_of_improvement(np.take_along_axis(x[None], ix, axis=1),
                                         np.take_along_axis(y[None], iy, axis=1))
    lo, hi = np.percentile(samples, [50 * (1 - size), 50 * (1 + size)])
    return float(lo), float(hi)


def curve_estimates(values: np.ndarray, aggregate: Aggregate, reps: int = 2000, size: float = 0.95,
                    rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and interval at every point of a learning curve.

    `values` is (runs, points), NaN where a run has no value; each point aggregates the runs that have one.
    As in rliable's sample-efficiency curves, a bootstrap sample resamples runs jointly for all points
    (that share the same available runs). Points without any run are NaN.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    point, lo, hi = (np.full(values.shape[1], np.nan) for _ in range(3))
    available = ~np.isnan(values)
    for mask in {tuple(col) for col in available.T if col.any()}:
        runs = np.flatnonzero(mask)
        cols = np.flatnonzero((available == np.array(mask)[:, None]).all(axis=0))
        block = values[np.ix_(runs, cols)].T[..., None]  # (points, runs, 1)
        idx = rng.integers(0, len(runs), size=(reps, 1, len(runs), 1))
        samples = aggregate(np.take_along_axis(block[None], np.broadcast_to(idx, (reps, *block.shape)), axis=2))
        point[cols] = aggregate(block)
        lo[cols], hi[cols] = np.percentile(samples, [50 * (1 - size), 50 * (1 + size)], axis=0)
    return point, lo, hi
