"""Method ``regularized_ac`` (Zeng et al., arXiv 2601.16399): single-loop penalty actor-critic with attenuating entropy.

One loop, three time-scales. At iteration k, with the entropy weight τ_k = τ + τ₀ (k + 1)^{-c_τ} → τ:
  critics (fast, β_k):  Q̂ ← Q̂ + β_k (r + γ V̂_π(s′) − Q̂) for θ and for θ_λ;
  actors  (middle, α_k): θ ← θ + (α_k/τ_k) Â,   θ_λ ← θ_λ + (α_k/τ_k)(Â_λ − N_f/λ);
  upper   (slow, ζ_k):  φ ← φ − ζ_k [∇_φ f(φ, θ_λ) + λ (∇_φ J(φ, θ) − ∇_φ J(φ, θ_λ))].
β_k = β₀ (k+1)^{-c_β}, α_k = α₀ (k+1)^{-c_α}, ζ_k = η (k+1)^{-c_ζ} with c_β ≤ c_α ≤ c_ζ.

The *extra* entropy τ₀ (k+1)^{-c_τ} is the algorithm's attenuating regularisation and vanishes; τ is the
benchmark's own entropy weight, part of the lower problem whose hyperobjective F every method is scored
on (τ > 0 keeps π*(φ) unique and F differentiable). With a benchmark τ of 0 this is the setting of Zeng et al.
(arXiv 2601.16399): the limit point is stationary for the unregularised problem.

* ``exact``: expected critic sweeps (one use of P each) and exact occupancies for ∇_φ J.
* ``sampled``: one sampled s′ per (s, a) per critic sweep (shared by both critics) and Eq. 13 rollouts of
  both policies on shared uniforms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pref_brl.tabular.common import (
    Counts,
    MethodConfig,
    Trace,
    centred,
    critic_advantage,
    generators,
    run_iterations,
)
from pref_brl.tabular.mdp import soft_evaluation_sweep, softmax
from pref_brl.tabular.problem import BilevelProblem
from pref_brl.tabular.proxy import penalty_gradient
from pref_brl.tabular.sampling import (
    horizon_for,
    sample_next_states,
    sampled_penalty_term,
    td_evaluation_sweep,
)

Array = np.ndarray


@dataclass
class RegularizedACConfig(MethodConfig):
    """Settings of the single-loop regularised actor-critic."""

    lam: float = 20.0
    """Penalty weight λ."""
    tau_extra: float = 1.0
    """τ₀: the attenuating extra entropy weight at k = 0."""
    tau_decay: float = 0.5
    """c_τ: τ_k − τ = τ₀ (k+1)^{-c_τ}."""
    critic_lr: float = 0.5
    """β₀."""
    critic_decay: float = 0.0
    """c_β."""
    actor_lr: float = 0.5
    """α₀, in units of 1/τ_k."""
    actor_decay: float = 0.1
    """c_α."""
    phi_decay: float = 0.2
    """c_ζ (the φ step is ``phi_lr`` (k+1)^{-c_ζ})."""
    n_rollouts: int = 8
    """Rollouts per policy for the sampled λ-term."""
    horizon: int = 0
    """Rollout length; 0 picks H with γ^H ≤ 1e-3."""

    def __post_init__(self) -> None:
        if not self.critic_decay <= self.actor_decay <= self.phi_decay:
            raise ValueError("three time-scales need critic_decay <= actor_decay <= phi_decay")


@dataclass
class _State:
    phi: Array
    logits: Array
    logits_lam: Array
    q: Array
    q_lam: Array


def run_regularized_ac(problem: BilevelProblem, config: RegularizedACConfig) -> Trace:
    """Run the single-loop regularised actor-critic; see the module docstring."""
    shape = (problem.mdp.n_states, problem.mdp.n_actions)
    zeros = [np.zeros(shape) for _ in range(4)]
    state = _State(problem.phi0.astype(np.float64), *zeros)
    critic_rng, rollout_rng = generators(config.seed, 2)
    horizon = config.horizon or horizon_for(problem.mdp.discount)

    def step(s: _State, k: int, counts: Counts) -> Array:
        tau_k = problem.tau + config.tau_extra * (k + 1.0) ** -config.tau_decay
        _critic_step(problem, config, s, tau_k, config.critic_lr * (k + 1.0) ** -config.critic_decay,
                     counts, critic_rng)
        _actor_step(problem, config, s, tau_k, config.actor_lr * (k + 1.0) ** -config.actor_decay, counts)
        grad = _upper_gradient(problem, config, s, counts, rollout_rng, horizon)
        s.phi = s.phi - config.phi_lr * (k + 1.0) ** -config.phi_decay * grad
        return s.phi

    return run_iterations(problem, config, "regularized_ac", state, step)


def _critic_step(
    problem: BilevelProblem,
    config: RegularizedACConfig,
    s: _State,
    tau_k: float,
    beta: float,
    counts: Counts,
    rng: np.random.Generator,
) -> None:
    mdp, reward = problem.mdp, problem.reward(s.phi)
    if config.variant == "exact":
        s.q = soft_evaluation_sweep(mdp, s.q, reward, s.logits, tau_k, beta)
        s.q_lam = soft_evaluation_sweep(mdp, s.q_lam, reward, s.logits_lam, tau_k, beta)
        counts.exact_calls += 2
        return
    next_states = sample_next_states(mdp, rng.random((mdp.n_states, mdp.n_actions)))
    counts.samples += next_states.size
    s.q = td_evaluation_sweep(mdp, s.q, reward, s.logits, tau_k, next_states, beta)
    s.q_lam = td_evaluation_sweep(mdp, s.q_lam, reward, s.logits_lam, tau_k, next_states, beta)


def _actor_step(
    problem: BilevelProblem, config: RegularizedACConfig, s: _State, tau_k: float, alpha: float, counts: Counts
) -> None:
    upper_natural = problem.upper.natural_grad(s.phi, softmax(s.logits_lam))
    counts.upper_calls += 1
    s.logits = centred(s.logits + alpha / tau_k * critic_advantage(s.q, s.logits, tau_k))
    lam_direction = critic_advantage(s.q_lam, s.logits_lam, tau_k) - upper_natural / config.lam
    s.logits_lam = centred(s.logits_lam + alpha / tau_k * lam_direction)


def _upper_gradient(
    problem: BilevelProblem,
    config: RegularizedACConfig,
    s: _State,
    counts: Counts,
    rng: np.random.Generator,
    horizon: int,
) -> Array:
    counts.upper_calls += 1
    if config.variant == "exact":
        counts.exact_calls += 2
        return penalty_gradient(problem, s.phi, config.lam, s.logits, s.logits_lam)
    policy_lam = softmax(s.logits_lam)
    uniforms = rng.random((config.n_rollouts, horizon, 2))
    term, used = sampled_penalty_term(
        problem.mdp, problem.reward.jacobian(s.phi), softmax(s.logits), policy_lam, uniforms, config.lam
    )
    counts.samples += used
    return problem.upper.grad_phi(s.phi, policy_lam) + term
