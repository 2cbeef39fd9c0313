"""A tabular bilevel problem min_φ F(φ) = f(φ, π*_τ(φ)) and its exact hypergradient (the oracle).

π*_τ(φ) = softmax(Q*_φ/τ) is the unique optimum of the entropy-regularised lower problem. Differentiating
the soft Bellman fixed point Q* = r_φ + γ P V*(Q*), with ∂V*(s)/∂Q*(s, a) = π*(a|s), gives

    ∇_φ Q* = (I − γ P Π*)^{-1} ∇_φ r_φ,        (P Π*)[(s, a), (s′, a′)] = P[s, a, s′] π*(a′|s′),

and, with b = τ^{-1} ∂f/∂logit (logit = Q*/τ), the hypergradient in adjoint form (SoBiRL's fixed point)

    ∇F = ∇_φ f + Σ_{s,a} w(s, a) ∇_φ r_φ(s, a),   w = (I − γ (P Π*)ᵀ)^{-1} b.

Both linear systems reduce to S × S systems because P Π* has rank ≤ S.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pref_brl.tabular.grid import GridLayout
from pref_brl.tabular.mdp import (
    SoftSolution,
    TabularMDP,
    logits_vjp,
    soft_policy_iteration,
)
from pref_brl.tabular.rewards import RewardMap
from pref_brl.tabular.upper import UpperLoss

Array = np.ndarray


@dataclass(frozen=True)
class BilevelProblem:
    """min_φ F(φ) = f(φ, π*_τ(φ)), π*_τ(φ) the soft-optimal policy of reward r_φ in ``mdp``."""

    name: str
    mdp: TabularMDP
    reward: RewardMap
    upper: UpperLoss
    tau: float
    phi0: Array
    layout: GridLayout | None = None

    @property
    def dim(self) -> int:
        return self.reward.dim


def lower_solution(
    problem: BilevelProblem, phi: Array, q0: Array | None = None, tol: float = 1e-11
) -> SoftSolution:
    """Q*_φ, π*_φ to ‖Q − Q*‖∞ ≤ tol (soft policy iteration, warm-started from ``q0``)."""
    return soft_policy_iteration(problem.mdp, problem.reward(phi), problem.tau, tol=tol, q0=q0)


def hyperobjective(problem: BilevelProblem, phi: Array, tol: float = 1e-11) -> float:
    """F(φ) = f(φ, π*_τ(φ))."""
    return problem.upper.value(phi, lower_solution(problem, phi, tol=tol).policy)


def adjoint_rhs(problem: BilevelProblem, phi: Array, policy: Array) -> Array:
    """b = τ^{-1} ∂f/∂logit at π: the right-hand side of the adjoint system."""
    return logits_vjp(policy, problem.upper.grad_policy(phi, policy)) / problem.tau


def adjoint_sweep(mdp: TabularMDP, policy: Array, rhs: Array, w: Array) -> Array:
    """One fixed-point sweep w ← b + γ (P Π)ᵀ w of the adjoint system (contraction with rate γ)."""
    inflow = np.einsum("sat,sa->t", mdp.transitions, w)
    return rhs + mdp.discount * policy * inflow[:, None]


def solve_adjoint(mdp: TabularMDP, policy: Array, rhs: Array) -> Array:
    """w = (I − γ (P Π)ᵀ)^{-1} b, exactly, through the S × S system z = c + γ P_πᵀ z."""
    inflow = np.einsum("sat,sa->t", mdp.transitions, rhs)
    system = np.eye(mdp.n_states) - mdp.discount * mdp.state_transitions(policy).T
    z = np.linalg.solve(system, inflow)
    return rhs + mdp.discount * policy * z[:, None]


def implicit_gradient(problem: BilevelProblem, phi: Array, w: Array) -> Array:
    """Σ_{s,a} w(s, a) ∇_φ r_φ(s, a)."""
    return np.einsum("sa,sad->d", w, problem.reward.jacobian(phi))


def hypergradient(problem: BilevelProblem, phi: Array, solution: SoftSolution | None = None) -> Array:
    """The exact ∇F(φ) in adjoint form (one S × S solve after the lower solve)."""
    solution = lower_solution(problem, phi) if solution is None else solution
    policy = solution.policy
    w = solve_adjoint(problem.mdp, policy, adjoint_rhs(problem, phi, policy))
    return problem.upper.grad_phi(phi, policy) + implicit_gradient(problem, phi, w)


def q_jacobian(problem: BilevelProblem, phi: Array, policy: Array) -> Array:
    """∇_φ Q*(s, a) = ∇r + γ P ∇V, ∇V = (I − γ P_π)^{-1} Σ_a π ∇r; shape (S, A, d)."""
    mdp, jac = problem.mdp, problem.reward.jacobian(phi)
    system = np.eye(mdp.n_states) - mdp.discount * mdp.state_transitions(policy)
    dv = np.linalg.solve(system, np.einsum("sa,sad->sd", policy, jac))
    return jac + mdp.discount * np.einsum("sat,td->sad", mdp.transitions, dv)


def hypergradient_forward(problem: BilevelProblem, phi: Array) -> Array:
    """The forward form of docs/tabular.md: ∇_φ f + τ^{-1} Σ ∂f/∂logit (∇Q*(s, a) − E_{a′∼π*} ∇Q*(s, a′))."""
    policy = lower_solution(problem, phi).policy
    dq = q_jacobian(problem, phi, policy)
    centred = dq - np.einsum("sa,sad->sd", policy, dq)[:, None, :]
    grad_logit = logits_vjp(policy, problem.upper.grad_policy(phi, policy))
    return problem.upper.grad_phi(phi, policy) + np.einsum("sa,sad->d", grad_logit, centred) / problem.tau


class Evaluator:
    """Exact F(φ) and ‖∇F(φ)‖ for a sequence of nearby φ (warm-starts the lower solve; charges nothing)."""

    def __init__(self, problem: BilevelProblem) -> None:
        self.problem = problem
        self._q: Array | None = None

    def __call__(self, phi: Array) -> tuple[float, float]:
        solution = lower_solution(self.problem, phi, q0=self._q)
        self._q = solution.q
        value = self.problem.upper.value(phi, solution.policy)
        grad = hypergradient(self.problem, phi, solution)
        return value, float(np.linalg.norm(grad))
