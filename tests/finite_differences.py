"""Independent numerical truth for the tabular maths: central finite differences."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Array = np.ndarray


def central_difference(fn: Callable[[Array], float], x: Array, step: float = 1e-5) -> Array:
    """∂fn/∂x by (fn(x + h e_i) − fn(x − h e_i)) / 2h for every entry of x (any shape)."""
    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        bump = np.zeros_like(x)
        bump[index] = step
        grad[index] = (fn(x + bump) - fn(x - bump)) / (2.0 * step)
    return grad


def relative_error(estimate: Array, truth: Array) -> float:
    """‖estimate − truth‖ / max(‖truth‖, tiny)."""
    return float(np.linalg.norm(estimate - truth) / max(np.linalg.norm(truth), 1e-300))
