"""What every tabular bilevel method shares: its settings, its cost counters and the trace it returns.

Costs are counted in three currencies, never mixed:
* ``samples`` — environment transitions drawn to estimate lower-level (RL) quantities;
* ``exact_calls`` — exact lower-level model calls (one Bellman sweep, one policy evaluation, one
  occupancy, one adjoint sweep — each uses P once);
* ``upper_calls`` — evaluations of the upper oracle (f's value or one of its gradients).
The evaluation of F(φ_k) and ‖∇F(φ_k)‖ recorded in the trace is the experimenter's, and is not charged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np

from pref_brl.tabular.mdp import log_softmax, soft_bellman
from pref_brl.tabular.problem import BilevelProblem, Evaluator
from pref_brl.tabular.sampling import sample_next_states, soft_q_sweep

Array = np.ndarray
Variant = Literal["exact", "sampled"]


@dataclass
class MethodConfig:
    """Settings every method shares."""

    iterations: int = 200
    """Number of upper (φ) updates."""
    phi_lr: float = 1.0
    """Step size of the φ update."""
    variant: Variant = "exact"
    """``exact``: lower-level quantities from the model; ``sampled``: from sampled transitions."""
    seed: int = 0
    """Seed of the method's random generators (sampled variant)."""


@dataclass
class Counts:
    """Cumulative cost of a run (see the module docstring for the three currencies)."""

    samples: int = 0
    exact_calls: int = 0
    upper_calls: int = 0


@dataclass(frozen=True)
class Trace:
    """A run: iterates φ_k, exact F(φ_k) and ‖∇F(φ_k)‖, and cumulative costs, for k = 0..K."""

    method: str
    variant: str
    phis: Array
    values: Array
    grad_norms: Array
    samples: Array
    exact_calls: Array
    upper_calls: Array

    @property
    def label(self) -> str:
        return f"{self.method}/{self.variant}"

    @property
    def cost(self) -> Array:
        """The cost axis of this run: samples for sampled variants, exact calls otherwise."""
        return self.samples if self.variant == "sampled" else self.exact_calls


@dataclass
class _Recorder:
    evaluator: Evaluator
    rows: list[tuple[Array, float, float, int, int, int]] = field(default_factory=list)

    def record(self, phi: Array, counts: Counts) -> None:
        value, grad_norm = self.evaluator(phi)
        self.rows.append((phi.copy(), value, grad_norm, counts.samples, counts.exact_calls, counts.upper_calls))

    def trace(self, method: str, variant: str) -> Trace:
        phis, values, norms, samples, exact, upper = zip(*self.rows, strict=True)
        return Trace(
            method,
            variant,
            np.array(phis),
            np.array(values),
            np.array(norms),
            np.array(samples),
            np.array(exact),
            np.array(upper),
        )


State = TypeVar("State")


def run_iterations(
    problem: BilevelProblem,
    config: MethodConfig,
    method: str,
    state: State,
    step: Callable[[State, int, Counts], Array],
) -> Trace:
    """The shared outer loop: ``step(state, k, counts)`` advances the state and returns the new φ."""
    recorder, counts = _Recorder(Evaluator(problem)), Counts()
    recorder.record(np.asarray(problem.phi0, dtype=np.float64), counts)
    for k in range(config.iterations):
        phi = step(state, k, counts)
        if not np.all(np.isfinite(phi)):
            raise FloatingPointError(f"{method}/{config.variant} diverged at iteration {k}")
        recorder.record(phi, counts)
    return recorder.trace(method, config.variant)


def critic_advantage(q: Array, logits: Array, tau: float) -> Array:
    """Â(s, a) = Q̂(s, a) − τ log π(a|s) − Σ_b π(b|s)(Q̂(s, b) − τ log π(b|s)) from a critic Q̂."""
    log_pi = log_softmax(logits)
    soft_q = q - tau * log_pi
    return soft_q - (np.exp(log_pi) * soft_q).sum(axis=-1, keepdims=True)


def generators(seed: int, n: int) -> list[np.random.Generator]:
    """``n`` independent generators derived from one seed (one per random component)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def centred(logits: Array) -> Array:
    """Logits with zero mean per state (the same policy, no drift)."""
    return logits - logits.mean(axis=-1, keepdims=True)


def track_soft_optimum(
    problem: BilevelProblem,
    phi: Array,
    q: Array,
    sweeps: int,
    config: MethodConfig,
    q_lr: float,
    counts: Counts,
    rng: np.random.Generator,
) -> Array:
    """Warm-started lower solver: ``sweeps`` soft Bellman sweeps (exact) or sampled soft Q-learning sweeps."""
    mdp, reward = problem.mdp, problem.reward(phi)
    for _ in range(sweeps):
        if config.variant == "exact":
            q = soft_bellman(mdp, reward, q, problem.tau)
            counts.exact_calls += 1
        else:
            next_states = sample_next_states(mdp, rng.random((mdp.n_states, mdp.n_actions)))
            q = soft_q_sweep(mdp, q, reward, problem.tau, next_states, q_lr)
            counts.samples += next_states.size
    return q
