"""Method ``sobirl`` (Yang, Gao, Yuan, "SoBiRL", AISTATS 2025): the fully first-order fixed-point hypergradient,
single loop, warm-started.

Per iteration: K_v soft Bellman sweeps on Q (Q ≈ Q*_φ), π = softmax(Q/τ), b = τ^{-1} ∂f/∂logit, then
    ∇̂F = ∇_φ f(φ, π) + Σ_{s,a} w(s, a) ∇_φ r_φ(s, a),   w ≈ (I − γ (P Π)ᵀ)^{-1} b,
and φ ← φ − η ∇̂F.

* ``exact`` (model-based): K_w warm-started fixed-point sweeps w ← b + γ (P Π)ᵀ w of the adjoint system.
* ``sampled`` (model-free): Q by sampled soft Q-learning; the implicit term Σ_{s,a} b(s, a) ∇_φ Q(s, a)
  by rollouts, ∇_φ Q(s, a) = E[Σ_t γ^t ∇_φ r(s_t, a_t) | s_0 = s, a_0 = a, π]: N states drawn with
  probability ∝ Σ_a |b(s, a)|, one rollout from each action of the drawn state on shared uniforms.
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
from pref_brl.tabular.problem import BilevelProblem, adjoint_rhs, adjoint_sweep, implicit_gradient
from pref_brl.tabular.sampling import horizon_for, rollout, trajectory_jacobian_sums

Array = np.ndarray


@dataclass
class SobirlConfig(MethodConfig):
    """Settings of SoBiRL."""

    value_sweeps: int = 5
    """K_v: lower (soft Bellman / soft Q-learning) sweeps per iteration, warm-started."""
    adjoint_sweeps: int = 5
    """K_w: adjoint fixed-point sweeps per iteration, warm-started (exact variant)."""
    q_lr: float = 0.5
    """Soft Q-learning step of the sampled variant."""
    n_rollouts: int = 8
    """States drawn for the sampled implicit term (each rolled out from every action)."""
    horizon: int = 0
    """Rollout length; 0 picks H with γ^H ≤ 1e-3."""


@dataclass
class _State:
    phi: Array
    q: Array
    w: Array


def run_sobirl(problem: BilevelProblem, config: SobirlConfig) -> Trace:
    """Run SoBiRL; see the module docstring."""
    shape = (problem.mdp.n_states, problem.mdp.n_actions)
    state = _State(problem.phi0.astype(np.float64), np.zeros(shape), np.zeros(shape))
    lower_rng, rollout_rng = generators(config.seed, 2)
    horizon = config.horizon or horizon_for(problem.mdp.discount)

    def step(s: _State, k: int, counts: Counts) -> Array:
        s.q = track_soft_optimum(problem, s.phi, s.q, config.value_sweeps, config, config.q_lr, counts, lower_rng)
        policy = softmax(s.q / problem.tau)
        rhs = adjoint_rhs(problem, s.phi, policy)
        if config.variant == "exact":
            for _ in range(config.adjoint_sweeps):
                s.w = adjoint_sweep(problem.mdp, policy, rhs, s.w)
            counts.exact_calls += config.adjoint_sweeps
            implicit = implicit_gradient(problem, s.phi, s.w)
        else:
            implicit, used = sampled_implicit_gradient(
                problem, s.phi, policy, rhs, config.n_rollouts, horizon, rollout_rng
            )
            counts.samples += used
        counts.upper_calls += 2
        s.phi = s.phi - config.phi_lr * (problem.upper.grad_phi(s.phi, policy) + implicit)
        return s.phi

    return run_iterations(problem, config, "sobirl", state, step)


def sampled_implicit_gradient(
    problem: BilevelProblem,
    phi: Array,
    policy: Array,
    rhs: Array,
    n_states: int,
    horizon: int,
    rng: np.random.Generator,
) -> tuple[Array, int]:
    """Estimate Σ_{s,a} b(s, a) ∇_φ Q^π(s, a) by importance-sampled rollouts; unbiased up to truncation.

    Draws ``n_states`` states with probability ∝ Σ_a |b(s, a)| and rolls out π from every action of each
    drawn state on shared uniforms. Returns the estimate and the number of transitions drawn.
    """
    state_weight = np.abs(rhs).sum(axis=-1)
    mass = state_weight.sum()
    if mass == 0.0:
        return np.zeros(problem.dim), 0
    states = rng.choice(state_weight.size, size=n_states, p=state_weight / mass)
    uniforms = rng.random((n_states, horizon, 2))
    jac = problem.reward.jacobian(phi)
    total, used = np.zeros((n_states, problem.dim)), 0
    for action in range(problem.mdp.n_actions):
        paths = rollout(problem.mdp, policy, uniforms, states, np.full(n_states, action))
        total += rhs[states, action][:, None] * trajectory_jacobian_sums(paths, jac, problem.mdp.discount)
        used += paths.n_samples
    return (mass / n_states) * (total / state_weight[states][:, None]).sum(axis=0), used
