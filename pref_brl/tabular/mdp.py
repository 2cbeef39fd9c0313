"""Exact maths of entropy-regularised tabular MDPs (docs/tabular.md).

Conventions, used everywhere in :mod:`pref_brl.tabular`:

* ``transitions[s, a, s']`` is P, ``initial[s]`` is ρ, ``discount`` is γ;
* a policy is a table ``policy[s, a] = π(a|s)``; a *logit* table θ gives π_θ = softmax(θ[s]);
* ``tau`` is the entropy weight τ > 0 of the lower problem, whose regularised return is
  J_τ(π) = E[Σ_t γ^t (r(s_t, a_t) − τ log π(a_t|s_t))] (the lower objective of docs/bilevel.md with π_ref
  uniform, up to the constant τ log|A| / (1 − γ));
* occupancies are *normalised*: d^π(s, a) = (1 − γ) Σ_t γ^t Pr(s_t = s, a_t = a), summing to one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Array = np.ndarray


@dataclass(frozen=True)
class TabularMDP:
    """A finite discounted MDP: transition tensor P[s, a, s′], initial distribution ρ and discount γ."""

    transitions: Array
    initial: Array
    discount: float

    def __post_init__(self) -> None:
        p, rho = np.asarray(self.transitions), np.asarray(self.initial)
        if p.ndim != 3 or p.shape[0] != p.shape[2] or rho.shape != (p.shape[0],):
            raise ValueError(f"need P[s, a, s'] and rho[s]; got {p.shape} and {rho.shape}")
        if not np.allclose(p.sum(-1), 1.0, atol=1e-12) or not np.isclose(rho.sum(), 1.0, atol=1e-12):
            raise ValueError("rows of P and rho must be probability distributions")
        if not 0.0 <= self.discount < 1.0:
            raise ValueError(f"discount must lie in [0, 1), got {self.discount}")
        object.__setattr__(self, "transitions", p.astype(np.float64))
        object.__setattr__(self, "initial", rho.astype(np.float64))

    @property
    def n_states(self) -> int:
        return self.transitions.shape[0]

    @property
    def n_actions(self) -> int:
        return self.transitions.shape[1]

    def state_transitions(self, policy: Array) -> Array:
        """P_π[s, s′] = Σ_a π(a|s) P[s, a, s′]."""
        return np.einsum("sa,sat->st", policy, self.transitions)

    def expected_next(self, values: Array) -> Array:
        """(P v)[s, a] = Σ_s′ P[s, a, s′] v[s′]."""
        return self.transitions @ values


@dataclass(frozen=True)
class SoftSolution:
    """The optimal soft Q-function of one reward, its value, and how many sweeps produced it."""

    q: Array
    v: Array
    tau: float
    sweeps: int

    @property
    def logits(self) -> Array:
        """θ* = Q*/τ, so that π* = softmax(θ*)."""
        return self.q / self.tau

    @property
    def policy(self) -> Array:
        return softmax(self.logits)


def log_softmax(logits: Array) -> Array:
    """Row-wise log softmax, stable for large logits."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: Array) -> Array:
    """Row-wise softmax: the policy of a logit table."""
    return np.exp(log_softmax(logits))


def soft_value(q: Array, tau: float) -> Array:
    """V(s) = τ log Σ_a exp(Q(s, a)/τ)."""
    top = q.max(axis=-1)
    return top + tau * np.log(np.exp((q - top[:, None]) / tau).sum(axis=-1))


def soft_bellman(mdp: TabularMDP, reward: Array, q: Array, tau: float) -> Array:
    """The soft Bellman optimality operator (T Q)(s, a) = r(s, a) + γ Σ_s′ P[s, a, s′] V_Q(s′)."""
    return reward + mdp.discount * mdp.expected_next(soft_value(q, tau))


def soft_value_iteration(
    mdp: TabularMDP,
    reward: Array,
    tau: float,
    tol: float = 1e-10,
    q0: Array | None = None,
    max_sweeps: int = 100_000,
) -> SoftSolution:
    """Iterate Q ← T Q until ‖Q − Q*‖∞ ≤ tol (guaranteed by the γ-contraction bound).

    Stops when ‖T Q − Q‖∞ ≤ tol (1 − γ)/γ, which bounds the distance of the returned T Q to the fixed
    point by tol. Raises if ``max_sweeps`` is reached first.
    """
    _check_tau(tau)
    q = np.zeros_like(reward) if q0 is None else np.array(q0, dtype=np.float64)
    gamma = mdp.discount
    threshold = tol * (1.0 - gamma) / max(gamma, 1e-300)
    for sweep in range(1, max_sweeps + 1):
        q_next = soft_bellman(mdp, reward, q, tau)
        if np.max(np.abs(q_next - q)) <= threshold:
            return SoftSolution(q_next, soft_value(q_next, tau), tau, sweep)
        q = q_next
    raise RuntimeError(f"soft value iteration did not reach tol={tol} in {max_sweeps} sweeps")


def soft_policy_iteration(
    mdp: TabularMDP,
    reward: Array,
    tau: float,
    tol: float = 1e-11,
    q0: Array | None = None,
    max_iter: int = 200,
) -> SoftSolution:
    """Soft policy iteration (Newton's method on the soft Bellman equation) to ‖T Q − Q‖∞ ≤ tol (1 − γ).

    Each step evaluates π = softmax(Q/τ) exactly with one linear solve; the convergence is quadratic near
    the optimum, so this is the precise oracle used for F and ∇F. The residual bound implies
    ‖Q − Q*‖∞ ≤ tol.
    """
    _check_tau(tau)
    q = np.zeros_like(reward) if q0 is None else np.array(q0, dtype=np.float64)
    for it in range(1, max_iter + 1):
        q, _ = soft_policy_evaluation(mdp, reward, q / tau, tau)
        if np.max(np.abs(soft_bellman(mdp, reward, q, tau) - q)) <= tol * (1.0 - mdp.discount):
            return SoftSolution(q, soft_value(q, tau), tau, it)
    raise RuntimeError(f"soft policy iteration did not reach tol={tol} in {max_iter} steps")


def soft_policy_evaluation(mdp: TabularMDP, reward: Array, logits: Array, tau: float) -> tuple[Array, Array]:
    """Exact (Q^π_τ, V^π_τ) of π = softmax(logits): V = (I − γ P_π)^{-1} Σ_a π (r − τ log π), Q = r + γ P V."""
    log_pi = log_softmax(logits)
    policy = np.exp(log_pi)
    stage = (policy * (reward - tau * log_pi)).sum(axis=-1)
    v = _solve_policy_system(mdp, policy, stage)
    return reward + mdp.discount * mdp.expected_next(v), v


def regularised_return(mdp: TabularMDP, reward: Array, logits: Array, tau: float) -> float:
    """J_τ(π) = ρᵀ V^π_τ."""
    return float(mdp.initial @ soft_policy_evaluation(mdp, reward, logits, tau)[1])


def soft_advantage(mdp: TabularMDP, reward: Array, logits: Array, tau: float) -> Array:
    """A_τ(s, a) = Q^π_τ(s, a) − τ log π(a|s) − V^π_τ(s); Σ_a π A_τ = 0. It is also the natural gradient."""
    q, v = soft_policy_evaluation(mdp, reward, logits, tau)
    return q - tau * log_softmax(logits) - v[:, None]


def state_occupancy(mdp: TabularMDP, policy: Array) -> Array:
    """d^π(s) = (1 − γ) ρᵀ (I − γ P_π)^{-1}, normalised to sum to one."""
    system = np.eye(mdp.n_states) - mdp.discount * mdp.state_transitions(policy)
    return (1.0 - mdp.discount) * np.linalg.solve(system.T, mdp.initial)


def occupancy(mdp: TabularMDP, policy: Array) -> Array:
    """d^π(s, a) = d^π(s) π(a|s)."""
    return state_occupancy(mdp, policy)[:, None] * policy


def reward_gradient(mdp: TabularMDP, policy: Array, reward_jacobian: Array) -> Array:
    """Gaur et al. (2025), Eq. 11: ∇_φ J(φ, π) = (1 − γ)^{-1} Σ_{s,a} d^π(s, a) ∇_φ r_φ(s, a) for a fixed policy."""
    return np.einsum("sa,sad->d", occupancy(mdp, policy), reward_jacobian) / (1.0 - mdp.discount)


def soft_policy_gradient(mdp: TabularMDP, reward: Array, logits: Array, tau: float) -> Array:
    """Gaur et al. (2025), Eq. 12, exact: ∂J_τ/∂θ(s, a) = (1 − γ)^{-1} d^π(s) π(a|s) A_τ(s, a) for softmax logits θ."""
    policy = softmax(logits)
    advantage = soft_advantage(mdp, reward, logits, tau)
    d_s = state_occupancy(mdp, policy)
    return d_s[:, None] * policy * advantage / (1.0 - mdp.discount)


def occupancy_vjp(mdp: TabularMDP, policy: Array, cost: Array) -> Array:
    """∂/∂π(a|s) of Σ_{s,a} d^π(s, a) u(s, a), with the table entries of π as free variables.

    Equals d^π(s) Q_u(s, a), where Q_u is the (unregularised) Q-function of the pseudo-reward u under π.
    """
    return state_occupancy(mdp, policy)[:, None] * cost_q_function(mdp, policy, cost)


def cost_q_function(mdp: TabularMDP, policy: Array, cost: Array) -> Array:
    """Q_u = u + γ P V_u, V_u = (I − γ P_π)^{-1} Σ_a π u: the plain Q-function of a pseudo-reward u."""
    v_u = _solve_policy_system(mdp, policy, (policy * cost).sum(axis=-1))
    return cost + mdp.discount * mdp.expected_next(v_u)


def logits_vjp(policy: Array, grad_policy: Array) -> Array:
    """Chain rule through softmax: ∂f/∂θ(s, a) = π(a|s) (G(s, a) − Σ_b π(b|s) G(s, b)) with G = ∂f/∂π."""
    return policy * (grad_policy - (policy * grad_policy).sum(axis=-1, keepdims=True))


def _solve_policy_system(mdp: TabularMDP, policy: Array, stage: Array) -> Array:
    """v = (I − γ P_π)^{-1} stage."""
    system = np.eye(mdp.n_states) - mdp.discount * mdp.state_transitions(policy)
    return np.linalg.solve(system, stage)


def _check_tau(tau: float) -> None:
    if not tau > 0.0:
        raise ValueError(f"the entropy weight tau must be positive, got {tau}")


def soft_evaluation_sweep(
    mdp: TabularMDP, q: Array, reward: Array, logits: Array, tau: float, step: float = 1.0
) -> Array:
    """Expected critic step Q ← Q + β (r + γ P V − Q), V(s) = Σ_a π(a|s)(Q(s, a) − τ log π(a|s))."""
    log_pi = log_softmax(logits)
    v = (np.exp(log_pi) * (q - tau * log_pi)).sum(axis=-1)
    return q + step * (reward + mdp.discount * mdp.expected_next(v) - q)
