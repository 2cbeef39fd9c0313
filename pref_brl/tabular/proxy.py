"""The penalty proxy of Gaur et al. (2025), Eq. 9–10, on a tabular problem, computed exactly.

With g = −J_τ (the lower loss) and λ > 0:
    θ*   = argmin_θ g(φ, θ),                 θ_λ = argmin_θ f(φ, π_θ) + λ g(φ, θ),
    L*_λ(φ) = f(φ, π_θλ) + λ (g(φ, θ_λ) − g(φ, θ*)),
    ∇L*_λ(φ) = ∇_φ f(φ, π_θλ) + λ (∇_φ J(φ, θ*) − ∇_φ J(φ, θ_λ))            (Eq. 10, with Eq. 11 for ∇_φ J).

Policies are softmax logit tables. Inner problems are solved with natural policy-gradient steps: for
h = f/λ − J_τ the natural descent direction is D = A_τ − N_f/λ (A_τ the soft advantage, N_f the natural
gradient of f, see ``upper.py``); with step 1/τ and no f this is exactly soft policy iteration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pref_brl.tabular.mdp import (
    regularised_return,
    reward_gradient,
    soft_advantage,
    soft_policy_gradient,
    softmax,
)
from pref_brl.tabular.problem import BilevelProblem, lower_solution
from pref_brl.tabular.upper import logit_grad

Array = np.ndarray


def natural_direction(
    problem: BilevelProblem, phi: Array, logits: Array, lam: float | None, tau: float | None = None
) -> Array:
    """D = A_τ − N_f/λ, the natural descent direction of f/λ − J_τ (λ = None: of −J_τ alone)."""
    tau = problem.tau if tau is None else tau
    direction = soft_advantage(problem.mdp, problem.reward(phi), logits, tau)
    if lam is not None:
        direction = direction - problem.upper.natural_grad(phi, softmax(logits)) / lam
    return direction


def inner_objective(
    problem: BilevelProblem, phi: Array, logits: Array, lam: float | None, tau: float | None = None
) -> float:
    """h(θ) = f(φ, π_θ)/λ − J_τ(φ, θ) (λ = None: −J_τ)."""
    tau = problem.tau if tau is None else tau
    value = -regularised_return(problem.mdp, problem.reward(phi), logits, tau)
    if lam is not None:
        value += problem.upper.value(phi, softmax(logits)) / lam
    return value


def _inner_gradient(problem: BilevelProblem, phi: Array, logits: Array, lam: float | None) -> Array:
    """∇_θ h (plain, not natural), used for the Armijo test."""
    grad = -soft_policy_gradient(problem.mdp, problem.reward(phi), logits, problem.tau)
    if lam is not None:
        grad = grad + logit_grad(problem.upper, phi, softmax(logits)) / lam
    return grad


MAX_HALVINGS = 80  # step sizes below 2^-80 of the first are rounding noise


def solve_policy(
    problem: BilevelProblem,
    phi: Array,
    lam: float | None,
    logits0: Array,
    tol: float = 1e-11,
    max_iter: int = 20_000,
) -> Array:
    """Minimise h = f/λ − J_τ over logits by natural gradient steps with Armijo backtracking.

    Stops when the natural residual max |D| ≤ tol (returning ``logits0`` itself if it already qualifies);
    raises if that does not happen in ``max_iter`` steps.
    """
    return solve_policy_counted(problem, phi, lam, logits0, tol, max_iter)[0]


def solve_policy_counted(
    problem: BilevelProblem,
    phi: Array,
    lam: float | None,
    logits0: Array,
    tol: float = 1e-11,
    max_iter: int = 20_000,
) -> tuple[Array, int]:
    """:func:`solve_policy`, also returning the number of exact lower-level evaluations it used."""
    theta, step = logits0, 1.0 / problem.tau
    direction = natural_direction(problem, phi, theta, lam)
    if not np.isfinite(direction).all():
        raise ValueError("the inner problem's natural direction is not finite at the start (a state with zero "
                         "occupancy under every policy divides by zero: give every state positive initial "
                         "probability, or make it reachable)")
    evaluations = 1
    for _ in range(max_iter):
        if np.max(np.abs(direction)) <= tol:
            return theta, evaluations
        theta, direction, step, used = _line_search(problem, phi, lam, theta, direction, step)
        evaluations += used
    raise RuntimeError(f"inner natural-gradient solve did not reach tol={tol} in {max_iter} steps")


def _line_search(
    problem: BilevelProblem, phi: Array, lam: float | None, theta: Array, direction: Array, last_step: float
) -> tuple[Array, Array, float, int]:
    """One Armijo-backtracked natural step; returns the new logits, their direction, the step, evaluations."""
    residual = np.max(np.abs(direction))
    h0 = inner_objective(problem, phi, theta, lam)
    slope = float((_inner_gradient(problem, phi, theta, lam) * direction).sum())
    step, evaluations = min(1.0 / problem.tau, 2.0 * last_step), 2
    for _ in range(MAX_HALVINGS):
        candidate = theta + step * direction
        next_direction = natural_direction(problem, phi, candidate, lam)
        evaluations += 1
        if abs(step * slope) > 1e-10 * max(1.0, abs(h0)):  # the objective still resolves progress
            accepted = inner_objective(problem, phi, candidate, lam) <= h0 + 1e-4 * step * slope
            evaluations += 1
        else:  # at rounding level: ask for a smaller natural residual instead
            accepted = np.max(np.abs(next_direction)) < residual
        if accepted:
            return candidate - candidate.mean(axis=-1, keepdims=True), next_direction, step, evaluations
        step *= 0.5
    raise RuntimeError(f"inner line search found no acceptable step in {MAX_HALVINGS} halvings (objective "
                       f"{h0!r}, residual {residual!r}); the problem is ill-posed (e.g. zero-occupancy states)")


def penalty_gradient(problem: BilevelProblem, phi: Array, lam: float, logits: Array, logits_lam: Array) -> Array:
    """Gaur et al. (2025), Eq. 10, at given inner iterates θ (for g) and θ_λ (for f + λ g)."""
    jac = problem.reward.jacobian(phi)
    policy, policy_lam = softmax(logits), softmax(logits_lam)
    gap = reward_gradient(problem.mdp, policy, jac) - reward_gradient(problem.mdp, policy_lam, jac)
    return problem.upper.grad_phi(phi, policy_lam) + lam * gap


def penalty_value(problem: BilevelProblem, phi: Array, lam: float, logits: Array, logits_lam: Array) -> float:
    """Gaur et al. (2025), Eq. 9: L_λ = f(φ, π_θλ) + λ (J_τ(φ, θ) − J_τ(φ, θ_λ))."""
    reward, tau = problem.reward(phi), problem.tau
    gap = regularised_return(problem.mdp, reward, logits, tau) - regularised_return(
        problem.mdp, reward, logits_lam, tau
    )
    return problem.upper.value(phi, softmax(logits_lam)) + lam * gap


@dataclass(frozen=True)
class PenaltyPoint:
    """Exact inner solutions at one φ and the proxy's value and gradient there."""

    logits: Array
    logits_lam: Array
    value: float
    grad: Array


def penalty_point(problem: BilevelProblem, phi: Array, lam: float, tol: float = 1e-11) -> PenaltyPoint:
    """Solve both inner problems to ``tol`` with the same solver, θ* first, θ_λ warm-started from θ*.

    θ* starts from soft policy iteration's answer; if f does not depend on π, θ_λ is θ* bit for bit.
    """
    start = lower_solution(problem, phi, tol=tol).logits
    logits = solve_policy(problem, phi, None, start - start.mean(axis=-1, keepdims=True), tol=tol)
    logits_lam = solve_policy(problem, phi, lam, logits, tol=tol)
    return PenaltyPoint(
        logits,
        logits_lam,
        penalty_value(problem, phi, lam, logits, logits_lam),
        penalty_gradient(problem, phi, lam, logits, logits_lam),
    )
