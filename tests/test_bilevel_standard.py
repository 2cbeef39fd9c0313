"""The standard-bilevel penalty solver (Gaur et al. (2025), Theorem 2 setting) on the quadratic example of
docs/tabular.md.
"""

from __future__ import annotations

import torch

from pref_brl.tabular.standard import (
    GradientOracle,
    StandardPenaltyConfig,
    inner_descent,
    penalty_gradient,
    quadratic_example,
    run_standard_penalty,
)


def _exact_oracle() -> GradientOracle:
    return GradientOracle(0.0, 1, torch.Generator().manual_seed(0))


def test_penalty_gradient_matches_the_closed_form() -> None:
    problem = quadratic_example()
    x = torch.randn(4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    oracle = _exact_oracle()
    for lam in (0.5, 3.0, 40.0):
        grad = penalty_gradient(problem.f, problem.g, x, problem.y_star(x), problem.y_lam(x, lam), lam, oracle)
        assert torch.allclose(grad, problem.penalty_gradient(x, lam), atol=1e-12, rtol=0)
    # the bias against ∇F is exactly Aᵀ(Ax − c)/(1 + λ)
    bias = problem.hypergradient(x) - problem.penalty_gradient(x, 9.0)
    assert torch.allclose(bias, problem.a.T @ (problem.a @ x - problem.c) / 10.0, atol=1e-14)


def test_inner_descent_finds_both_inner_solutions() -> None:
    problem, lam = quadratic_example(), 4.0
    x = torch.ones(4, dtype=torch.float64)
    oracle, y0 = _exact_oracle(), torch.zeros(6, dtype=torch.float64)
    y_star = inner_descent(problem.g, x, y0, 200, 0.5, oracle)

    def penalised(x_: torch.Tensor, y_: torch.Tensor) -> torch.Tensor:
        return problem.f(x_, y_) / lam + problem.g(x_, y_)

    y_lam = inner_descent(penalised, x, y0, 200, 0.5, oracle)
    assert torch.allclose(y_star, problem.y_star(x), atol=1e-12)
    assert torch.allclose(y_lam, problem.y_lam(x, lam), atol=1e-12)


def test_exact_solver_converges_to_the_penalty_minimiser() -> None:
    problem, lam = quadratic_example(), 10.0
    config = StandardPenaltyConfig(lam=lam, outer_steps=200, outer_lr=0.5, inner_steps=15)
    trace = run_standard_penalty(problem.f, problem.g, torch.zeros(4, dtype=torch.float64),
                                 torch.zeros(6, dtype=torch.float64), config)
    assert torch.allclose(trace.xs[-1], problem.penalty_minimiser(lam), atol=1e-6)
    assert trace.oracle_calls == 200 * (2 * 15 + 3)


def test_stochastic_solver_decreases_F_and_its_error_shrinks_with_the_batch() -> None:
    problem, lam = quadratic_example(), 10.0
    x0, y0 = torch.full((4,), 2.0, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    errors = []
    for batch in (4, 64, 1024):
        config = StandardPenaltyConfig(lam=lam, outer_steps=200, outer_lr=0.2, inner_steps=10, noise_std=0.1,
                                       batch=batch, seed=5)
        trace = run_standard_penalty(problem.f, problem.g, x0, y0, config)
        tail = trace.xs[-80:].mean(dim=0)
        assert problem.hyperobjective(tail) < problem.hyperobjective(x0) - 1.0
        errors.append(float(torch.linalg.norm(tail - problem.penalty_minimiser(lam))))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.05
    again = run_standard_penalty(problem.f, problem.g, x0, y0, config)
    assert torch.equal(trace.xs, again.xs)
