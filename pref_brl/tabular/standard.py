"""The penalty method for standard bilevel optimisation (Gaur et al. (2025), Theorem 2), in torch.

    min_x F(x) = f(x, y*(x)),   y*(x) = argmin_y g(x, y).

Penalty proxy L*_λ(x) = f(x, y_λ) + λ (g(x, y_λ) − g(x, y*)), y_λ = argmin_y f(x, y) + λ g(x, y), with
gradient (Eq. 10) ∇L*_λ = ∇_x f(x, y_λ) + λ (∇_x g(x, y_λ) − ∇_x g(x, y*)): first order, no Hessians.
Gradients come from a stochastic oracle that adds unbiased Gaussian noise of a given standard deviation
(averaged over a batch), the setting of Theorem 2 (Assumption 4).

Reference: Gaur et al., "On the Sample Complexity Bounds of Bilevel Reinforcement Learning", NeurIPS 2025;
see also docs/tabular.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Tensor = torch.Tensor
Objective = Callable[[Tensor, Tensor], Tensor]


@dataclass
class StandardPenaltyConfig:
    """Settings of the double-loop penalty solver."""

    lam: float = 10.0
    """Penalty weight λ."""
    outer_steps: int = 200
    """Updates of x."""
    outer_lr: float = 0.1
    """Step size of x."""
    inner_steps: int = 20
    """Gradient steps for each of y* and y_λ per outer step (warm-started)."""
    inner_lr: float = 0.5
    """Step size of the inner steps on g and on f/λ + g."""
    noise_std: float = 0.0
    """Standard deviation of the oracle's additive gradient noise (0: exact gradients)."""
    batch: int = 1
    """Oracle samples averaged per gradient (noise std / √batch)."""
    seed: int = 0
    """Seed of the oracle's torch.Generator."""


class GradientOracle:
    """Unbiased stochastic gradients of an objective: the autograd gradient plus Gaussian noise."""

    def __init__(self, noise_std: float, batch: int, generator: torch.Generator) -> None:
        self.scale = noise_std / batch**0.5
        self.generator = generator
        self.calls = 0

    def __call__(self, objective: Objective, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(∇_x, ∇_y) of ``objective`` at (x, y), each with independent noise."""
        x_, y_ = x.detach().requires_grad_(True), y.detach().requires_grad_(True)
        gx, gy = torch.autograd.grad(objective(x_, y_), (x_, y_))
        self.calls += 1
        return self._noisy(gx), self._noisy(gy)

    def _noisy(self, grad: Tensor) -> Tensor:
        if self.scale == 0.0:
            return grad
        noise = torch.randn(grad.shape, generator=self.generator, dtype=grad.dtype, device=grad.device)
        return grad + self.scale * noise


def inner_descent(
    objective: Objective, x: Tensor, y0: Tensor, steps: int, lr: float, oracle: GradientOracle
) -> Tensor:
    """``steps`` gradient steps on y ↦ objective(x, y) from y0."""
    y = y0.detach().clone()
    for _ in range(steps):
        y = y - lr * oracle(objective, x, y)[1]
    return y


def penalty_gradient(
    f: Objective, g: Objective, x: Tensor, y_star: Tensor, y_lam: Tensor, lam: float, oracle: GradientOracle
) -> Tensor:
    """Gaur et al. (2025), Eq. 10, at the given inner iterates."""
    fx = oracle(f, x, y_lam)[0]
    return fx + lam * (oracle(g, x, y_lam)[0] - oracle(g, x, y_star)[0])


@dataclass(frozen=True)
class StandardTrace:
    """Iterates x_k (k = 0..K) and the oracle calls used."""

    xs: Tensor
    oracle_calls: int


def run_standard_penalty(
    f: Objective, g: Objective, x0: Tensor, y0: Tensor, config: StandardPenaltyConfig
) -> StandardTrace:
    """Double loop: warm-started inner descents for y* (on g) and y_λ (on f/λ + g), then an Eq. 10 step."""
    generator = torch.Generator(device=x0.device).manual_seed(config.seed)
    oracle = GradientOracle(config.noise_std, config.batch, generator)
    lam = config.lam

    def penalised(x: Tensor, y: Tensor) -> Tensor:
        return f(x, y) / lam + g(x, y)

    x, y_star, y_lam = x0.detach().clone(), y0.detach().clone(), y0.detach().clone()
    xs = [x]
    for _ in range(config.outer_steps):
        y_star = inner_descent(g, x, y_star, config.inner_steps, config.inner_lr, oracle)
        y_lam = inner_descent(penalised, x, y_lam, config.inner_steps, config.inner_lr, oracle)
        x = x - config.outer_lr * penalty_gradient(f, g, x, y_star, y_lam, lam, oracle)
        xs.append(x)
    return StandardTrace(torch.stack(xs), oracle.calls)


@dataclass(frozen=True)
class QuadraticBilevel:
    """A quadratic example: g = ½‖y − A x‖², f = ½‖y − c‖² + ½ μ ‖x‖², with every quantity in closed form."""

    a: Tensor
    c: Tensor
    mu: float

    def f(self, x: Tensor, y: Tensor) -> Tensor:
        return 0.5 * ((y - self.c) ** 2).sum() + 0.5 * self.mu * (x**2).sum()

    def g(self, x: Tensor, y: Tensor) -> Tensor:
        return 0.5 * ((y - self.a @ x) ** 2).sum()

    def y_star(self, x: Tensor) -> Tensor:
        return self.a @ x

    def y_lam(self, x: Tensor, lam: float) -> Tensor:
        return (self.c + lam * self.a @ x) / (1.0 + lam)

    def hypergradient(self, x: Tensor) -> Tensor:
        """∇F = μ x + Aᵀ(A x − c)."""
        return self.mu * x + self.a.T @ (self.a @ x - self.c)

    def penalty_gradient(self, x: Tensor, lam: float) -> Tensor:
        """∇L*_λ = μ x + λ/(1 + λ) Aᵀ(A x − c)."""
        return self.mu * x + lam / (1.0 + lam) * self.a.T @ (self.a @ x - self.c)

    def penalty_minimiser(self, lam: float) -> Tensor:
        """The x with ∇L*_λ(x) = 0."""
        w = lam / (1.0 + lam)
        eye = torch.eye(self.a.shape[1], dtype=self.a.dtype)
        return torch.linalg.solve(self.mu * eye + w * self.a.T @ self.a, w * self.a.T @ self.c)

    def hyperobjective(self, x: Tensor) -> Tensor:
        return self.f(x, self.y_star(x))


def quadratic_example(n_x: int = 4, n_y: int = 6, mu: float = 0.1, seed: int = 0) -> QuadraticBilevel:
    """A random instance of :class:`QuadraticBilevel` in float64."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(n_y, n_x, generator=generator, dtype=torch.float64) / n_y**0.5
    c = torch.randn(n_y, generator=generator, dtype=torch.float64)
    return QuadraticBilevel(a, c, mu)
