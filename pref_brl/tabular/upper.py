"""Upper losses f(φ, π): value, ∂f/∂φ (direct), ∂f/∂π (policy-table entries as free variables).

Every loss also gives its policy gradient in *natural* coordinates,
  N_f(s, ·) = (1 − γ) (G(s, ·) − Σ_b π(b|s) G(s, b)) / d^π(s),   G = ∂f/∂π,
which is what the natural policy-gradient steps of the penalised policy θ_λ use (see ``proxy.py``). For
losses that depend on π only through the occupancy d^π the 1/d^π(s) cancels: N_f = (1 − γ) A_u with A_u
the advantage of the pseudo-reward u = ∂f/∂d. All of these are *upper-level oracle calls*: the study
counts them separately from lower-level samples and exact lower-level calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pref_brl.tabular.mdp import (
    TabularMDP,
    cost_q_function,
    logits_vjp,
    occupancy,
    occupancy_vjp,
    state_occupancy,
)
from pref_brl.tabular.rewards import RewardMap

Array = np.ndarray


class UpperLoss(Protocol):
    """The upper objective f(φ, π) of a tabular bilevel problem."""

    def value(self, phi: Array, policy: Array) -> float: ...

    def grad_phi(self, phi: Array, policy: Array) -> Array: ...

    def grad_policy(self, phi: Array, policy: Array) -> Array: ...

    def natural_grad(self, phi: Array, policy: Array) -> Array: ...


def natural_from_policy_grad(mdp: TabularMDP, policy: Array, grad_policy: Array) -> Array:
    """N_f = (1 − γ)(G − Σ_b π G)/d^π(s): the Fisher-preconditioned logit gradient of f."""
    centred = grad_policy - (policy * grad_policy).sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):  # zero-occupancy states: callers refuse the result
        return (1.0 - mdp.discount) * centred / state_occupancy(mdp, policy)[:, None]


@dataclass(frozen=True)
class OccupancyLoss:
    """The GridWorld designer objective f(φ, π) = Σ_{s,a} d^π(s, a) u(s, a) + ½ μ ‖φ − φ_ref‖².

    With u = −1 on target cells this is minus the (normalised) discounted probability of being in the
    target region; positive u on hazard cells charges for visiting them; μ is the designer's cost of
    departing from a nominal reward φ_ref (zero if not given).
    """

    mdp: TabularMDP
    cost: Array
    phi_cost: float = 0.0
    phi_ref: Array | None = None

    def value(self, phi: Array, policy: Array) -> float:
        gap = self._gap(phi)
        return float((occupancy(self.mdp, policy) * self.cost).sum() + 0.5 * self.phi_cost * gap @ gap)

    def grad_phi(self, phi: Array, policy: Array) -> Array:
        return self.phi_cost * self._gap(phi)

    def _gap(self, phi: Array) -> Array:
        return phi if self.phi_ref is None else phi - self.phi_ref

    def grad_policy(self, phi: Array, policy: Array) -> Array:
        return occupancy_vjp(self.mdp, policy, self.cost)

    def natural_grad(self, phi: Array, policy: Array) -> Array:
        return _occupancy_natural_grad(self.mdp, policy, self.cost)


@dataclass(frozen=True)
class PreferenceLoss:
    """Bradley–Terry loss on pairs (x, y) ∼ d^π ⊗ d^π labelled by a hidden true reward (PARL's f).

    f(φ, π) = Σ_{x,y} d^π(x) d^π(y) ℓ_φ(x, y) + ½ μ ‖φ‖², with the expected cross-entropy
    ℓ_φ(x, y) = −p*(x, y) log σ(Δ) − (1 − p*(x, y)) log σ(−Δ), Δ = r_φ(x) − r_φ(y) and the teacher's
    probability p*(x, y) = σ(β (r_true(x) − r_true(y))). Here x, y are state–action pairs (segments of
    length one), the tabular twin of the deep method (docs/bilevel.md).
    """

    mdp: TabularMDP
    reward: RewardMap
    true_reward: Array
    teacher_beta: float = 5.0
    phi_cost: float = 0.0

    def value(self, phi: Array, policy: Array) -> float:
        d = occupancy(self.mdp, policy).ravel()
        return float(d @ self._pair_loss(phi) @ d + 0.5 * self.phi_cost * phi @ phi)

    def grad_phi(self, phi: Array, policy: Array) -> Array:
        d = occupancy(self.mdp, policy).ravel()
        delta, target = self._logit_gaps(phi)
        residual = _sigmoid(delta) - target  # ∂ℓ/∂Δ, antisymmetric in (x, y)
        weight = 2.0 * d * (residual @ d)
        jac = self.reward.jacobian(phi).reshape(d.size, -1)
        return weight @ jac + self.phi_cost * phi

    def grad_policy(self, phi: Array, policy: Array) -> Array:
        return occupancy_vjp(self.mdp, policy, self._occupancy_cost(phi, policy))

    def natural_grad(self, phi: Array, policy: Array) -> Array:
        return _occupancy_natural_grad(self.mdp, policy, self._occupancy_cost(phi, policy))

    def _occupancy_cost(self, phi: Array, policy: Array) -> Array:
        """u = ∂f/∂d(x) = 2 Σ_y d(y) ℓ(x, y) (ℓ is symmetric)."""
        d = occupancy(self.mdp, policy).ravel()
        return (2.0 * self._pair_loss(phi) @ d).reshape(policy.shape)

    def _logit_gaps(self, phi: Array) -> tuple[Array, Array]:
        r = self.reward(phi).ravel()
        r_true = self.true_reward.ravel()
        delta = r[:, None] - r[None, :]
        gap = r_true[:, None] - r_true[None, :]
        if np.isinf(self.teacher_beta):  # a rational teacher: the better one always, ties half and half
            return delta, (gap > 0) + 0.5 * (gap == 0)
        return delta, _sigmoid(self.teacher_beta * gap)

    def _pair_loss(self, phi: Array) -> Array:
        delta, target = self._logit_gaps(phi)
        return target * np.logaddexp(0.0, -delta) + (1.0 - target) * np.logaddexp(0.0, delta)


@dataclass(frozen=True)
class PolicyMatchLoss:
    """f(φ, π) = ½ μ ‖φ‖² + ½ w Σ_{s,a} (π(a|s) − π_target(a|s))² (SoBiRL's synthetic f, with a target)."""

    mdp: TabularMDP
    target: Array
    policy_weight: float = 1.0
    phi_cost: float = 1.0

    def value(self, phi: Array, policy: Array) -> float:
        gap = policy - self.target
        return float(0.5 * self.phi_cost * phi @ phi + 0.5 * self.policy_weight * (gap * gap).sum())

    def grad_phi(self, phi: Array, policy: Array) -> Array:
        return self.phi_cost * phi

    def grad_policy(self, phi: Array, policy: Array) -> Array:
        return self.policy_weight * (policy - self.target)

    def natural_grad(self, phi: Array, policy: Array) -> Array:
        return natural_from_policy_grad(self.mdp, policy, self.grad_policy(phi, policy))


def logit_grad(loss: UpperLoss, phi: Array, policy: Array) -> Array:
    """∂f/∂θ for π = softmax(θ)."""
    return logits_vjp(policy, loss.grad_policy(phi, policy))


def _occupancy_natural_grad(mdp: TabularMDP, policy: Array, cost: Array) -> Array:
    """(1 − γ) A_u: the natural gradient of Σ d^π u, with no division by d^π(s)."""
    q_u = cost_q_function(mdp, policy, cost)
    return (1.0 - mdp.discount) * (q_u - (policy * q_u).sum(axis=-1, keepdims=True))


def _sigmoid(x: Array) -> Array:
    return 0.5 * (1.0 + np.tanh(0.5 * x))
