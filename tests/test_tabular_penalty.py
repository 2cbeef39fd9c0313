"""The penalty proxy (Gaur et al. (2025), Eq. 9–10, 13) on tabular problems: bias rate, exactness, CRN zeros,
descent.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pref_brl.tabular.benchmarks import gridworld_goal, random_mdp
from pref_brl.tabular.mdp import reward_gradient, softmax
from pref_brl.tabular.problem import hypergradient, hyperobjective, lower_solution
from pref_brl.tabular.proxy import penalty_point, solve_policy
from pref_brl.tabular.sampling import (
    discounted_jacobian_sum,
    horizon_for,
    rollout,
    sampled_penalty_term,
)
from tests.finite_differences import central_difference, relative_error


def _phi(problem, seed: int = 1) -> np.ndarray:
    return problem.phi0 + 0.3 * np.random.default_rng(seed).standard_normal(problem.dim)


def test_penalty_gradient_error_falls_like_one_over_lambda() -> None:
    problem = gridworld_goal()
    phi = _phi(problem)
    exact = hypergradient(problem, phi)
    lams = np.logspace(0.0, 2.0, 7)
    errors = np.array([np.linalg.norm(penalty_point(problem, phi, lam).grad - exact) for lam in lams])
    slope = np.polyfit(np.log(lams), np.log(errors), 1)[0]
    assert -1.2 <= slope <= -0.8, f"fitted log-log slope {slope:.3f}"
    assert np.all(np.diff(errors) < 0)


@pytest.mark.parametrize("make", [gridworld_goal, random_mdp], ids=["gridworld", "random_mdp"])
def test_eq10_matches_finite_differences_of_the_proxy(make) -> None:
    problem, lam = make(), 5.0
    phi = _phi(problem)
    fd = central_difference(lambda x: penalty_point(problem, x, lam, tol=1e-12).value, phi)
    assert relative_error(penalty_point(problem, phi, lam, tol=1e-12).grad, fd) <= 1e-6


def test_policy_independent_upper_loss_gives_exactly_grad_phi_f() -> None:
    problem = random_mdp()
    flat = dataclasses.replace(problem, upper=dataclasses.replace(problem.upper, policy_weight=0.0))
    phi = _phi(problem)
    point = penalty_point(flat, phi, lam=10.0)
    assert np.array_equal(point.logits_lam, point.logits)
    assert np.array_equal(point.grad, flat.upper.grad_phi(phi, softmax(point.logits)))
    # the same check fails when f does depend on the policy
    assert not np.allclose(penalty_point(problem, phi, lam=10.0).grad, problem.upper.grad_phi(phi, None))


def test_inner_solver_without_f_finds_the_soft_optimal_policy() -> None:
    problem = gridworld_goal()
    phi = _phi(problem)
    logits = solve_policy(problem, phi, None, np.zeros((problem.mdp.n_states, problem.mdp.n_actions)))
    assert np.allclose(softmax(logits), lower_solution(problem, phi).policy, atol=1e-10)


def test_monte_carlo_penalty_term_is_exactly_zero_under_common_random_numbers() -> None:
    problem = gridworld_goal()
    phi = _phi(problem)
    policy = lower_solution(problem, phi).policy
    jac, mdp = problem.reward.jacobian(phi), problem.mdp
    rng = np.random.default_rng(0)
    uniforms = rng.random((32, horizon_for(mdp.discount), 2))
    same, used = sampled_penalty_term(mdp, jac, policy, policy.copy(), uniforms, lam=50.0)
    assert np.array_equal(same, np.zeros(problem.dim)) and used == 2 * uniforms[..., 0].size
    # not zero when the policies differ, nor for one policy on independent noise
    other = softmax(np.log(policy) + 0.5 * rng.standard_normal(policy.shape))
    assert np.abs(sampled_penalty_term(mdp, jac, policy, other, uniforms, lam=50.0)[0]).max() > 0
    independent = discounted_jacobian_sum(rollout(mdp, policy, rng.random(uniforms.shape)), jac, mdp.discount)
    assert np.abs(discounted_jacobian_sum(rollout(mdp, policy, uniforms), jac, mdp.discount) - independent).max() > 0


def test_monte_carlo_penalty_term_is_unbiased() -> None:
    problem = random_mdp()
    phi, lam = _phi(problem), 5.0
    point = penalty_point(problem, phi, lam)
    policy, policy_lam = softmax(point.logits), softmax(point.logits_lam)
    jac, mdp = problem.reward.jacobian(phi), problem.mdp
    exact = lam * (reward_gradient(mdp, policy, jac) - reward_gradient(mdp, policy_lam, jac))
    rng = np.random.default_rng(3)
    horizon = horizon_for(mdp.discount, tail=1e-9)
    draws = np.array([sampled_penalty_term(mdp, jac, policy, policy_lam, rng.random((64, horizon, 2)), lam)[0]
                      for _ in range(300)])
    standard_error = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - exact) <= 4.5 * standard_error + 1e-8)


def test_descent_with_the_penalty_gradient_decreases_F() -> None:
    problem = gridworld_goal()
    phi = problem.phi0.copy()
    values = [hyperobjective(problem, phi)]
    for _ in range(15):
        phi = phi - 2.0 * penalty_point(problem, phi, lam=20.0).grad
        values.append(hyperobjective(problem, phi))
    assert np.all(np.diff(values) < 0)
    assert values[-1] < values[0] - 0.2
