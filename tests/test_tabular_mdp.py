"""Exact tabular MDP maths against closed forms and central finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from pref_brl.tabular.benchmarks import gridworld_goal, random_mdp
from pref_brl.tabular.mdp import (
    TabularMDP,
    logits_vjp,
    occupancy,
    occupancy_vjp,
    regularised_return,
    reward_gradient,
    soft_advantage,
    soft_bellman,
    soft_evaluation_sweep,
    soft_policy_evaluation,
    soft_policy_gradient,
    soft_policy_iteration,
    soft_value_iteration,
    softmax,
    state_occupancy,
)
from tests.finite_differences import central_difference, relative_error

PROBLEMS = {"gridworld": gridworld_goal, "random_mdp": random_mdp}


@pytest.fixture(params=sorted(PROBLEMS))
def problem(request: pytest.FixtureRequest):
    return PROBLEMS[request.param]()


def _random_logits(problem, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((problem.mdp.n_states, problem.mdp.n_actions))


def _phi(problem, seed: int = 4) -> np.ndarray:
    return problem.phi0 + 0.3 * np.random.default_rng(seed).standard_normal(problem.dim)


def test_soft_value_iteration_reaches_the_fixed_point_policy_iteration_finds(problem) -> None:
    reward = problem.reward(_phi(problem))
    vi = soft_value_iteration(problem.mdp, reward, problem.tau, tol=1e-10)
    pi = soft_policy_iteration(problem.mdp, reward, problem.tau, tol=1e-12)
    assert np.max(np.abs(vi.q - pi.q)) <= 1e-9
    assert np.max(np.abs(soft_bellman(problem.mdp, reward, pi.q, problem.tau) - pi.q)) <= 1e-11
    assert pi.sweeps < vi.sweeps


def test_soft_optimal_policy_beats_other_policies(problem) -> None:
    reward = problem.reward(_phi(problem))
    best = soft_policy_iteration(problem.mdp, reward, problem.tau)
    j_best = regularised_return(problem.mdp, reward, best.logits, problem.tau)
    for seed in range(5):
        other = best.logits + 0.5 * _random_logits(problem, seed)
        assert regularised_return(problem.mdp, reward, other, problem.tau) < j_best


def test_occupancy_matches_the_discounted_power_series(problem) -> None:
    policy = softmax(_random_logits(problem))
    mdp = problem.mdp
    p_pi, mass, series = mdp.state_transitions(policy), mdp.initial.copy(), np.zeros(mdp.n_states)
    for t in range(2000):
        series += (1 - mdp.discount) * mdp.discount**t * mass
        mass = mass @ p_pi
    assert np.allclose(state_occupancy(mdp, policy), series, atol=1e-12)
    assert occupancy(mdp, policy).sum() == pytest.approx(1.0, abs=1e-12)


def test_reward_gradient_eq11_matches_finite_differences(problem) -> None:
    phi, logits = _phi(problem), _random_logits(problem)
    exact = reward_gradient(problem.mdp, softmax(logits), problem.reward.jacobian(phi))
    fd = central_difference(lambda x: regularised_return(problem.mdp, problem.reward(x), logits, problem.tau), phi)
    assert relative_error(exact, fd) <= 1e-6


def test_soft_policy_gradient_matches_finite_differences(problem) -> None:
    reward, logits = problem.reward(_phi(problem)), _random_logits(problem)
    exact = soft_policy_gradient(problem.mdp, reward, logits, problem.tau)
    fd = central_difference(lambda th: regularised_return(problem.mdp, reward, th, problem.tau), logits)
    assert relative_error(exact, fd) <= 1e-6


def test_soft_advantage_is_the_natural_gradient(problem) -> None:
    """Fisher · A = policy gradient, with Fisher_s = d(s)(diag π − π πᵀ)/(1 − γ)."""
    reward, logits = problem.reward(_phi(problem)), _random_logits(problem)
    policy = softmax(logits)
    advantage = soft_advantage(problem.mdp, reward, logits, problem.tau)
    d_s = state_occupancy(problem.mdp, policy)
    fisher_times_a = d_s[:, None] * logits_vjp(policy, advantage) / (1 - problem.mdp.discount)
    assert np.allclose(fisher_times_a, soft_policy_gradient(problem.mdp, reward, logits, problem.tau), atol=1e-13)
    assert np.allclose((policy * advantage).sum(axis=1), 0.0, atol=1e-12)


def test_occupancy_vjp_matches_finite_differences(problem) -> None:
    policy = softmax(_random_logits(problem))
    cost = np.random.default_rng(7).standard_normal(policy.shape)
    fd = central_difference(lambda pi: float((occupancy(problem.mdp, pi) * cost).sum()), policy)
    assert relative_error(occupancy_vjp(problem.mdp, policy, cost), fd) <= 1e-6


def test_logits_vjp_is_the_softmax_chain_rule(problem) -> None:
    weights = np.random.default_rng(8).standard_normal((problem.mdp.n_states, problem.mdp.n_actions))
    logits = _random_logits(problem)
    fd = central_difference(lambda th: float((softmax(th) ** 2 * weights).sum()), logits)
    exact = logits_vjp(softmax(logits), 2 * softmax(logits) * weights)
    assert relative_error(exact, fd) <= 1e-6


def test_expected_critic_sweeps_converge_to_policy_evaluation(problem) -> None:
    reward, logits = problem.reward(_phi(problem)), _random_logits(problem)
    q = np.zeros_like(reward)
    for _ in range(600):
        q = soft_evaluation_sweep(problem.mdp, q, reward, logits, problem.tau)
    assert np.allclose(q, soft_policy_evaluation(problem.mdp, reward, logits, problem.tau)[0], atol=1e-9)


def test_invalid_mdp_and_tau_are_rejected() -> None:
    with pytest.raises(ValueError, match="probability"):
        TabularMDP(np.full((2, 1, 2), 0.7), np.array([0.5, 0.5]), 0.9)
    with pytest.raises(ValueError, match="discount"):
        TabularMDP(np.full((2, 1, 2), 0.5), np.array([0.5, 0.5]), 1.0)
    mdp = TabularMDP(np.full((2, 1, 2), 0.5), np.array([0.5, 0.5]), 0.9)
    with pytest.raises(ValueError, match="tau"):
        soft_value_iteration(mdp, np.zeros((2, 1)), 0.0)
