"""A user-supplied upper loss: any differentiable torch function f(φ, π), gradients by autograd."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pref_brl.tabular.mdp import TabularMDP
from pref_brl.tabular.upper import natural_from_policy_grad

Array = np.ndarray


@dataclass(frozen=True)
class TorchUpperLoss:
    """Wraps ``fn(phi, policy) -> scalar`` (float64 tensors, φ of shape (d,), π of shape (S, A)).

    Satisfies the :class:`~pref_brl.tabular.upper.UpperLoss` protocol, so any method and the
    exact hypergradient accept it. ∂f/∂π treats the policy-table entries as free variables.
    """

    mdp: TabularMDP
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def value(self, phi: Array, policy: Array) -> float:
        with torch.no_grad():
            return float(self.fn(torch.from_numpy(phi), torch.from_numpy(policy)))

    def grad_phi(self, phi: Array, policy: Array) -> Array:
        return self._grads(phi, policy)[0]

    def grad_policy(self, phi: Array, policy: Array) -> Array:
        return self._grads(phi, policy)[1]

    def natural_grad(self, phi: Array, policy: Array) -> Array:
        return natural_from_policy_grad(self.mdp, policy, self.grad_policy(phi, policy))

    def _grads(self, phi: Array, policy: Array) -> tuple[Array, Array]:
        phi_t = torch.tensor(phi, dtype=torch.float64, requires_grad=True)
        pi_t = torch.tensor(policy, dtype=torch.float64, requires_grad=True)
        g_phi, g_pi = torch.autograd.grad(self.fn(phi_t, pi_t), (phi_t, pi_t), allow_unused=True)
        g_phi = torch.zeros_like(phi_t) if g_phi is None else g_phi
        g_pi = torch.zeros_like(pi_t) if g_pi is None else g_pi
        return g_phi.numpy(), g_pi.numpy()
