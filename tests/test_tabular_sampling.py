"""Monte-Carlo pieces of the tabular lab against their exact expectations."""

from __future__ import annotations

import numpy as np

from pref_brl.tabular.benchmarks import gridworld_goal, random_mdp
from pref_brl.tabular.mdp import soft_bellman, soft_evaluation_sweep, state_occupancy
from pref_brl.tabular.problem import adjoint_rhs, implicit_gradient, lower_solution, solve_adjoint
from pref_brl.tabular.sampling import (
    horizon_for,
    inverse_cdf,
    rollout,
    sample_next_states,
    soft_q_sweep,
    td_evaluation_sweep,
)
from pref_brl.tabular.sobirl import sampled_implicit_gradient


def test_inverse_cdf_draws_the_right_frequencies() -> None:
    probs = np.array([0.1, 0.0, 0.6, 0.3])
    draws = inverse_cdf(np.cumsum(probs), np.random.default_rng(0).random(200_000))
    assert np.allclose(np.bincount(draws, minlength=4) / draws.size, probs, atol=4e-3)
    assert not np.any(draws == 1)


def test_rollouts_visit_states_with_the_discounted_occupancy() -> None:
    problem = gridworld_goal()
    policy = lower_solution(problem, problem.phi0 + 0.5).policy
    gamma, horizon = problem.mdp.discount, horizon_for(problem.mdp.discount, tail=1e-6)
    paths = rollout(problem.mdp, policy, np.random.default_rng(1).random((4000, horizon, 2)))
    weights = (1 - gamma) * gamma ** np.arange(horizon)
    visits = np.zeros(problem.mdp.n_states)
    np.add.at(visits, paths.states, np.broadcast_to(weights, paths.states.shape) / paths.states.shape[0])
    assert np.abs(visits - state_occupancy(problem.mdp, policy)).max() < 0.02


def test_sampled_critic_sweeps_are_unbiased() -> None:
    problem = random_mdp()
    rng = np.random.default_rng(2)
    reward = problem.reward(problem.phi0)
    shape = reward.shape
    q, logits = rng.standard_normal(shape), rng.standard_normal(shape)
    sarsa, qlearn = np.zeros(shape), np.zeros(shape)
    draws = 4000
    for _ in range(draws):
        nxt = sample_next_states(problem.mdp, rng.random(shape))
        sarsa += td_evaluation_sweep(problem.mdp, q, reward, logits, problem.tau, nxt, 1.0) / draws
        qlearn += soft_q_sweep(problem.mdp, q, reward, problem.tau, nxt, 1.0) / draws
    assert np.abs(sarsa - soft_evaluation_sweep(problem.mdp, q, reward, logits, problem.tau)).max() < 0.05
    assert np.abs(qlearn - soft_bellman(problem.mdp, reward, q, problem.tau)).max() < 0.05


def test_model_free_sobirl_implicit_term_is_unbiased() -> None:
    problem = random_mdp()
    phi = problem.phi0
    policy = lower_solution(problem, phi).policy
    rhs = adjoint_rhs(problem, phi, policy)
    exact = implicit_gradient(problem, phi, solve_adjoint(problem.mdp, policy, rhs))
    rng = np.random.default_rng(3)
    horizon = horizon_for(problem.mdp.discount, tail=1e-9)
    draws = np.array([sampled_implicit_gradient(problem, phi, policy, rhs, 32, horizon, rng)[0]
                      for _ in range(300)])
    standard_error = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - exact) <= 4.5 * standard_error + 1e-8)
    assert np.linalg.norm(exact) > 10 * standard_error.max()  # the test can tell a wrong estimator apart
