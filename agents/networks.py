"""Network building blocks: a plain MLP for the actor, a stacked MLP for critic/reward ensembles, and a
differentiable matrix product that runs on oneDNN on CPU.

The stacked MLP keeps the weights of M independent networks in single [M, in, out] tensors and evaluates
all of them with one batched matmul, which on a CPU is markedly cheaper than M separate small matmuls.

`matmul` exists for speed: torch's fp32 CPU matmul calls MKL's sgemm, which on this project's AMD cores
runs AVX2 kernels; oneDNN (`torch.ops.mkldnn._linear_pointwise`) runs AVX-512 ones, about twice the FLOP/s
(`pref-brl-bench` measures both). It is registered as an opaque op so that torch.compile calls it as is.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

ONEDNN = torch.backends.mkldnn.is_available()
MIN_ONEDNN_DIM = 16
"""products with a dimension below this (output heads, tiny test networks) stay on aten's matmul"""

_LIB = torch.library.Library("pref_brl", "DEF")
_LIB.define("onednn_mm(Tensor x, Tensor w) -> Tensor")


def _onednn_mm(x: Tensor, w: Tensor) -> Tensor:
    # _linear_pointwise computes x @ weight.T for a row-major x and a weight of any strides.
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), w.t(), None, "none", [], "")


_LIB.impl("onednn_mm", _onednn_mm, "CPU")


@torch.library.register_fake("pref_brl::onednn_mm")
def _onednn_mm_fake(x: Tensor, w: Tensor) -> Tensor:
    return x.new_empty(x.shape[0], w.shape[1])


def onednn_eligible(x: Tensor, *dims: int) -> bool:
    """Whether products on `x` with these dimensions go to oneDNN (float32 on CPU, no small dimension)."""
    return ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32 and min(dims) >= MIN_ONEDNN_DIM


def product(x: Tensor, w: Tensor) -> Tensor:
    """x [B, K] @ w [K, N] without autograd: oneDNN for large CPU fp32 products, aten otherwise."""
    if onednn_eligible(x, x.shape[0], x.shape[1], w.shape[1]):
        return torch.ops.pref_brl.onednn_mm(x.contiguous(), w)
    return x @ w


class _MatMul(torch.autograd.Function):
    """x @ w with a hand-written backward built from the same products (works under torch.func.grad)."""

    @staticmethod
    def forward(x: Tensor, w: Tensor) -> Tensor:
        return product(x, w)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, w = ctx.saved_tensors
        grad_x = product(grad, w.t()) if ctx.needs_input_grad[0] else None
        grad_w = product(x.t(), grad) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w


def matmul(x: Tensor, w: Tensor) -> Tensor:
    """Differentiable x [B, K] @ w [K, N]."""
    return _MatMul.apply(x, w)


_POST_OPS = {"none": [], "relu": [], "leaky_relu": [0.01]}
_SLOPES = {"relu": 0.0, "leaky_relu": 0.01}


class _DenseAct(torch.autograd.Function):
    """activation(x @ w + b) in one fused oneDNN call; the backward reads the activation's slope off the
    output's sign (y > 0 exactly where the input was > 0, for relu and leaky relu alike)."""

    @staticmethod
    def forward(x: Tensor, w: Tensor, b: Tensor, activation: str) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), w.t(), b.reshape(-1), activation,
                                                  _POST_OPS[activation], "")

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, w, _, activation = inputs
        ctx.activation, ctx.bias_shape = activation, inputs[2].shape
        ctx.save_for_backward(x, w, output)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, w, y = ctx.saved_tensors
        if ctx.activation == "leaky_relu":
            grad = torch.ops.aten.leaky_relu_backward(grad, y, _SLOPES["leaky_relu"], True)
        elif ctx.activation == "relu":
            grad = torch.ops.aten.threshold_backward(grad, y, 0.0)
        grad_x = product(grad, w.t()) if ctx.needs_input_grad[0] else None
        grad_w = product(x.t(), grad) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0).reshape(ctx.bias_shape) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


def dense_act(x: Tensor, w: Tensor, b: Tensor, activation: str = "none") -> Tensor:
    """Differentiable activation(x [B, K] @ w [K, N] + b [.., N]): fused on CPU (oneDNN), plain elsewhere.

    `activation` is "none", "relu" or "leaky_relu" (slope 0.01).
    """
    if not torch.is_grad_enabled():
        return dense(x, w, b, activation)
    if onednn_eligible(x, x.shape[0], x.shape[1], w.shape[1]):
        return _DenseAct.apply(x, w, b, activation)
    h = x @ w + b
    if activation == "relu":
        return torch.relu(h)
    return torch.nn.functional.leaky_relu(h) if activation == "leaky_relu" else h


@torch.no_grad()
def dense(x: Tensor, w: Tensor, b: Tensor, activation: str = "none") -> Tensor:
    """activation(x [B, K] @ w [K, N] + b [.., N]) without autograd: one fused oneDNN call on CPU.

    `activation` is "none", "relu" or "leaky_relu" (slope 0.01).
    """
    if onednn_eligible(x, x.shape[0], x.shape[1], w.shape[1]):
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), w.t(), b.reshape(-1), activation,
                                                  _POST_OPS[activation], "")
    h = torch.addmm(b.reshape(1, -1), x, w)
    if activation == "relu":
        return h.relu_()
    return torch.nn.functional.leaky_relu(h, inplace=True) if activation == "leaky_relu" else h


def orthogonal_init(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Orthogonal weights and zero biases for every Linear layer (as in B-Pref's SAC)."""
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
