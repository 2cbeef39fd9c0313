"""The exact hypergradient (adjoint / fixed-point form) and the upper losses against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pref_brl.tabular.benchmarks import BENCHMARKS, random_mdp
from pref_brl.tabular.mdp import logits_vjp, softmax, state_occupancy
from pref_brl.tabular.problem import (
    BilevelProblem,
    Evaluator,
    adjoint_rhs,
    adjoint_sweep,
    hypergradient,
    hypergradient_forward,
    hyperobjective,
    lower_solution,
    solve_adjoint,
)
from pref_brl.tabular.torch_loss import TorchUpperLoss
from tests.finite_differences import central_difference, relative_error


@pytest.fixture(params=sorted(BENCHMARKS))
def problem(request: pytest.FixtureRequest) -> BilevelProblem:
    return BENCHMARKS[request.param]()


def _phi(problem: BilevelProblem, seed: int = 1) -> np.ndarray:
    return problem.phi0 + 0.3 * np.random.default_rng(seed).standard_normal(problem.dim)


def test_hypergradient_matches_finite_differences_of_F(problem: BilevelProblem) -> None:
    phi = _phi(problem)
    fd = central_difference(lambda x: hyperobjective(problem, x, tol=1e-13), phi)
    assert relative_error(hypergradient(problem, phi), fd) <= 1e-6


def test_adjoint_and_forward_forms_agree(problem: BilevelProblem) -> None:
    phi = _phi(problem, seed=2)
    assert relative_error(hypergradient(problem, phi), hypergradient_forward(problem, phi)) <= 1e-10


def test_adjoint_sweeps_converge_to_the_adjoint_solve(problem: BilevelProblem) -> None:
    phi = _phi(problem)
    policy = lower_solution(problem, phi).policy
    rhs = adjoint_rhs(problem, phi, policy)
    w = np.zeros_like(rhs)
    for _ in range(400):
        w = adjoint_sweep(problem.mdp, policy, rhs, w)
    assert np.allclose(w, solve_adjoint(problem.mdp, policy, rhs), atol=1e-12)


def test_upper_loss_gradients_match_finite_differences(problem: BilevelProblem) -> None:
    phi = _phi(problem)
    policy = softmax(np.random.default_rng(5).standard_normal((problem.mdp.n_states, problem.mdp.n_actions)))
    upper = problem.upper
    fd_phi = central_difference(lambda x: upper.value(x, policy), phi)
    fd_pi = central_difference(lambda pi: upper.value(phi, pi), policy)
    assert relative_error(upper.grad_phi(phi, policy), fd_phi) <= 1e-6
    assert relative_error(upper.grad_policy(phi, policy), fd_pi) <= 1e-6


def test_natural_gradient_of_f_inverts_the_fisher(problem: BilevelProblem) -> None:
    """d(s)/(1 − γ) · (diag π − π πᵀ) N_f = ∂f/∂θ."""
    phi = _phi(problem)
    policy = softmax(np.random.default_rng(6).standard_normal((problem.mdp.n_states, problem.mdp.n_actions)))
    natural = problem.upper.natural_grad(phi, policy)
    d_s = state_occupancy(problem.mdp, policy)
    back = d_s[:, None] * logits_vjp(policy, natural) / (1 - problem.mdp.discount)
    assert relative_error(back, logits_vjp(policy, problem.upper.grad_policy(phi, policy))) <= 1e-10


def test_user_supplied_torch_loss_matches_the_builtin_one() -> None:
    problem = random_mdp()
    builtin = problem.upper
    target = torch.from_numpy(builtin.target)

    def fn(phi: torch.Tensor, policy: torch.Tensor) -> torch.Tensor:
        return 0.5 * builtin.phi_cost * (phi**2).sum() + 0.5 * ((policy - target) ** 2).sum()

    user = BilevelProblem("user", problem.mdp, problem.reward, TorchUpperLoss(problem.mdp, fn), problem.tau,
                          problem.phi0)
    phi = _phi(problem)
    policy = lower_solution(problem, phi).policy
    assert user.upper.value(phi, policy) == pytest.approx(builtin.value(phi, policy), rel=1e-14)
    assert np.allclose(user.upper.grad_policy(phi, policy), builtin.grad_policy(phi, policy), atol=1e-14)
    assert np.allclose(hypergradient(user, phi), hypergradient(problem, phi), atol=1e-13)
    fd = central_difference(lambda x: hyperobjective(user, x, tol=1e-13), phi)
    assert relative_error(hypergradient(user, phi), fd) <= 1e-6


def test_evaluator_warm_start_changes_nothing(problem: BilevelProblem) -> None:
    evaluator = Evaluator(problem)
    for seed in range(3):
        phi = _phi(problem, seed)
        value, norm = evaluator(phi)
        assert value == pytest.approx(hyperobjective(problem, phi), abs=1e-10)
        assert norm == pytest.approx(float(np.linalg.norm(hypergradient(problem, phi))), abs=1e-9)
