"""The three tabular benchmarks of docs/tabular.md, each a factory returning a :class:`BilevelProblem`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pref_brl.tabular.grid import GridLayout, grid_transitions
from pref_brl.tabular.mdp import TabularMDP, softmax
from pref_brl.tabular.problem import BilevelProblem
from pref_brl.tabular.rewards import LinearReward, QuadraticReward
from pref_brl.tabular.upper import OccupancyLoss, PolicyMatchLoss, PreferenceLoss

Array = np.ndarray


def default_layout(size: int) -> GridLayout:
    """Start bottom-left, target top-right, a hazard wall across the middle row with gaps at both ends."""
    middle = size // 2
    hazards = tuple(middle * size + col for col in range(1, size - 1))
    return GridLayout(size=size, start=(size - 1) * size, targets=(size - 1,), hazards=hazards)


def _grid_mdp(layout: GridLayout, slip: float, gamma: float) -> TabularMDP:
    initial = np.zeros(layout.n_states)
    initial[layout.start] = 1.0
    return TabularMDP(grid_transitions(layout.size, slip), initial, gamma)


def _cell_features(n_states: int, n_actions: int) -> Array:
    """One weight per cell: r_φ(s, a) = φ[s] for every action."""
    return np.repeat(np.eye(n_states)[:, None, :], n_actions, axis=1)


def gridworld_goal(
    size: int = 5,
    slip: float = 0.1,
    gamma: float = 0.9,
    tau: float = 0.2,
    hazard_cost: float = 1.0,
    phi_cost: float = 0.05,
) -> BilevelProblem:
    """GridWorld goal position (after Zeng et al., arXiv 2601.16399): the designer places reward on cells.

    φ ∈ R^{N²} is a reward weight per cell, r_φ(s, a) = φ[s], starting from φ = 0. The designer's true
    objective is f = −d^π(target) + hazard_cost · d^π(hazards) + ½ μ ‖φ − φ_ref‖²: reach the target
    cell, avoid the hazard wall, and pay for departing from the nominal sparse reward φ_ref (1 on the
    target, 0 elsewhere); π is the soft-optimal agent for r_φ. ∇_φ f alone only pulls φ to φ_ref, which
    is not stationary for F: the partial gradient's biased point.
    """
    layout = default_layout(size)
    mdp = _grid_mdp(layout, slip, gamma)
    per_state = hazard_cost * layout.mask(layout.hazards) - layout.mask(layout.targets)
    cost = np.repeat(per_state[:, None], mdp.n_actions, axis=1)
    reward = LinearReward(_cell_features(mdp.n_states, mdp.n_actions))
    upper = OccupancyLoss(mdp, cost, phi_cost=phi_cost, phi_ref=layout.mask(layout.targets))
    return BilevelProblem("gridworld_goal", mdp, reward, upper, tau, np.zeros(reward.dim), layout)


def preference_gridworld(
    size: int = 5,
    slip: float = 0.1,
    gamma: float = 0.9,
    tau: float = 0.2,
    teacher_beta: float = 3.0,
    phi_cost: float = 0.01,
) -> BilevelProblem:
    """Preference GridWorld: learn a per-cell reward from Bradley–Terry labels on the agent's own pairs.

    The hidden true reward is +1 on the target, −1 on the hazard wall and 0 elsewhere; pairs of
    state–action visits are drawn from d^π ⊗ d^π of the soft-optimal agent for the learned reward.
    """
    layout = default_layout(size)
    mdp = _grid_mdp(layout, slip, gamma)
    true_state = layout.mask(layout.targets) - layout.mask(layout.hazards)
    true_reward = np.repeat(true_state[:, None], mdp.n_actions, axis=1)
    reward = LinearReward(_cell_features(mdp.n_states, mdp.n_actions))
    upper = PreferenceLoss(mdp, reward, true_reward, teacher_beta=teacher_beta, phi_cost=phi_cost)
    return BilevelProblem("preference_gridworld", mdp, reward, upper, tau, np.zeros(reward.dim), layout)


def random_mdp(
    seed: int = 0,
    n_states: int = 10,
    n_actions: int = 5,
    gamma: float = 0.5,
    tau: float = 1.0,
    dim: int = 8,
) -> BilevelProblem:
    """SoBiRL's synthetic problem: a random sparse MDP, |S| = 10, |A| = 5, γ = 0.5.

    The reward is linear in random features plus SoBiRL's quadratic term c(s, a) φᵀ M φ; the upper loss
    is ½ μ ‖φ‖² + ½ ‖π − π_target‖² for a random target policy.
    """
    rng = np.random.default_rng(seed)
    transitions = np.zeros((n_states, n_actions, n_states))
    for s in range(n_states):
        for a in range(n_actions):
            support = rng.choice(n_states, size=rng.integers(1, n_states), replace=False)
            transitions[s, a, support] = rng.random(support.size)
    transitions /= transitions.sum(-1, keepdims=True)
    mdp = TabularMDP(transitions, np.full(n_states, 1.0 / n_states), gamma)
    features = rng.standard_normal((n_states, n_actions, dim)) / np.sqrt(dim)
    coef = rng.random((n_states, n_actions)) * rng.random((n_states, 1))
    reward = QuadraticReward(features, coef, rng.standard_normal((dim, dim)) / dim)
    target = softmax(3.0 * rng.standard_normal((n_states, n_actions)))
    upper = PolicyMatchLoss(mdp, target, policy_weight=1.0, phi_cost=0.01)
    phi0 = 0.5 * rng.standard_normal(dim)
    return BilevelProblem("random_mdp", mdp, reward, upper, tau, phi0)


BENCHMARKS: dict[str, Callable[[], BilevelProblem]] = {
    "gridworld_goal": gridworld_goal,
    "preference_gridworld": preference_gridworld,
    "random_mdp": random_mdp,
}
"""Name → factory of each benchmark with its default settings."""
