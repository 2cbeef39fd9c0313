"""Method ``penalty`` (Gaur et al. (2025), F2BA double loop): T inner steps for θ and θ_λ, then one φ step (Eq. 10).

Per outer iteration: T natural policy-gradient steps for θ on g = −J_τ and for θ_λ on f + λ g (warm-started
from the previous iteration), then φ ← φ − η [∇_φ f(φ, θ_λ) + λ (∇_φ J(φ, θ) − ∇_φ J(φ, θ_λ))].
With ``inner_solve`` (exact variant) both inner problems are instead solved to a tolerance every time, so
the step is the exact gradient of L*_λ.

* ``exact``: soft advantages from exact policy evaluation, ∇_φ J from exact occupancies (Eq. 11).
* ``sampled``: each inner step updates two critics by one sampled soft expected-SARSA sweep (one s′ per
  (s, a), shared by both critics — common random numbers) and takes the actor step from the critics'
  advantages; the λ-term is Eq. 13: N rollouts of each policy on the same uniforms.
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
from pref_brl.tabular.mdp import softmax
from pref_brl.tabular.problem import BilevelProblem
from pref_brl.tabular.proxy import natural_direction, penalty_gradient, solve_policy_counted
from pref_brl.tabular.sampling import (
    horizon_for,
    sample_next_states,
    sampled_penalty_term,
    td_evaluation_sweep,
)

Array = np.ndarray


@dataclass
class PenaltyConfig(MethodConfig):
    """Settings of the penalty method."""

    lam: float = 20.0
    """Penalty weight λ; the bias of ∇L*_λ against ∇F is O(1/λ)."""
    inner_steps: int = 5
    """T: natural policy-gradient steps per outer iteration, for each of θ and θ_λ."""
    inner_lr: float = 0.5
    """Inner step in units of 1/τ (1.0 with no f is soft policy iteration)."""
    critic_lr: float = 0.5
    """Critic step of the sampled variant."""
    n_rollouts: int = 16
    """Rollouts per policy for the sampled λ-term (Eq. 13)."""
    horizon: int = 0
    """Rollout length; 0 picks H with γ^H ≤ 1e-3."""
    inner_solve: bool = False
    """Exact variant only: solve both inner problems to ``inner_tol`` every outer step instead of T steps."""
    inner_tol: float = 1e-9
    """Natural-residual tolerance of the exact inner solves."""

    def __post_init__(self) -> None:
        if self.inner_solve and self.variant != "exact":
            raise ValueError("inner_solve needs the exact variant (the sampled one takes T critic/actor steps)")


@dataclass
class _State:
    phi: Array
    logits: Array
    logits_lam: Array
    q: Array
    q_lam: Array


def run_penalty(problem: BilevelProblem, config: PenaltyConfig) -> Trace:
    """Run the penalty method; see the module docstring."""
    shape = (problem.mdp.n_states, problem.mdp.n_actions)
    state = _State(problem.phi0.astype(np.float64), np.zeros(shape), np.zeros(shape), np.zeros(shape),
                   np.zeros(shape))
    critic_rng, rollout_rng = generators(config.seed, 2)
    horizon = config.horizon or horizon_for(problem.mdp.discount)

    def step(s: _State, k: int, counts: Counts) -> Array:
        if config.variant == "exact":
            _exact_inner(problem, config, s, counts)
            counts.exact_calls += 2
            grad = penalty_gradient(problem, s.phi, config.lam, s.logits, s.logits_lam)
        else:
            _sampled_inner(problem, config, s, counts, critic_rng)
            grad = _sampled_gradient(problem, config, s, counts, rollout_rng, horizon)
        counts.upper_calls += 1
        s.phi = s.phi - config.phi_lr * grad
        return s.phi

    return run_iterations(problem, config, "penalty", state, step)


def _exact_inner(problem: BilevelProblem, config: PenaltyConfig, s: _State, counts: Counts) -> None:
    if config.inner_solve:
        s.logits, used = solve_policy_counted(problem, s.phi, None, s.logits, config.inner_tol)
        s.logits_lam, used_lam = solve_policy_counted(problem, s.phi, config.lam, s.logits_lam, config.inner_tol)
        counts.exact_calls += used + used_lam
        counts.upper_calls += used_lam
        return
    lr = config.inner_lr / problem.tau
    for _ in range(config.inner_steps):
        s.logits = centred(s.logits + lr * natural_direction(problem, s.phi, s.logits, None))
        s.logits_lam = centred(s.logits_lam + lr * natural_direction(problem, s.phi, s.logits_lam, config.lam))
        counts.exact_calls += 2
        counts.upper_calls += 1


def _sampled_inner(
    problem: BilevelProblem, config: PenaltyConfig, s: _State, counts: Counts, rng: np.random.Generator
) -> None:
    mdp, tau, lr = problem.mdp, problem.tau, config.inner_lr / problem.tau
    reward = problem.reward(s.phi)
    for _ in range(config.inner_steps):
        next_states = sample_next_states(mdp, rng.random((mdp.n_states, mdp.n_actions)))
        counts.samples += next_states.size
        s.q = td_evaluation_sweep(mdp, s.q, reward, s.logits, tau, next_states, config.critic_lr)
        s.q_lam = td_evaluation_sweep(mdp, s.q_lam, reward, s.logits_lam, tau, next_states, config.critic_lr)
        upper_natural = problem.upper.natural_grad(s.phi, softmax(s.logits_lam))
        counts.upper_calls += 1
        s.logits = centred(s.logits + lr * critic_advantage(s.q, s.logits, tau))
        lam_direction = critic_advantage(s.q_lam, s.logits_lam, tau) - upper_natural / config.lam
        s.logits_lam = centred(s.logits_lam + lr * lam_direction)


def _sampled_gradient(
    problem: BilevelProblem,
    config: PenaltyConfig,
    s: _State,
    counts: Counts,
    rng: np.random.Generator,
    horizon: int,
) -> Array:
    policy_lam = softmax(s.logits_lam)
    uniforms = rng.random((config.n_rollouts, horizon, 2))
    term, used = sampled_penalty_term(
        problem.mdp, problem.reward.jacobian(s.phi), softmax(s.logits), policy_lam, uniforms, config.lam
    )
    counts.samples += used
    return problem.upper.grad_phi(s.phi, policy_lam) + term
