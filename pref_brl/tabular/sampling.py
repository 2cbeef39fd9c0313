"""Monte-Carlo estimators on a tabular MDP, driven by explicit uniform noise (common random numbers).

Every random draw is an inverse-CDF lookup of a uniform number supplied by the caller, so two policies fed
the same uniforms follow the same trajectory wherever they agree: with θ_λ = θ the two rollouts are
identical and the sampled penalty term of Eq. 13 is exactly zero. Sample counts are transitions drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pref_brl.tabular.mdp import TabularMDP, log_softmax, soft_value

Array = np.ndarray


def horizon_for(gamma: float, tail: float = 1e-3) -> int:
    """Smallest H with γ^H ≤ tail: the truncation of a discounted sum."""
    return max(1, math.ceil(math.log(tail) / math.log(gamma))) if gamma > 0 else 1


def inverse_cdf(cdf: Array, uniforms: Array) -> Array:
    """Index drawn from each row of a cumulative distribution by its uniform number."""
    idx = (uniforms[..., None] > cdf).sum(axis=-1)
    return np.minimum(idx, cdf.shape[-1] - 1)


@dataclass(frozen=True)
class Rollouts:
    """N truncated trajectories: ``states[n, t]``, ``actions[n, t]``."""

    states: Array
    actions: Array

    @property
    def n_samples(self) -> int:
        return self.states.size


def rollout(
    mdp: TabularMDP,
    policy: Array,
    uniforms: Array,
    start_states: Array | None = None,
    start_actions: Array | None = None,
) -> Rollouts:
    """Roll out π for ``uniforms.shape[1]`` steps; ``uniforms[n, t]`` = (state draw, action draw).

    s_0 ∼ ρ (or ``start_states``), a_0 ∼ π(·|s_0) (or ``start_actions``), s_{t+1} ∼ P(·|s_t, a_t).
    """
    n, horizon = uniforms.shape[:2]
    p_cdf, pi_cdf = np.cumsum(mdp.transitions, axis=-1), np.cumsum(policy, axis=-1)
    states = np.empty((n, horizon), dtype=np.int64)
    actions = np.empty((n, horizon), dtype=np.int64)
    s = inverse_cdf(np.cumsum(mdp.initial), uniforms[:, 0, 0]) if start_states is None else start_states
    for t in range(horizon):
        a = inverse_cdf(pi_cdf[s], uniforms[:, t, 1])
        if t == 0 and start_actions is not None:
            a = start_actions
        states[:, t], actions[:, t] = s, a
        if t + 1 < horizon:
            s = inverse_cdf(p_cdf[s, a], uniforms[:, t + 1, 0])
    return Rollouts(states, actions)


def discounted_jacobian_sum(rollouts: Rollouts, reward_jacobian: Array, gamma: float) -> Array:
    """Eq. 11 by Monte Carlo: mean_n Σ_t γ^t ∇_φ r(s_t, a_t), a (truncated) estimate of ∇_φ J."""
    return trajectory_jacobian_sums(rollouts, reward_jacobian, gamma).mean(axis=0)


def trajectory_jacobian_sums(rollouts: Rollouts, reward_jacobian: Array, gamma: float) -> Array:
    """Σ_t γ^t ∇_φ r(s_t, a_t) for each trajectory; shape (N, d)."""
    weights = gamma ** np.arange(rollouts.states.shape[1])
    per_step = reward_jacobian[rollouts.states, rollouts.actions]  # (N, H, d)
    return np.einsum("t,ntd->nd", weights, per_step)


def sampled_penalty_term(
    mdp: TabularMDP, reward_jacobian: Array, policy: Array, policy_lam: Array, uniforms: Array, lam: float
) -> tuple[Array, int]:
    """λ (∇̂_φ J(θ) − ∇̂_φ J(θ_λ)) of Eq. 13 from rollouts of both policies on the same uniforms.

    Returns the estimate and the number of transitions drawn.
    """
    plain, penalised = rollout(mdp, policy, uniforms), rollout(mdp, policy_lam, uniforms)
    gap = discounted_jacobian_sum(plain, reward_jacobian, mdp.discount) - discounted_jacobian_sum(
        penalised, reward_jacobian, mdp.discount
    )
    return lam * gap, plain.n_samples + penalised.n_samples


def sample_next_states(mdp: TabularMDP, uniforms: Array) -> Array:
    """One s′ ∼ P(·|s, a) for every (s, a) (a generative-model sweep); ``uniforms`` has shape (S, A)."""
    return inverse_cdf(np.cumsum(mdp.transitions, axis=-1), uniforms)


def td_evaluation_sweep(
    mdp: TabularMDP, q: Array, reward: Array, logits: Array, tau: float, next_states: Array, step: float
) -> Array:
    """Soft expected-SARSA critic step for π = softmax(logits) on one sampled s′ per (s, a).

    Target r(s, a) + γ Σ_a′ π(a′|s′) (Q(s′, a′) − τ log π(a′|s′)); its fixed point in expectation is Q^π_τ.
    """
    log_pi = log_softmax(logits)
    v = (np.exp(log_pi) * (q - tau * log_pi)).sum(axis=-1)
    return q + step * (reward + mdp.discount * v[next_states] - q)


def soft_q_sweep(mdp: TabularMDP, q: Array, reward: Array, tau: float, next_states: Array, step: float) -> Array:
    """Sampled soft Q-learning step Q ← Q + β (r + γ V_Q(s′) − Q); its fixed point in expectation is Q*."""
    return q + step * (reward + mdp.discount * soft_value(q, tau)[next_states] - q)
