"""Method ``partial``: what RLHF pipelines and PEBBLE do — ∇_φ f at the current policy, no implicit term.

Per iteration: K_v sweeps of the same warm-started lower solver as SoBiRL (exact soft Bellman sweeps, or
sampled soft Q-learning), π = softmax(Q/τ), then φ ← φ − η ∇_φ f(φ, π). It ignores how π*(φ) moves with
φ, so its fixed points satisfy ∇_φ f(φ, π*(φ)) = 0 rather than ∇F(φ) = 0: a biased point in general.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pref_brl.tabular.common import (
    Counts,
    MethodConfig,
    Trace,
    generators,
    run_iterations,
    track_soft_optimum,
)
from pref_brl.tabular.mdp import softmax
from pref_brl.tabular.problem import BilevelProblem

Array = np.ndarray


@dataclass
class PartialConfig(MethodConfig):
    """Settings of the partial-gradient baseline."""

    value_sweeps: int = 5
    """K_v: lower sweeps per iteration, warm-started."""
    q_lr: float = 0.5
    """Soft Q-learning step of the sampled variant."""


@dataclass
class _State:
    phi: Array
    q: Array


def run_partial(problem: BilevelProblem, config: PartialConfig) -> Trace:
    """Run the partial-gradient baseline; see the module docstring."""
    shape = (problem.mdp.n_states, problem.mdp.n_actions)
    state = _State(problem.phi0.astype(np.float64), np.zeros(shape))
    (lower_rng,) = generators(config.seed, 1)

    def step(s: _State, k: int, counts: Counts) -> Array:
        s.q = track_soft_optimum(problem, s.phi, s.q, config.value_sweeps, config, config.q_lr, counts, lower_rng)
        counts.upper_calls += 1
        s.phi = s.phi - config.phi_lr * problem.upper.grad_phi(s.phi, softmax(s.q / problem.tau))
        return s.phi

    return run_iterations(problem, config, "partial", state, step)
