"""Network building blocks: a plain MLP for the actor and a stacked MLP for critic/reward ensembles.

The stacked MLP keeps the weights of M independent networks in single [M, in, out] tensors and evaluates
all of them with one batched matmul, which on a CPU is markedly cheaper than M separate small matmuls.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def orthogonal_init(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Orthogonal weights and zero biases for every Linear layer (SPEC §3.6)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, generator=generator)
            nn.init.zeros_(layer.bias)


def mlp(in_dim: int, hidden_dim: int, depth: int, out_dim: int,
        generator: torch.Generator | None = None) -> nn.Sequential:
    """`depth` hidden ReLU layers of width `hidden_dim`, then a linear output; orthogonal init."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden_dim), nn.ReLU()]
        width = hidden_dim
    layers.append(nn.Linear(width, out_dim))
    net = nn.Sequential(*layers)
    orthogonal_init(net, generator)
    return net


class StackedMLP(nn.Module):
    """M independent MLPs evaluated together: x [B, in] or [M, B, in] -> [M, B, out].

    Used for SAC's twin critics (M = 2). `forward(x, detach=True)` evaluates with detached weights so a
    loss built on it (the actor loss) back-propagates into the input only, never into these parameters.
    """

    def __init__(self, members: int, in_dim: int, hidden_dim: int, depth: int, out_dim: int,
                 activation: str = "relu", init: str = "orthogonal",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * depth + [out_dim]
        self.members = members
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            self.weights.append(nn.Parameter(torch.empty(members, fan_in, fan_out)))
            self.biases.append(nn.Parameter(torch.zeros(members, 1, fan_out)))
        self.activation = activation
        self.reset_parameters(init, generator)

    def reset_parameters(self, init: str = "orthogonal", generator: torch.Generator | None = None) -> None:
        """Re-draw every member's weights (orthogonal, zero bias; or torch's default Linear init)."""
        with torch.no_grad():
            for w, b in zip(self.weights, self.biases):
                for m in range(self.members):
                    if init == "orthogonal":
                        # nn.Linear stores [out, in]; initialise in that layout for the same statistics.
                        w[m].copy_(nn.init.orthogonal_(torch.empty(w.shape[2], w.shape[1]), generator=generator).T)
                        b[m].zero_()
                    else:
                        bound = 1.0 / math.sqrt(w.shape[1])
                        w[m].uniform_(-bound, bound, generator=generator)
                        b[m].uniform_(-bound, bound, generator=generator)

    def _act(self, h: Tensor) -> Tensor:
        if self.activation == "relu":
            return torch.relu(h)
        return torch.nn.functional.leaky_relu(h)

    def forward(self, x: Tensor, detach: bool = False) -> Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.members, -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if detach:
                w, b = w.detach(), b.detach()
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = self._act(x)
        return x
