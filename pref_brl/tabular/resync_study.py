"""The bias of the re-sync twin (``resync.py``) against the exact hypergradient ∇F, as Markdown tables.

Every number is measured at one point per benchmark, φ₀ + 0.3·N(0, I) (generator seed 1, the point of the
penalty-bias measurement), and compares an estimate ĝ with ∇F by the cosine and the relative error
‖ĝ − ∇F‖/‖∇F‖. Next to the twin stand the exact penalty gradient ∇L*_λ at the same λ = (1 − γ) λ̃ (both
inner problems solved to 1e-11) and ``partial``, ∇_φ f at π*(φ) with no implicit term.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pref_brl.tabular.problem import BilevelProblem, hypergradient, lower_solution
from pref_brl.tabular.proxy import penalty_point
from pref_brl.tabular.resync import (
    KL_COEF_RANGE,
    ResyncConfig,
    Round,
    penalty_lambda,
    play_round,
    resync_gradient,
)

Array = np.ndarray

CONTROLLERS: dict[str, dict[str, float]] = {
    "β₀ = 1, adapted every step": {"kl_coef": 1.0, "kl_every": 1},
    "β₀ = 100, adapted every 20 steps": {"kl_coef": 100.0, "kl_every": 20},
}
"""The two β controllers compared in the KL-control table (the second is ``ResyncConfig``'s default)."""


def study_point(problem: BilevelProblem) -> Array:
    """φ₀ + 0.3·N(0, I) with generator seed 1: the benchmark's point for every bias measurement."""
    return problem.phi0 + 0.3 * np.random.default_rng(1).standard_normal(problem.dim)


@dataclass(frozen=True)
class Agreement:
    """How an estimate ĝ agrees with ∇F: cosine and relative error ‖ĝ − ∇F‖/‖∇F‖."""

    cos: float
    err: float

    def cell(self) -> str:
        return f"{self.cos:.3f} / {self.err:.3f}"


def agreement(estimate: Array, truth: Array) -> Agreement:
    """The cosine and the relative error of ``estimate`` against ``truth``."""
    norms = max(float(np.linalg.norm(estimate) * np.linalg.norm(truth)), 1e-300)
    return Agreement(float(estimate @ truth) / norms,
                     float(np.linalg.norm(estimate - truth) / max(np.linalg.norm(truth), 1e-300)))


@dataclass(frozen=True)
class TwinPoint:
    """The twin's expected estimate at one setting, and B's KL (in units of δ) over its inner solve."""

    expected: Agreement
    max_kl: float
    final_kl: float


class BenchmarkBias:
    """The measurements on one benchmark at its study point; inner solves are cached by setting."""

    def __init__(self, name: str, problem: BilevelProblem, base: ResyncConfig) -> None:
        self.name, self.problem, self.base = name, problem, base
        self.phi = study_point(problem)
        self.truth = hypergradient(problem, self.phi)
        self._rounds: dict[tuple[Any, ...], Round] = {}

    def config(self, **settings: Any) -> ResyncConfig:
        return dataclasses.replace(self.base, **settings)

    def partial(self) -> Agreement:
        """``partial``: ∇_φ f at π*(φ)."""
        policy = lower_solution(self.problem, self.phi).policy
        return agreement(self.problem.upper.grad_phi(self.phi, policy), self.truth)

    def penalty(self, weight: float) -> Agreement:
        """The exact ∇L*_λ at λ = (1 − γ) λ̃."""
        return agreement(penalty_point(self.problem, self.phi, penalty_lambda(self.problem, weight)).grad, self.truth)

    def twin(self, **settings: Any) -> TwinPoint:
        """The twin's expected estimate with ``settings`` on top of the base config."""
        config = self.config(**settings)
        key = dataclasses.astuple(config)
        if key not in self._rounds:
            self._rounds[key] = play_round(self.problem, self.phi, config)[0]
        current = self._rounds[key]
        expected = self.problem.upper.grad_phi(self.phi, current.policy_a) + current.expected_term(
            self.problem, self.phi)
        kls = current.inner.kls / config.kl_target
        return TwinPoint(agreement(expected, self.truth), float(kls.max()), float(kls[-1]))

    def sampled(self, repetitions: int, **settings: Any) -> tuple[Agreement, Agreement]:
        """Sampled rounds: (median cosine and error of single rounds, agreement of their mean)."""
        estimate = resync_gradient(self.problem, self.phi, self.config(variant="sampled", **settings), repetitions)
        singles = [agreement(g, self.truth) for g in estimate.rounds]
        median = Agreement(float(np.median([a.cos for a in singles])), float(np.median([a.err for a in singles])))
        return median, agreement(estimate.estimate, self.truth)


def _label(clip: float) -> str:
    return "∞" if math.isinf(clip) else f"{clip:g}"


def header(bias: BenchmarkBias) -> str:
    """One line per benchmark: ‖∇F‖ and ``partial``'s agreement."""
    return (f"**{bias.name}** — ‖∇F‖ = {np.linalg.norm(bias.truth):.3e}; "
            f"`partial` (∇_φ f at π*, no implicit term): cos / err = {bias.partial().cell()}")


def main_table(bias: BenchmarkBias, weights: Sequence[float], kl_targets: Sequence[float],
               b_steps: Sequence[int]) -> str:
    """Rows λ̃ × δ; columns: the twin's expected estimate at each K_B, B's KL, and ∇L*_λ."""
    head = " | ".join(f"K_B = {k}" for k in b_steps)
    lines = [f"| λ̃ | δ | {head} | max / final KL/δ at K_B = {b_steps[-1]} | ∇L*_λ |",
             "| --- | --- | " + "--- | " * len(b_steps) + "--- | --- |"]
    for weight in weights:
        penalty = bias.penalty(weight).cell()
        for target in kl_targets:
            points = [bias.twin(penalty_weight=weight, kl_target=target, b_steps=k) for k in b_steps]
            cells = " | ".join(p.expected.cell() for p in points)
            kl = f"{points[-1].max_kl:.2f} / {points[-1].final_kl:.2f}"
            lines.append(f"| {weight:g} | {target:g} | {cells} | {kl} | {penalty} |")
    return "\n".join(lines)


UNDAMPED: dict[str, Any] = {"clip": math.inf, "kl_target": 1e6, "kl_coef": KL_COEF_RANGE[0]}
"""No clip and (in effect) no KL term: what is left is the first-order surrogate and K_B."""


def clip_table(biases: Sequence[BenchmarkBias], weights: Sequence[float], clips: Sequence[float]) -> str:
    """Rows benchmark × λ̃; columns: the twin's expected estimate for each clip ε (base K_B and δ), undamped."""
    lines = ["| benchmark | λ̃ | " + " | ".join(f"ε = {_label(c)}" for c in clips) + " | no clip, β = 0 | ∇L*_λ |",
             "| --- | --- | " + "--- | " * len(clips) + "--- | --- |"]
    for bias in biases:
        for weight in weights:
            cells = [bias.twin(penalty_weight=weight, clip=c).expected.cell() for c in clips]
            cells.append(bias.twin(penalty_weight=weight, **UNDAMPED).expected.cell())
            lines.append(f"| {bias.name} | {weight:g} | {' | '.join(cells)} | {bias.penalty(weight).cell()} |")
    return "\n".join(lines)


def sampled_table(biases: Sequence[BenchmarkBias], weights: Sequence[float], repetitions: int) -> str:
    """Rows benchmark × λ̃: expected estimate, single sampled rounds (median), and the mean of the rounds."""
    lines = [f"| benchmark | λ̃ | expected | one round (median of {repetitions}) | mean of {repetitions} rounds |",
             "| --- | --- | --- | --- | --- |"]
    for bias in biases:
        for weight in weights:
            single, mean = bias.sampled(repetitions, penalty_weight=weight)
            expected = bias.twin(penalty_weight=weight).expected
            lines.append(f"| {bias.name} | {weight:g} | {expected.cell()} | {single.cell()} | {mean.cell()} |")
    return "\n".join(lines)


def controller_table(biases: Sequence[BenchmarkBias], weight: float, kl_targets: Sequence[float],
                     b_steps: Sequence[int]) -> str:
    """Rows benchmark × δ; per β controller: max KL/δ over the solve and err at the two largest K_B."""
    short, long = (b_steps[-2], b_steps[-1]) if len(b_steps) > 1 else (b_steps[0], b_steps[0])
    lines = ["| benchmark | δ | " + " | ".join(CONTROLLERS) + " |", "| --- | --- |" + " --- |" * len(CONTROLLERS)]
    for bias in biases:
        for target in kl_targets:
            cells = []
            for settings in CONTROLLERS.values():
                at_short = bias.twin(penalty_weight=weight, kl_target=target, b_steps=short, **settings)
                at_long = bias.twin(penalty_weight=weight, kl_target=target, b_steps=long, **settings)
                cells.append(f"{at_long.max_kl:.2f} · {at_short.expected.err:.3f} · {at_long.expected.err:.3f}")
            lines.append(f"| {bias.name} | {target:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class StudyAxes:
    """What the re-sync bias study varies; the other tables use K_B = max, δ = the middle value, ε = 0.2."""

    b_steps: tuple[int, ...] = (10, 100, 1000)
    kl_targets: tuple[float, ...] = (0.002, 0.02, 0.2)
    weights: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0)
    clips: tuple[float, ...] = (0.1, 0.2, 0.5, math.inf)
    n_pairs: int = 16
    repetitions: int = 16

    def base(self) -> ResyncConfig:
        """The twin's settings wherever a table does not vary them."""
        return ResyncConfig(b_steps=max(self.b_steps), kl_target=self.kl_targets[len(self.kl_targets) // 2],
                            n_pairs=self.n_pairs)


def resync_report(problems: dict[str, BilevelProblem], axes: StudyAxes) -> str:
    """The four tables of the study on ``problems``, as one Markdown section body."""
    base = axes.base()
    biases = [BenchmarkBias(name, problem, base) for name, problem in problems.items()]
    steps = sorted(axes.b_steps)
    where = f"K_B = {base.b_steps}, δ = {base.kl_target:g}, ε = {base.clip:g}, Adam step {base.b_lr:g}"
    parts = ["Cells: cos / err = ‖ĝ − ∇F‖/‖∇F‖ of an estimate ĝ against the exact ∇F; the twin's ĝ is its"
             " expectation over the rollouts except in the sampled table. Settings a table does not vary: "
             f"{where}, β₀ = {base.kl_coef:g} adapted every {base.kl_every} steps.", ""]
    for bias in biases:
        parts += [header(bias), "", main_table(bias, axes.weights, axes.kl_targets, steps), ""]
    parts += [f"Clip ε ({where.split(', ε')[0]}):", "", clip_table(biases, axes.weights, axes.clips), ""]
    parts += [f"Sampled rounds of {base.n_pairs} paired rollouts ({where}):", "",
              sampled_table(biases, axes.weights, axes.repetitions), ""]
    short = steps[-2] if len(steps) > 1 else steps[0]
    parts += [f"β control at λ̃ = {min(axes.weights):g} (cells: max KL/δ at K_B = {steps[-1]} · err at K_B = {short}"
              f" · err at K_B = {steps[-1]}):", "",
              controller_table(biases, min(axes.weights), axes.kl_targets, steps), ""]
    return "\n".join(parts)
