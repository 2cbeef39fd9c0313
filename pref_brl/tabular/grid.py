"""N × N GridWorld geometry and dynamics (five actions: stay, up, right, down, left; slippery moves)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Array = np.ndarray

MOVES: tuple[tuple[int, int], ...] = ((0, 0), (-1, 0), (0, 1), (1, 0), (0, -1))
"""(Δrow, Δcol) of the actions stay, up, right, down, left."""


@dataclass(frozen=True)
class GridLayout:
    """Where things are in a GridWorld: size, start cell, target and hazard cells (row-major indices)."""

    size: int
    start: int
    targets: tuple[int, ...]
    hazards: tuple[int, ...] = ()

    @property
    def n_states(self) -> int:
        return self.size * self.size

    def cell(self, state: int) -> tuple[int, int]:
        return divmod(state, self.size)

    def index(self, row: int, col: int) -> int:
        return row * self.size + col

    def mask(self, cells: tuple[int, ...]) -> Array:
        out = np.zeros(self.n_states)
        out[list(cells)] = 1.0
        return out

    def mean_move(self, policy: Array) -> Array:
        """Expected intended displacement (Δrow, Δcol) per state under a policy: the arrows of a plot."""
        return policy @ np.asarray(MOVES, dtype=np.float64)


def grid_transitions(size: int, slip: float) -> Array:
    """P[s, a, s′]: the intended move with probability 1 − slip, a uniformly random action otherwise.

    Moves into the border leave the agent where it is.
    """
    n, n_actions = size * size, len(MOVES)
    intended = np.zeros((n, n_actions, n))
    for state in range(n):
        row, col = divmod(state, size)
        for action, (dr, dc) in enumerate(MOVES):
            r2, c2 = min(max(row + dr, 0), size - 1), min(max(col + dc, 0), size - 1)
            intended[state, action, r2 * size + c2] = 1.0
    random_move = intended.mean(axis=1, keepdims=True)
    return (1.0 - slip) * intended + slip * random_move
