"""Differentiable reward maps φ ↦ r_φ(s, a) with their Jacobians ∂r_φ(s, a)/∂φ."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

Array = np.ndarray


class RewardMap(Protocol):
    """A reward parameterisation: ``r(phi)`` is the (S, A) table, ``jacobian(phi)`` is (S, A, d)."""

    @property
    def dim(self) -> int: ...

    def __call__(self, phi: Array) -> Array: ...

    def jacobian(self, phi: Array) -> Array: ...


@dataclass(frozen=True)
class LinearReward:
    """r_φ(s, a) = Φ[s, a] · φ + offset[s, a] (the default of docs/tabular.md)."""

    features: Array
    offset: Array | None = None

    @property
    def dim(self) -> int:
        return self.features.shape[-1]

    def __call__(self, phi: Array) -> Array:
        base = self.features @ phi
        return base if self.offset is None else base + self.offset

    def jacobian(self, phi: Array) -> Array:
        return self.features


@dataclass(frozen=True)
class QuadraticReward:
    """r_φ(s, a) = Φ[s, a] · φ + c(s, a) φᵀ M φ: the linear map plus SoBiRL's quadratic reward term."""

    features: Array
    coef: Array
    matrix: Array
    _sym: Array = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_sym", self.matrix + self.matrix.T)

    @property
    def dim(self) -> int:
        return self.features.shape[-1]

    def __call__(self, phi: Array) -> Array:
        return self.features @ phi + self.coef * float(phi @ self.matrix @ phi)

    def jacobian(self, phi: Array) -> Array:
        return self.features + self.coef[:, :, None] * (self._sym @ phi)[None, None, :]
