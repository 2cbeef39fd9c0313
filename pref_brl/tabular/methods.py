"""The name-keyed table of tabular bilevel methods, and the exact-hypergradient reference run.

Every method has the same interface: ``run(problem, config) -> Trace`` (iterates, exact F values, ‖∇F‖
and cumulative counts of samples / exact calls / upper calls), with a config dataclass that extends
:class:`MethodConfig`. ``run_method(name, problem, **settings)`` builds the config and runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pref_brl.tabular.common import Counts, MethodConfig, Trace, run_iterations
from pref_brl.tabular.partial import PartialConfig, run_partial
from pref_brl.tabular.penalty_method import PenaltyConfig, run_penalty
from pref_brl.tabular.problem import BilevelProblem, hypergradient, lower_solution
from pref_brl.tabular.regularized_ac import RegularizedACConfig, run_regularized_ac
from pref_brl.tabular.resync import ResyncConfig, run_resync
from pref_brl.tabular.sobirl import SobirlConfig, run_sobirl

Array = np.ndarray


@dataclass(frozen=True)
class MethodSpec:
    """One entry of :data:`METHODS`: its config type, its run function and a one-line summary."""

    config: type[MethodConfig]
    run: Callable[[BilevelProblem, Any], Trace]
    summary: str


METHODS: dict[str, MethodSpec] = {
    "penalty": MethodSpec(
        PenaltyConfig, run_penalty, "Gaur et al. (2025) / F2BA double loop: T inner steps for θ and θ_λ, Eq. 10 step"
    ),
    "sobirl": MethodSpec(
        SobirlConfig,
        run_sobirl,
        "SoBiRL (Yang, Gao, Yuan, AISTATS 2025): fixed-point hypergradient with an iterated adjoint system",
    ),
    "regularized_ac": MethodSpec(
        RegularizedACConfig,
        run_regularized_ac,
        "Zeng et al. (arXiv 2601.16399): single-loop penalty actor-critic, three time-scales, attenuating entropy",
    ),
    "partial": MethodSpec(PartialConfig, run_partial, "∇_φ f at the current policy, no implicit term (PEBBLE)"),
    "resync": MethodSpec(
        ResyncConfig,
        run_resync,
        "twin of the deep bilevel method: B re-synced to θ*, K_B clipped-surrogate Adam steps, paired rollouts",
    ),
}

PAPER_METHODS: tuple[str, ...] = ("penalty", "sobirl", "regularized_ac", "partial")
"""The methods of the papers, run by the method study; ``resync`` (exact lower-level gradients even in its
``sampled`` variant) has its own bias study."""


def run_method(name: str, problem: BilevelProblem, **settings: Any) -> Trace:
    """Run method ``name`` from :data:`METHODS` with its config built from ``settings``."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    spec = METHODS[name]
    return spec.run(problem, spec.config(**settings))


@dataclass
class _ReferenceState:
    phi: Array
    q: Array | None = None


def run_reference(problem: BilevelProblem, iterations: int, lr: float) -> Trace:
    """Gradient descent on F with the exact hypergradient (the oracle): the reference for tolerances."""
    config = MethodConfig(iterations=iterations, phi_lr=lr, variant="exact")

    def step(s: _ReferenceState, k: int, counts: Counts) -> Array:
        solution = lower_solution(problem, s.phi, q0=s.q)
        s.q = solution.q
        counts.exact_calls += solution.sweeps + 1
        counts.upper_calls += 2
        s.phi = s.phi - lr * hypergradient(problem, s.phi, solution)
        return s.phi

    return run_iterations(problem, config, "oracle", _ReferenceState(problem.phi0.astype(np.float64)), step)
