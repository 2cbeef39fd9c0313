"""Bias and signal of the λ-term's estimators (``lambda_terms``) against the exact λ-term, as Markdown tables.

Per benchmark, one round of the re-sync twin at the study point φ₀ + 0.3·N(0, I) (generator seed 1) gives A
and B (``ResyncConfig`` defaults unless overridden); every estimator is then compared with the exact λ-term
λ ∇_φ[J_φ(π_A) − J_φ(π_B)]:

- bias: cosine and relative error ‖E ĝ − g‖/‖g‖ of its exact expectation E ĝ against the exact term g;
- signal: SNR = ‖E ĝ‖ / √(tr Σ / n) of the mean of n units, Σ the covariance of one unit (pair, branch or
  episode, estimated from sampled units), with n the units that 1000 transitions buy. Pairs and branches
  spend extra env steps; the likelihood ratio's transitions are A's own episodes, which the deep method
  collects anyway, so its extra cost is zero.

Horizons are given in units of the effective horizon h = 1/(1 − γ) (10 on the GridWorlds, 2 on
``random_mdp``); "whole" is the smallest H with γ^H ≤ 1e-3.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pref_brl.tabular.lambda_terms import (
    EstimatorSettings,
    TermInputs,
    exact_term,
    expected_term,
    sampled_units,
    transitions_per_unit,
)
from pref_brl.tabular.mdp import state_occupancy
from pref_brl.tabular.problem import BilevelProblem, lower_solution
from pref_brl.tabular.resync import ResyncConfig, anchored_kl, play_round
from pref_brl.tabular.resync_study import agreement, study_point
from pref_brl.tabular.sampling import horizon_for

Array = np.ndarray
BUDGET = 1000
"""Transitions per SNR measurement."""


@dataclass(frozen=True)
class Row:
    """One estimator setting: its name, a label of its settings, horizons in units of h, and the data it reads."""

    name: str
    label: str
    horizon: float = 0.0
    """In units of h = 1/(1 − γ); 0: whole (γ^H ≤ 1e-3)."""
    window: float = 0.0
    """``likelihood-ratio``: in units of h; 0: the whole episode."""
    clip: float = math.inf
    behaviour: str = "A"
    """``likelihood-ratio``: "A" (its own episodes), "A' corrected" or "A' uncorrected" (an earlier A)."""

    def settings(self, gamma: float) -> EstimatorSettings:
        h = 1.0 / (1.0 - gamma)
        horizon = max(1, round(self.horizon * h)) if self.horizon else horizon_for(gamma)
        window = max(1, round(self.window * h)) if self.window else 0
        return EstimatorSettings(self.name, horizon, window, self.clip)  # type: ignore[arg-type]


ROWS: tuple[Row, ...] = (
    Row("paired-rollouts", "T = h", horizon=1), Row("paired-rollouts", "T = 3h", horizon=3),
    Row("paired-rollouts", "T whole"),
    Row("branch", "H = h", horizon=1), Row("branch", "H = 3h", horizon=3), Row("branch", "H whole"),
    Row("branch-first-action", "H = h", horizon=1), Row("branch-first-action", "H = 3h", horizon=3),
    Row("branch-first-action", "H whole"),
    Row("shared-states", "one step"),
    Row("likelihood-ratio", "window h", window=1), Row("likelihood-ratio", "window 3h", window=3),
    Row("likelihood-ratio", "full product"), Row("likelihood-ratio", "full, clip c = 2", clip=2.0),
    Row("likelihood-ratio", "full, clip c = 1", clip=1.0),
    Row("likelihood-ratio", "full, earlier A' corrected", behaviour="A' corrected"),
    Row("likelihood-ratio", "full, earlier A' uncorrected", behaviour="A' uncorrected"),
)
"""The settings of the estimator table, in order."""


@dataclass(frozen=True)
class Measurement:
    """One row on one benchmark: bias of the expectation, SNR at ``BUDGET`` transitions, extra env steps."""

    cos: float
    err: float
    snr: float
    extra_steps: int
    steps: int

    def cells(self) -> str:
        cos = "—" if math.isnan(self.cos) else f"{self.cos:.3f}"
        snr = "—" if math.isnan(self.snr) else f"{self.snr:.2f}"
        return f"{self.steps} | {self.extra_steps} | {cos} | {self.err:.3f} | {snr}"


class EstimatorBias:
    """The estimator measurements on one benchmark, at its study point, with one twin round's A and B."""

    def __init__(self, name: str, problem: BilevelProblem, config: ResyncConfig, units: int, seed: int) -> None:
        self.name, self.problem, self.units, self.seed = name, problem, units, seed
        phi = study_point(problem)
        current, _ = play_round(problem, phi, config)
        self.inputs = current.inputs(problem, phi)
        self.truth = exact_term(self.inputs)
        self.stale = lower_solution(problem, problem.phi0).policy  # an earlier A: optimal for the initial reward
        d_a = state_occupancy(problem.mdp, current.policy_a)
        self.kl_ab = anchored_kl(d_a, current.policy_a, current.inner.logits)[0]
        self.kl_stale = anchored_kl(d_a, current.policy_a, np.log(self.stale))[0]

    def inputs_for(self, row: Row) -> TermInputs:
        if row.behaviour == "A":
            return self.inputs
        corrected = row.behaviour == "A' corrected"
        return dataclasses.replace(self.inputs, behaviour=self.stale, correct_behaviour=corrected)

    def measure(self, row: Row) -> Measurement:
        settings, inputs = row.settings(self.problem.mdp.discount), self.inputs_for(row)
        expected = expected_term(inputs, settings)
        agree = agreement(expected, self.truth)
        signal = float(np.linalg.norm(expected))
        if signal <= 1e-12 * float(np.linalg.norm(self.truth)):
            signal = 0.0  # no signal at all (rounding aside): cos and SNR are undefined
        cos = agree.cos if signal > 0 else math.nan
        steps = settings.steps(self.problem.mdp)
        uniforms = np.random.default_rng(self.seed).random((self.units, steps, 2))
        variance = float(sampled_units(inputs, settings, uniforms).var(axis=0, ddof=1).sum())
        per_unit = transitions_per_unit(settings, self.problem.mdp)
        n = BUDGET / per_unit
        snr = signal / math.sqrt(variance / n) if variance > 0 else (math.inf if signal > 0 else math.nan)
        extra = 0 if settings.name == "likelihood-ratio" else per_unit
        return Measurement(cos, agree.err, snr, extra, steps)


def benchmark_table(bias: EstimatorBias, rows: Sequence[Row]) -> str:
    """One benchmark's table: a line per estimator setting."""
    lines = ["| estimator | setting | steps (T, H or L) | extra env steps / unit | cos | err | SNR at 1000 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| `{row.name}` | {row.label} | {bias.measure(row).cells()} |")
    return "\n".join(lines)


def estimator_report(problems: dict[str, BilevelProblem], config: ResyncConfig, units: int = 2000,
                     seed: int = 11, rows: Sequence[Row] = ROWS) -> str:
    """The estimator tables on ``problems``, as one Markdown section body."""
    parts = [f"B: one round of the twin (λ̃ = {config.penalty_weight:g}, K_B = {config.b_steps}, δ = "
             f"{config.kl_target:g}, ε = {config.clip:g}). Cells: cos / err = ‖E ĝ − g‖/‖g‖ of each estimator's"
             " exact expectation against the exact λ-term g (cos and SNR — where E ĝ = 0); SNR = ‖E ĝ‖/√(tr Σ/n)"
             f" with n = {BUDGET} transitions' worth of units, Σ from {units} sampled units (generator seed {seed})."
             " A' is the soft-optimal policy at the initial reward φ₀ (an earlier A).", ""]
    for name, problem in problems.items():
        bias = EstimatorBias(name, problem, config, units, seed)
        gamma = problem.mdp.discount
        parts += [f"**{name}** — γ = {gamma:g} (h = {1 / (1 - gamma):g}); ‖λ-term‖ = "
                  f"{np.linalg.norm(bias.truth):.3e}; E_{{d^A}} KL(π_B‖π_A) = {bias.kl_ab:.4f}, "
                  f"KL(π_A'‖π_A) = {bias.kl_stale:.3f}", "", benchmark_table(bias, rows), ""]
    return "\n".join(parts)
