"""Method ``resync``: the exact twin of the deep method ``bilevel`` (version 2), one round per iteration.

Per round, at the current reward φ:

1. A is the exact soft-optimal policy θ_A = θ*(φ) (soft policy iteration, warm-started).
2. Re-sync: θ_B ← θ_A, bit for bit, with a fresh Adam state.
3. K_B Adam steps of B on  ḡ(θ) + κ Ψ_f(θ) + β E_{s∼d^{π_A}} KL(π_θ(·|s) ‖ π_A(·|s)),  κ = 1/λ̃, where
   ḡ = −(1 − γ) J_τ is the lower loss per step (the scale of SAC's actor loss; its gradient is exact) and
   Ψ_f(θ) = Σ_{s,a} π_A(a|s) max(c ρ, c clip(ρ, 1 − ε, 1 + ε)), ρ = π_θ(a|s)/π_A(a|s), is PPO's two-sided
   clipped surrogate of f's θ-dependence with the fixed weights c(s, a) = G(s, a) − Σ_b π_A(b|s) G(s, b),
   G = ∂f/∂π at π_A (computed before the reward update). At θ = θ_A its gradient is exactly ∇_θ f; for
   occupancy losses c = d^{π_A}(s) A_u(s, a), the advantage of the per-step label cost u = ∂f/∂d, i.e. the
   surrogate over stored actions a ∼ π_A at states s ∼ d^{π_A} with perfect credit assignment. β adapts
   after every ``kl_every``-th step: β ← 2β if KL > 1.5 δ, β ← β/2 if KL < δ/1.5 (adaptive-KL PPO).
4. Paired A/B rollouts of T_pair steps on common random numbers (``sampling.rollout``), or, in the
   ``exact`` variant, their exact expectation.
5. The estimate  ∇_φ f(φ, π_A) + λ [mean_A Σ_t γ^t ∇_φ r_φ(s_t, a_t) − mean_B Σ_t γ^t ∇_φ r_φ(s_t, a_t)].

Steps 4–5 are the ``paired-rollouts`` estimator of the λ-term; ``estimator`` chooses another one of
:mod:`~pref_brl.tabular.lambda_terms` (``branch``, ``branch-first-action``, ``shared-states``,
``likelihood-ratio``), each with its exact expectation (``exact``) and its sampled units (``sampled``).

Scaling: minimising ḡ + κ f is minimising f + (1 − γ) λ̃ g with g = −J_τ, so B targets the lab's θ_λ with
λ = (1 − γ) λ̃, and that λ multiplies the λ-term (the deep method's convention, ``--penalty-weight`` λ̃).
With β → 0, K_B → ∞ and no clip binding, B minimises ḡ + κ (the linearisation of f at π_A), and the
λ-term agrees with the one of ∇L*_λ (``proxy.penalty_point``) to first order in 1/λ.

The ``sampled`` variant samples only the rollouts of step 4; θ_A and B's inner steps use exact
lower-level gradients, so its runs spend exact calls as well as samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pref_brl.tabular.common import Counts, MethodConfig, Trace, generators, run_iterations
from pref_brl.tabular.lambda_terms import (
    EstimatorName,
    EstimatorSettings,
    TermInputs,
    expected_term,
    sampled_units,
    transitions_per_unit,
)
from pref_brl.tabular.mdp import log_softmax, soft_policy_gradient, softmax, state_occupancy
from pref_brl.tabular.problem import BilevelProblem, lower_solution

Array = np.ndarray

KL_COEF_RANGE = (1e-8, 1e8)
"""β is kept in this range (it halves or doubles at every adaptation, and would otherwise under- or overflow)."""
ADAM_BETAS = (0.9, 0.999)
"""Adam's moment decay rates for B's inner steps (PyTorch's defaults)."""
ADAM_EPS = 1e-12
"""Adam's ε; small, so that rarely visited states (tiny gradients) still move at the full step."""


@dataclass
class ResyncConfig(MethodConfig):
    """Settings of the re-sync twin of the deep ``bilevel`` method (one iteration is one round)."""

    penalty_weight: float = 10.0
    """λ̃: κ = 1/λ̃ weighs f in B's loss and λ = (1 − γ) λ̃ multiplies the λ-term."""
    b_steps: int = 1000
    """K_B: Adam steps of B per round, from the re-synced θ_B = θ_A."""
    b_lr: float = 0.01
    """Adam step size of B's inner steps (logits)."""
    kl_target: float = 0.02
    """δ: the adaptive β keeps E_{s∼d^{π_A}} KL(π_B ‖ π_A) near δ."""
    kl_coef: float = 100.0
    """Initial β of each round's inner solve (high: B starts anchored to A and β relaxes as needed)."""
    kl_every: int = 20
    """β is adapted after every ``kl_every``-th inner step (slower than Adam's ~10-step lag)."""
    clip: float = 0.2
    """ε of the two-sided clip of the ratio ρ in Ψ_f."""
    pair_horizon: int = 0
    """T_pair: length of each paired A/B rollout; 0 picks H with γ^H ≤ 1e-3."""
    n_pairs: int = 64
    """Paired A/B rollouts per round (sampled variant)."""
    penalty_steps: int = 1
    """φ steps per round with that round's rollouts and policies fixed."""
    estimator: EstimatorName = "paired-rollouts"
    """The λ-term's estimator (``lambda_terms``); ``n_pairs`` counts its units (pairs, branches, episodes)."""
    estimator_horizon: int = 0
    """H of ``branch`` / ``branch-first-action``, L of ``likelihood-ratio``'s episodes; 0: γ^H ≤ 1e-3."""
    lr_window: int = 0
    """``likelihood-ratio``: ratios in each weight's product (0: all since the episode's start)."""
    lr_clip: float = math.inf
    """``likelihood-ratio``: per-decision ratio clip c ≥ 1 (∞: none)."""

    def estimator_settings(self) -> EstimatorSettings:
        """The λ-term estimator these settings choose (``paired-rollouts`` uses ``pair_horizon``)."""
        horizon = self.pair_horizon if self.estimator == "paired-rollouts" else self.estimator_horizon
        return EstimatorSettings(self.estimator, horizon, self.lr_window, self.lr_clip)

    def __post_init__(self) -> None:
        if self.penalty_weight <= 0.0 or self.kl_target <= 0.0 or self.clip <= 0.0:
            raise ValueError("need penalty_weight > 0, kl_target > 0 and clip > 0")
        if self.b_steps < 0 or min(self.n_pairs, self.penalty_steps, self.kl_every) < 1:
            raise ValueError("need b_steps >= 0 and n_pairs, penalty_steps, kl_every >= 1")
        if self.estimator_horizon < 0 or self.lr_window < 0 or not self.lr_clip >= 1.0:
            raise ValueError("need estimator_horizon >= 0, lr_window >= 0 and lr_clip >= 1")
        self.estimator_settings()  # raises for an unknown estimator


def penalty_lambda(problem: BilevelProblem, penalty_weight: float) -> float:
    """λ = (1 − γ) λ̃: the lab's λ (of ∇L*_λ) that B's inner problem targets."""
    return (1.0 - problem.mdp.discount) * penalty_weight


def surrogate_weights(problem: BilevelProblem, phi: Array, policy_a: Array) -> Array:
    """c(s, a) = G − Σ_b π_A G, G = ∂f/∂π at π_A: Ψ_f's fixed per-step weights (the centred 'losses')."""
    grad = problem.upper.grad_policy(phi, policy_a)
    return grad - (policy_a * grad).sum(axis=-1, keepdims=True)


def clipped_surrogate(weights: Array, policy_a: Array, logits: Array, clip: float) -> tuple[float, Array]:
    """Ψ_f(θ) = Σ π_A max(c ρ, c clip(ρ, 1 − ε, 1 + ε)) and its gradient in the logits θ."""
    ratio = softmax(logits) / policy_a
    plain, clipped = weights * ratio, weights * np.clip(ratio, 1.0 - clip, 1.0 + clip)
    value = float((policy_a * np.maximum(plain, clipped)).sum())
    d_ratio = policy_a * weights * (plain >= clipped)  # ∂Ψ/∂ρ: zero where the clip binds
    return value, ratio_to_logits(d_ratio, ratio, softmax(logits))


def ratio_to_logits(d_ratio: Array, ratio: Array, policy: Array) -> Array:
    """Chain rule ∂ρ(a)/∂θ(a′) = ρ(a)(δ_{aa′} − π_θ(a′)), per state."""
    weighted = d_ratio * ratio
    return weighted - policy * weighted.sum(axis=-1, keepdims=True)


def anchored_kl(state_weights: Array, policy_a: Array, logits: Array) -> tuple[float, Array]:
    """E_{s∼w} KL(π_θ(·|s) ‖ π_A(·|s)) and its gradient in the logits θ."""
    log_pi = log_softmax(logits)
    policy, log_ratio = np.exp(log_pi), log_pi - np.log(policy_a)
    per_state = (policy * log_ratio).sum(axis=-1)
    grad = state_weights[:, None] * policy * (log_ratio - per_state[:, None])
    return float(state_weights @ per_state), grad


def lower_loss_gradient(problem: BilevelProblem, reward: Array, logits: Array) -> Array:
    """∇_θ ḡ with ḡ = −(1 − γ) J_τ: −d^π(s) π(a|s) A_τ(s, a) (Eq. 12, exact)."""
    return -(1.0 - problem.mdp.discount) * soft_policy_gradient(problem.mdp, reward, logits, problem.tau)


@dataclass
class _Adam:
    lr: float
    m: Array
    v: Array
    t: int = 0

    def step(self, grad: Array) -> Array:
        """The Adam update (to subtract) for ``grad``."""
        b1, b2 = ADAM_BETAS
        self.t += 1
        self.m = b1 * self.m + (1.0 - b1) * grad
        self.v = b2 * self.v + (1.0 - b2) * grad * grad
        m_hat, v_hat = self.m / (1.0 - b1**self.t), self.v / (1.0 - b2**self.t)
        return self.lr * m_hat / (np.sqrt(v_hat) + ADAM_EPS)


@dataclass(frozen=True)
class InnerSolve:
    """B after its K_B inner steps: logits, and the KL and β after every step (index 0: at the re-sync)."""

    logits: Array
    kls: Array
    kl_coefs: Array


def adapt_kl_coef(kl_coef: float, kl: float, target: float) -> float:
    """Adaptive-KL PPO: double β above 1.5 δ, halve it below δ/1.5 (kept within ``KL_COEF_RANGE``)."""
    if kl > 1.5 * target:
        kl_coef *= 2.0
    elif kl < target / 1.5:
        kl_coef /= 2.0
    return float(np.clip(kl_coef, *KL_COEF_RANGE))


def solve_b(problem: BilevelProblem, phi: Array, logits_a: Array, config: ResyncConfig,
            counts: Counts | None = None) -> InnerSolve:
    """Re-sync θ_B ← θ_A, then K_B Adam steps on ḡ + κ Ψ_f + β KL with adaptive β; see the module doc."""
    counts = Counts() if counts is None else counts
    policy_a, reward = softmax(logits_a), problem.reward(phi)
    weights = surrogate_weights(problem, phi, policy_a)
    d_a = state_occupancy(problem.mdp, policy_a)
    counts.exact_calls, counts.upper_calls = counts.exact_calls + 1, counts.upper_calls + 1
    logits, kappa, kl_coef = logits_a.copy(), 1.0 / config.penalty_weight, config.kl_coef
    adam = _Adam(config.b_lr, np.zeros_like(logits), np.zeros_like(logits))
    kls, kl_coefs = [0.0], [kl_coef]
    kl_grad = np.zeros_like(logits)
    for step in range(1, config.b_steps + 1):
        grad = lower_loss_gradient(problem, reward, logits)
        grad = grad + kappa * clipped_surrogate(weights, policy_a, logits, config.clip)[1] + kl_coef * kl_grad
        logits = logits - adam.step(grad)
        kl, kl_grad = anchored_kl(d_a, policy_a, logits)
        if step % config.kl_every == 0:
            kl_coef = adapt_kl_coef(kl_coef, kl, config.kl_target)
        kls.append(kl)
        kl_coefs.append(kl_coef)
    counts.exact_calls += 2 * config.b_steps  # one policy evaluation and one occupancy per step
    return InnerSolve(logits, np.array(kls), np.array(kl_coefs))


@dataclass(frozen=True)
class Round:
    """One round's policies (A and the inner-solved B) and what the λ-term needs."""

    policy_a: Array
    policy_b: Array
    inner: InnerSolve
    lam: float
    horizon: int
    """Steps per unit of the estimator (T_pair for paired rollouts); ``uniforms`` have shape (N, horizon, 2)."""
    settings: EstimatorSettings = EstimatorSettings()

    def inputs(self, problem: BilevelProblem, phi: Array) -> TermInputs:
        """What the λ-term's estimators see at reward φ."""
        return TermInputs(problem.mdp, problem.reward.jacobian(phi), self.policy_a, self.policy_b, self.lam)

    def expected_term(self, problem: BilevelProblem, phi: Array) -> Array:
        """The estimator's exact expectation (paired rollouts: λ (E[A's sum] − E[B's sum]), truncated at T_pair)."""
        return expected_term(self.inputs(problem, phi), self.settings)

    def sampled_term(self, problem: BilevelProblem, phi: Array, uniforms: Array) -> Array:
        """The mean over units on ``uniforms`` (N, horizon, 2) (paired rollouts: λ (mean_A − mean_B), CRN)."""
        return sampled_units(self.inputs(problem, phi), self.settings, uniforms).mean(axis=0)


def play_round(problem: BilevelProblem, phi: Array, config: ResyncConfig, counts: Counts | None = None,
               q0: Array | None = None) -> tuple[Round, Array]:
    """Steps 1–3 of a round at φ: θ_A = θ*(φ), re-sync, B's inner solve. Also returns Q* (a warm start)."""
    counts = Counts() if counts is None else counts
    solution = lower_solution(problem, phi, q0=q0)
    counts.exact_calls += solution.sweeps
    inner = solve_b(problem, phi, solution.logits, config, counts)
    settings = config.estimator_settings()
    lam = penalty_lambda(problem, config.penalty_weight)
    return Round(solution.policy, softmax(inner.logits), inner, lam, settings.steps(problem.mdp), settings), solution.q


@dataclass(frozen=True)
class ResyncEstimate:
    """The twin's hypergradient estimate at one φ, its expectation, each round's estimate, B's last KL and β."""

    estimate: Array
    expected: Array
    rounds: Array
    """One estimate per repetition, shape (R, d) (sampled variant; empty for the exact variant)."""
    kl: float
    kl_coef: float


def resync_gradient(problem: BilevelProblem, phi: Array, config: ResyncConfig, repetitions: int = 1) -> ResyncEstimate:
    """The twin's estimate ∇_φ f(φ, π_A) + λ-term at φ, and its expectation over the rollouts.

    ``sampled``: the estimate averages ``repetitions`` independent rounds of ``n_pairs`` paired rollouts each
    (B's inner solve is deterministic, so only the rollouts differ between rounds); ``exact``: the estimate
    is the expectation itself.
    """
    phi = np.asarray(phi, dtype=np.float64)
    current, _ = play_round(problem, phi, config)
    upper = problem.upper.grad_phi(phi, current.policy_a)
    expected = upper + current.expected_term(problem, phi)
    rounds = np.zeros((0, problem.dim))
    if config.variant == "sampled":
        (rng,) = generators(config.seed, 1)
        rounds = upper + np.array([current.sampled_term(problem, phi, rng.random((config.n_pairs, current.horizon, 2)))
                                   for _ in range(repetitions)])
    estimate = rounds.mean(axis=0) if len(rounds) else expected
    inner = current.inner
    return ResyncEstimate(estimate, expected, rounds, float(inner.kls[-1]), float(inner.kl_coefs[-1]))


@dataclass
class _State:
    phi: Array
    rng: np.random.Generator
    q: Array | None = None


def run_resync(problem: BilevelProblem, config: ResyncConfig) -> Trace:
    """Run the twin: per round (one iteration) steps 1–4, then ``penalty_steps`` φ steps with step 5."""
    (rng,) = generators(config.seed, 1)
    state = _State(problem.phi0.astype(np.float64), rng)

    def step(s: _State, k: int, counts: Counts) -> Array:
        current, s.q = play_round(problem, s.phi, config, counts, s.q)
        uniforms = None
        if config.variant == "sampled":
            uniforms = s.rng.random((config.n_pairs, current.horizon, 2))
            counts.samples += config.n_pairs * transitions_per_unit(current.settings, problem.mdp)
        else:
            counts.exact_calls += 2 * current.horizon  # one propagation of each state marginal per step
        for _ in range(config.penalty_steps):
            term = (current.expected_term(problem, s.phi) if uniforms is None
                    else current.sampled_term(problem, s.phi, uniforms))
            counts.upper_calls += 1
            s.phi = s.phi - config.phi_lr * (problem.upper.grad_phi(s.phi, current.policy_a) + term)
        return s.phi

    return run_iterations(problem, config, "resync", state, step)
