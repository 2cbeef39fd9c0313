"""Estimators of the λ-term λ ∇_φ[J_φ(π_A) − J_φ(π_B)]: each one's exact expectation and its sampled units.

The λ-term of the deep method ``bilevel`` is a difference of two nearly equal expectations; its estimators
differ in how tightly they couple A and B. Here every estimator has an exact counterpart (its expectation,
by linear algebra on the MDP) and a sampled one (independent *units*, each an unbiased draw of that
expectation, on explicit uniforms as in :mod:`~pref_brl.tabular.sampling`), so its bias against the
exact λ-term and its variance per transition can both be measured. Notation: g(s, a) = ∇_φ r_φ(s, a) (a
vector), V^π_H(s) = E^π[Σ_{t<H} γ^t g(s_t, a_t) | s_0 = s], Q^π_H likewise from (s, a), d^A the normalised
discounted occupancy of A, ρ the initial distribution. The exact λ-term is λ ρᵀ(V^A_∞ − V^B_∞).

- ``paired-rollouts`` (T): A and B from s_0 ∼ ρ for T steps on the same uniforms (common random numbers);
  expectation λ ρᵀ(V^A_T − V^B_T): exact as T → ∞, truncation bias O(γ^T).
- ``branch`` (H): start states s ∼ d^A (A's recent episodes), then A and B for H steps on the same uniforms;
  expectation λ d^Aᵀ(V^A_H − V^B_H). Even as H → ∞ this is not the λ-term: with Δ = V^A − V^B =
  (I − γP_A)^{-1} δ, δ(s) = Σ_a (π_A − π_B)(a|s) Q^B(s, a) (performance difference), the λ-term weighs
  the local differences δ by A's occupancy from ρ, and ``branch`` by A's occupancy from d^A, which is later
  in time and more mixed. The two agree when ρ is A's stationary distribution.
- ``branch-first-action`` (H): start states s ∼ d^A; the two branches differ in the first action only (A's
  versus B's on the same uniform), then both follow B for H − 1 steps on the same uniforms; the difference
  is scaled by (1 − γ)^{-1}. Expectation λ (1 − γ)^{-1} Σ_s d^A(s) Σ_a (π_A − π_B)(a|s) Q^B_H(s, a), which by
  the performance difference lemma (Kakade and Langford, "Approximately Optimal Approximate Reinforcement
  Learning", ICML 2002) is exactly the λ-term as H → ∞.
- ``shared-states``: states s ∼ d^A, one action of A and one of B on the same uniform; λ (1 − γ)^{-1}
  (g(s, a_A) − g(s, a_B)). Expectation λ (1 − γ)^{-1} Σ_s d^A(s) Σ_a (π_A − π_B)(a|s) g(s, a): the
  first-action branch with H = 1, i.e. Q^B replaced by the immediate g.
- ``likelihood-ratio`` (window w, clip c, episodes of L steps): on episodes of a behaviour policy β (A by
  default, or an earlier A' whose log-probabilities were stored), λ Σ_{t<L} γ^t (W^A_t − W^B_t) g(s_t, a_t)
  with W^π_t = Π_{k} min(π(a_k|s_k)/β(a_k|s_k), c) over the last w decisions k ≤ t (all since the episode's
  start when w = 0). For β = A, W^A = 1 and no env steps are spent beyond A's own episodes. Per-decision
  importance sampling (Precup, Sutton and Singh, "Eligibility Traces for Off-Policy Policy Evaluation",
  ICML 2000) makes E_β[W^π_t g(s_t, a_t)] = E_π[g(s_t, a_t)] exactly when w = 0 and c = ∞, so the
  expectation is λ ρᵀ(V^A_L − V^B_L). A window of w decisions replaces the state distribution at t by β's
  at t − w + 1; w = 1 is ``shared-states`` in expectation. Clipping each ratio at c (c ≥ 1, as in Retrace
  and V-trace) keeps the expectation linear: B's weighted policy becomes min(π_B, c β). The uncorrected
  variant (``correct_behaviour=False``) uses π_B/π_A on β's episodes, as if they were A's.

Units of ``paired-rollouts`` and ``branch`` cost 2T (2H) transitions each, ``likelihood-ratio`` units are
episodes of β of L transitions that the deep method has anyway.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pref_brl.tabular.mdp import TabularMDP, reward_gradient, state_occupancy
from pref_brl.tabular.sampling import Rollouts, horizon_for, inverse_cdf, rollout, trajectory_jacobian_sums

Array = np.ndarray
EstimatorName = Literal["paired-rollouts", "branch", "branch-first-action", "shared-states", "likelihood-ratio"]


@dataclass(frozen=True)
class TermInputs:
    """What every λ-term estimator sees: the MDP, g = ∇_φ r_φ (S, A, d), the policies A and B, and λ."""

    mdp: TabularMDP
    reward_jacobian: Array
    policy_a: Array
    policy_b: Array
    lam: float
    behaviour: Array | None = None
    """``likelihood-ratio``: the policy that played the episodes (None: A itself)."""
    correct_behaviour: bool = True
    """``likelihood-ratio`` with behaviour ≠ A: weigh A and B against it (True) or use π_B/π_A only (False)."""


@dataclass(frozen=True)
class EstimatorSettings:
    """One estimator and its settings (see the module docstring)."""

    name: EstimatorName = "paired-rollouts"
    horizon: int = 0
    """T of the pairs, H of the branches, L of the likelihood-ratio episodes; 0: the smallest with γ^H ≤ 1e-3."""
    window: int = 0
    """``likelihood-ratio``: decisions in each weight's product (0: all since the episode's start)."""
    clip: float = math.inf
    """``likelihood-ratio``: each ratio is clipped at c ≥ 1 (∞: no clipping)."""

    def __post_init__(self) -> None:
        if self.name not in ESTIMATORS:
            raise ValueError(f"unknown λ-term estimator {self.name!r}; choose from {', '.join(ESTIMATORS)}")
        if self.horizon < 0 or self.window < 0 or not self.clip >= 1.0:
            raise ValueError("need horizon >= 0, window >= 0 and clip >= 1")

    def steps(self, mdp: TabularMDP) -> int:
        """The horizon, resolved (``shared-states`` looks one step ahead)."""
        if self.name == "shared-states":
            return 1
        return self.horizon or horizon_for(mdp.discount)


def exact_term(inputs: TermInputs) -> Array:
    """The exact λ-term λ ∇_φ[J_φ(π_A) − J_φ(π_B)] (Eq. 11 of Gaur et al. for both policies)."""
    mdp, jac = inputs.mdp, inputs.reward_jacobian
    return inputs.lam * (reward_gradient(mdp, inputs.policy_a, jac) - reward_gradient(mdp, inputs.policy_b, jac))


def truncated_values(mdp: TabularMDP, start: Array, policy: Array, reward_jacobian: Array, horizon: int) -> Array:
    """startᵀ V^π_H: E[Σ_{t<H} γ^t g(s_t, a_t)] under π from s_0 ∼ start."""
    p_pi, marginal = mdp.state_transitions(policy), start
    per_state = np.einsum("sa,sad->sd", policy, reward_jacobian)
    total = np.zeros(reward_jacobian.shape[-1])
    for t in range(horizon):
        total += mdp.discount**t * (marginal @ per_state)
        marginal = marginal @ p_pi
    return total


def truncated_q(mdp: TabularMDP, policy: Array, reward_jacobian: Array, horizon: int) -> Array:
    """Q^π_H(s, a) = E[Σ_{t<H} γ^t g(s_t, a_t) | s_0 = s, a_0 = a], shape (S, A, d)."""
    q = np.zeros_like(reward_jacobian)
    for _ in range(horizon):
        v = np.einsum("sa,sad->sd", policy, q)
        q = reward_jacobian + mdp.discount * np.einsum("sat,td->sad", mdp.transitions, v)
    return q


def _paired_expected(inputs: TermInputs, settings: EstimatorSettings) -> Array:
    mdp, jac, horizon = inputs.mdp, inputs.reward_jacobian, settings.steps(inputs.mdp)
    a_sum = truncated_values(mdp, mdp.initial, inputs.policy_a, jac, horizon)
    return inputs.lam * (a_sum - truncated_values(mdp, mdp.initial, inputs.policy_b, jac, horizon))


def _branch_expected(inputs: TermInputs, settings: EstimatorSettings) -> Array:
    mdp, jac, horizon = inputs.mdp, inputs.reward_jacobian, settings.steps(inputs.mdp)
    start = state_occupancy(mdp, inputs.policy_a)
    a_sum = truncated_values(mdp, start, inputs.policy_a, jac, horizon)
    return inputs.lam * (a_sum - truncated_values(mdp, start, inputs.policy_b, jac, horizon))


def _first_action_expected(inputs: TermInputs, settings: EstimatorSettings) -> Array:
    mdp = inputs.mdp
    q_b = truncated_q(mdp, inputs.policy_b, inputs.reward_jacobian, settings.steps(mdp))
    gap = np.einsum("sa,sad->sd", inputs.policy_a - inputs.policy_b, q_b)
    return inputs.lam * (state_occupancy(mdp, inputs.policy_a) @ gap) / (1.0 - mdp.discount)


def lr_ratio_tables(inputs: TermInputs, clip: float) -> tuple[Array, Array, Array]:
    """(β, A's clipped ratio table, B's clipped ratio table) of ``likelihood-ratio``; ratios per (s, a)."""
    policy_a, policy_b = inputs.policy_a, inputs.policy_b
    behaviour = policy_a if inputs.behaviour is None else inputs.behaviour
    if inputs.correct_behaviour:
        return behaviour, np.minimum(policy_a / behaviour, clip), np.minimum(policy_b / behaviour, clip)
    return behaviour, np.minimum(behaviour / behaviour, clip), np.minimum(policy_b / policy_a, clip)


def weighted_values(mdp: TabularMDP, behaviour: Array, ratio: Array, reward_jacobian: Array, length: int,
                    window: int) -> Array:
    """Σ_{t<L} γ^t E_β[W_t g(s_t, a_t)], W_t the product of ``ratio`` over the last ``window`` decisions."""
    weighted = behaviour * ratio  # min(π, c β): the sub-stochastic policy that the weights turn β into
    p_weighted, p_behaviour = mdp.state_transitions(weighted), mdp.state_transitions(behaviour)
    per_state = np.einsum("sa,sad->sd", weighted, reward_jacobian)
    total = np.zeros(reward_jacobian.shape[-1])
    if window == 0 or window >= length:  # one product since the start: propagate the weighted measure
        measure = mdp.initial
        for t in range(length):
            total += mdp.discount**t * (measure @ per_state)
            measure = measure @ p_weighted
        return total
    marginals = [mdp.initial]  # β's state distribution at t, unweighted
    for _ in range(length - window):
        marginals.append(marginals[-1] @ p_behaviour)
    for t in range(length):
        start = max(0, t - window + 1)  # the window's first decision; β's marginal there
        measure = marginals[start]
        for _ in range(t - start):
            measure = measure @ p_weighted
        total += mdp.discount**t * (measure @ per_state)
    return total


def _lr_expected(inputs: TermInputs, settings: EstimatorSettings) -> Array:
    behaviour, ratio_a, ratio_b = lr_ratio_tables(inputs, settings.clip)
    mdp, jac, length = inputs.mdp, inputs.reward_jacobian, settings.steps(inputs.mdp)
    a_sum = weighted_values(mdp, behaviour, ratio_a, jac, length, settings.window)
    return inputs.lam * (a_sum - weighted_values(mdp, behaviour, ratio_b, jac, length, settings.window))


def _start_states(inputs: TermInputs, uniforms: Array) -> Array:
    """s ∼ d^A from the first state uniform of each unit."""
    return inverse_cdf(np.cumsum(state_occupancy(inputs.mdp, inputs.policy_a)), uniforms[:, 0, 0])


def _gap(inputs: TermInputs, first: Rollouts, second: Rollouts, scale: float = 1.0) -> Array:
    jac, gamma = inputs.reward_jacobian, inputs.mdp.discount
    sums = trajectory_jacobian_sums(first, jac, gamma) - trajectory_jacobian_sums(second, jac, gamma)
    return inputs.lam * scale * sums


def _paired_units(inputs: TermInputs, settings: EstimatorSettings, uniforms: Array) -> Array:
    mdp = inputs.mdp
    return _gap(inputs, rollout(mdp, inputs.policy_a, uniforms), rollout(mdp, inputs.policy_b, uniforms))


def _branch_units(inputs: TermInputs, settings: EstimatorSettings, uniforms: Array) -> Array:
    mdp, start = inputs.mdp, _start_states(inputs, uniforms)
    return _gap(inputs, rollout(mdp, inputs.policy_a, uniforms, start),
                rollout(mdp, inputs.policy_b, uniforms, start))


def _first_action_units(inputs: TermInputs, settings: EstimatorSettings, uniforms: Array) -> Array:
    mdp, start = inputs.mdp, _start_states(inputs, uniforms)
    action_a = inverse_cdf(np.cumsum(inputs.policy_a, axis=-1)[start], uniforms[:, 0, 1])
    action_b = inverse_cdf(np.cumsum(inputs.policy_b, axis=-1)[start], uniforms[:, 0, 1])
    return _gap(inputs, rollout(mdp, inputs.policy_b, uniforms, start, action_a),
                rollout(mdp, inputs.policy_b, uniforms, start, action_b), 1.0 / (1.0 - mdp.discount))


def _lr_units(inputs: TermInputs, settings: EstimatorSettings, uniforms: Array) -> Array:
    behaviour, ratio_a, ratio_b = lr_ratio_tables(inputs, settings.clip)
    episodes = rollout(inputs.mdp, behaviour, uniforms)
    s, a = episodes.states, episodes.actions
    weights = windowed_products(np.log(ratio_a[s, a]), settings.window) - windowed_products(
        np.log(ratio_b[s, a]), settings.window)
    discounts = inputs.mdp.discount ** np.arange(s.shape[1])
    return inputs.lam * np.einsum("t,nt,ntd->nd", discounts, weights, inputs.reward_jacobian[s, a])


def windowed_products(log_ratios: Array, window: int) -> Array:
    """W_t = exp Σ_{k = t−w+1..t} log ρ_k per row (w = 0: all k ≤ t), for (N, L) log-ratios."""
    sums = np.cumsum(log_ratios, axis=1)
    if 0 < window < log_ratios.shape[1]:
        sums[:, window:] -= sums[:, :-window].copy()
    return np.exp(sums)


Expected = Callable[[TermInputs, EstimatorSettings], Array]
Units = Callable[[TermInputs, EstimatorSettings, Array], Array]

TABLE: dict[str, tuple[Expected, Units]] = {
    "paired-rollouts": (_paired_expected, _paired_units),
    "branch": (_branch_expected, _branch_units),
    "branch-first-action": (_first_action_expected, _first_action_units),
    "shared-states": (_first_action_expected, _first_action_units),
    "likelihood-ratio": (_lr_expected, _lr_units),
}
"""Estimator name -> (exact expectation, sampled units); ``shared-states`` is the first-action branch with H = 1."""
ESTIMATORS: tuple[str, ...] = tuple(TABLE)


def expected_term(inputs: TermInputs, settings: EstimatorSettings) -> Array:
    """The exact expectation of the estimator ``settings`` (λ included)."""
    return TABLE[settings.name][0](inputs, settings)


def sampled_units(inputs: TermInputs, settings: EstimatorSettings, uniforms: Array) -> Array:
    """One estimate per unit (pair, branch or episode), shape (N, d), from ``uniforms`` (N, steps, 2)."""
    if uniforms.ndim != 3 or uniforms.shape[1:] != (settings.steps(inputs.mdp), 2):
        raise ValueError(f"need uniforms of shape (N, {settings.steps(inputs.mdp)}, 2), got {uniforms.shape}")
    return TABLE[settings.name][1](inputs, settings, uniforms)


def transitions_per_unit(settings: EstimatorSettings, mdp: TabularMDP) -> int:
    """Transitions one unit draws: two rollouts of the horizon, or one episode of β (``likelihood-ratio``)."""
    steps = settings.steps(mdp)
    return steps if settings.name == "likelihood-ratio" else 2 * steps
