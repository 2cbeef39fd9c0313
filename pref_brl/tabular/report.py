"""Plots and the Markdown table of the tabular study (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pref_brl.tabular.common import Trace  # noqa: E402
from pref_brl.tabular.problem import BilevelProblem, lower_solution  # noqa: E402

Array = np.ndarray


@dataclass(frozen=True)
class RunGroup:
    """The traces of one method/variant on one benchmark, one per seed."""

    method: str
    variant: str
    traces: tuple[Trace, ...]
    tag: str = ""
    """Distinguishes extra settings of the same method/variant, e.g. ``inner solves``."""

    @property
    def label(self) -> str:
        return f"{self.method}/{self.variant}" + (f" ({self.tag})" if self.tag else "")

    def stacked(self, field: str) -> Array:
        return np.stack([getattr(t, field) for t in self.traces]).astype(np.float64)


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    label: str
    final_value: float
    final_spread: float
    grad_norm: float
    cost_to_tol: float
    unit: str
    seeds: int


def cost_to_tolerance(trace: Trace, threshold: float) -> float:
    """The cost (samples or exact calls) at the first iterate with F ≤ threshold; inf if never."""
    hits = np.flatnonzero(trace.values <= threshold)
    return float(trace.cost[hits[0]]) if hits.size else float("inf")


def summarise(group: RunGroup, threshold: float) -> Row:
    """Mean final F (± std over seeds), mean final ‖∇F‖, median cost to reach ``threshold``."""
    finals = group.stacked("values")[:, -1]
    costs = [cost_to_tolerance(t, threshold) for t in group.traces]
    unit = "samples" if group.variant == "sampled" else "exact calls"
    return Row(group.label, float(finals.mean()), float(finals.std()),
               float(group.stacked("grad_norms")[:, -1].mean()), float(np.median(costs)), unit,
               len(group.traces))


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| method/variant | final F (mean ± std over seeds) | final ‖∇F‖ | cost to tolerance | unit | seeds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        cost = "never" if not np.isfinite(r.cost_to_tol) else f"{r.cost_to_tol:,.0f}"
        lines.append(f"| {r.label} | {r.final_value:.5f} ± {r.final_spread:.5f} | {r.grad_norm:.2e} | {cost} "
                     f"| {r.unit} | {r.seeds} |")
    return "\n".join(lines)


def _band(ax: plt.Axes, x: Array, ys: Array, label: str, log_y: bool = False) -> None:
    """Mean curve with a min–max band over seeds."""
    centre = np.exp(np.log(ys).mean(0)) if log_y else ys.mean(0)
    (line,) = ax.plot(x, centre, label=label, lw=1.4)
    if ys.shape[0] > 1:
        ax.fill_between(x, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2, lw=0)


def plot_curves(groups: Sequence[RunGroup], reference: Trace, title: str, out: Path) -> list[Path]:
    """F vs iterations, F vs cost (samples | exact calls) and ‖∇F‖ vs iterations."""
    written = []
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for g in [*groups, RunGroup("oracle", "exact", (reference,))]:
        _band(ax, np.arange(g.traces[0].values.size), g.stacked("values"), g.label)
    _finish(ax, f"{title}: F(φ_k) vs iteration", "iteration k", "F(φ_k)")
    written.append(_save(fig, out / f"{title}_F_vs_iteration.png"))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, variant, unit in zip(axes, ("sampled", "exact"), ("samples (transitions)", "exact calls"), strict=True):
        for g in (g for g in groups if g.variant == variant):
            _band(ax, np.maximum(g.stacked("cost").mean(0), 1.0), g.stacked("values"), g.label)
        ax.set_xscale("log")
        _finish(ax, f"{title}: F vs {unit}", unit, "F(φ_k)")
    written.append(_save(fig, out / f"{title}_F_vs_samples.png"))

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for g in [*groups, RunGroup("oracle", "exact", (reference,))]:
        norms = np.maximum(g.stacked("grad_norms"), 1e-16)
        _band(ax, np.arange(norms.shape[1]), norms, g.label, log_y=True)
    ax.set_yscale("log")
    _finish(ax, f"{title}: ‖∇F(φ_k)‖ vs iteration", "iteration k", "‖∇F(φ_k)‖ (exact)")
    written.append(_save(fig, out / f"{title}_gradnorm_vs_iteration.png"))
    return written


def plot_reward_maps(problem: BilevelProblem, runs: Sequence[tuple[str, Array]], out: Path) -> Path:
    """Heat map of the designed reward (mean over actions) with the induced policy's mean move as arrows."""
    layout = problem.layout
    if layout is None:
        raise ValueError(f"{problem.name} is not a GridWorld")
    cols = min(4, len(runs))
    rows = -(-len(runs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.2 * rows), squeeze=False)
    for ax, (label, phi) in zip(axes.ravel(), runs, strict=False):
        reward = problem.reward(phi).mean(axis=1).reshape(layout.size, layout.size)
        limit = max(float(np.abs(reward).max()), 1e-9)
        image = ax.imshow(reward, cmap="RdBu", vmin=-limit, vmax=limit)
        move = layout.mean_move(lower_solution(problem, phi).policy)
        rr, cc = np.divmod(np.arange(layout.n_states), layout.size)
        # imshow puts row 0 on top, so a positive Δrow (down) is a positive y step in data coordinates
        ax.quiver(cc, rr, move[:, 1], move[:, 0], angles="xy", scale_units="xy", scale=1.6, width=0.012)
        _mark(ax, layout.targets, "T", layout.size)
        _mark(ax, layout.hazards, "x", layout.size)
        _mark(ax, (layout.start,), "S", layout.size)
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    for ax in axes.ravel()[len(runs):]:
        ax.axis("off")
    fig.suptitle(f"{problem.name}: final designed reward r_φ (colour) and induced policy π*_φ (arrows)")
    return _save(fig, out / f"{problem.name}_reward_heatmap.png")


def plot_penalty_bias(curves: dict[str, tuple[Array, Array, float]], out: Path) -> Path:
    """‖∇L*_λ − ∇F‖ against λ on log–log axes, with each fitted slope in the legend."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, (lams, errors, slope) in curves.items():
        ax.loglog(lams, errors, "o-", label=f"{name} (slope {slope:.3f})")
    ax.loglog(lams, errors[0] * lams[0] / lams, "k--", lw=0.8, label="1/λ")
    _finish(ax, "penalty gradient bias (exact inner solves)", "λ", "‖∇L*_λ(φ) − ∇F(φ)‖")
    return _save(fig, out / "penalty_bias_vs_lambda.png")


def _mark(ax: plt.Axes, cells: Sequence[int], text: str, size: int) -> None:
    for cell in cells:
        row, col = divmod(cell, size)
        ax.text(col - 0.38, row - 0.18, text, fontsize=8, color="black", weight="bold")


def _finish(ax: plt.Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
