"""One SAC update as a single compiled, purely functional graph (the `compile=True` path of `SAC.update`).

The plain path builds the losses on `nn.Module`s, calls `.backward()` and steps `torch.optim.Adam`. This
module computes the same update from explicit tensors, in one `torch.compile`d function:

1. critics: the target (actor and target critics, no gradient), the loss and its gradient with
   `torch.func.grad_and_value`, then an Adam step written like `torch.optim.Adam`'s single-tensor one;
2. actor: the loss on the *updated* critics (their weights enter as constants, so no gradient reaches
   them), its gradient plus an optional extra gradient computed outside (the bilevel agent's Ψ term), Adam;
3. temperature: its gradient is closed-form, −mean(log π + target entropy), then Adam.

The graph mutates the parameters and the optimisers' own state tensors (`exp_avg`, `exp_avg_sq`, `step`)
in place, so `SAC.state_dict()`, checkpoints and resumes are the same whichever path ran. The random draws
stay outside the graph, from the agent's generator in the plain path's order. Matrix products are
`agents.networks.matmul` (oneDNN on CPU); nothing in the step copies to the host.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from pref_brl.agents.networks import matmul

if TYPE_CHECKING:
    from pref_brl.agents.replay import Batch
    from pref_brl.agents.sac import SAC

# ---------------------------------------------------------------------------------------- functional nets
def actor_forward(params: Sequence[Tensor], obs: Tensor, log_std_min: float,
                  log_std_max: float) -> tuple[Tensor, Tensor]:
    """`agents.sac.Actor.forward` on explicit nn.Linear parameters [w0, b0, w1, b1, ...] (w is [out, in])."""
    h, last = obs, len(params) // 2 - 1
    for i in range(last + 1):
        h = matmul(h, params[2 * i].t()) + params[2 * i + 1]
        if i < last:
            h = torch.relu(h)
    mu, log_std = h.chunk(2, dim=-1)
    log_std = log_std_min + 0.5 * (log_std_max - log_std_min) * (torch.tanh(log_std) + 1)
    return mu, log_std


def critic_forward(weights: Sequence[Tensor], biases: Sequence[Tensor], x: Tensor) -> Tensor:
    """`StackedMLP.forward` (ReLU) on explicit weights [M, in, out] and biases [M, 1, out]: [M, B, out]."""
    outs, last = [], len(weights) - 1
    for m in range(weights[0].shape[0]):
        h = x
        for i, (w, b) in enumerate(zip(weights, biases)):
            if w.shape[-1] == 1:  # a Q head: a dot product per row, left to the compiler to fuse
                h = (h * w[m, :, 0]).sum(-1, keepdim=True) + b[m]
            else:
                h = matmul(h, w[m]) + b[m]
            if i < last:
                h = torch.relu(h)
        outs.append(h)
    return torch.stack(outs)


def squashed_sample(mu: Tensor, log_std: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """Same formula as `agents.sac.squashed_sample` (kept here so the graph has no module imports)."""
    u = mu + log_std.exp() * eps
    log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)
    log_det = 2.0 * (math.log(2.0) - u - torch.nn.functional.softplus(-2.0 * u))
    return torch.tanh(u), log_prob - log_det.sum(-1, keepdim=True)


# ---------------------------------------------------------------------------------------- the step
class AdamState(NamedTuple):
    """A torch.optim.Adam's per-parameter state tensors and its (single) hyper-parameter group."""

    exp_avg: list[Tensor]
    exp_avg_sq: list[Tensor]
    step: list[Tensor]
    lr: float
    betas: tuple[float, float]
    eps: float
    factors: Tensor
    """(−lr / (1 − β1^t), √(1 − β2^t)) of the coming step t, formed in double outside the graph (inside
    it, inductor would recompute the powers for every vector of every parameter)"""


class Constants(NamedTuple):
    """Per-agent constants of the step (the graph specialises on them)."""

    discount: float
    log_std_min: float
    log_std_max: float
    target_entropy: float
    update_actor: bool
    learn_temperature: bool


def adam_(params: Sequence[Tensor], grads: Sequence[Tensor], state: AdamState) -> None:
    """In-place Adam step, the arithmetic of torch.optim.Adam (no weight decay, no amsgrad)."""
    beta1, beta2 = state.betas
    for s in state.step:
        s.add_(1)
    neg_step_size, bias2_sqrt = state.factors[0], state.factors[1]
    for p, g, m, v in zip(params, grads, state.exp_avg, state.exp_avg_sq):
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        p.add_(m / (v.sqrt() / bias2_sqrt + state.eps) * neg_step_size)


def sac_step(actor: list[Tensor], critic: tuple[list[Tensor], list[Tensor]],
             target: tuple[list[Tensor], list[Tensor]], log_alpha: Tensor,
             opts: tuple[AdamState | None, AdamState, AdamState | None], batch: tuple[Tensor, ...],
             noise: tuple[Tensor, Tensor | None], extra_grads: list[Tensor] | None,
             k: Constants) -> tuple[Tensor, ...]:
    """One SAC update, in place; returns (critic loss, actor loss, mean log π) — zeros for skipped parts."""
    obs, act, reward, next_obs, not_done = batch
    alpha = log_alpha.exp()
    mu, log_std = actor_forward(actor, next_obs, k.log_std_min, k.log_std_max)
    next_act, next_logp = squashed_sample(mu, log_std, noise[0])
    target_q = critic_forward(*target, torch.cat([next_obs, next_act], dim=-1)).min(0).values
    y = reward + k.discount * not_done * (target_q - alpha * next_logp)
    obs_act = torch.cat([obs, act], dim=-1)

    def critic_loss(weights: list[Tensor], biases: list[Tensor]) -> Tensor:
        q = critic_forward(weights, biases, obs_act)
        return (q - y.unsqueeze(0)).pow(2).mean(dim=(1, 2)).sum()

    grads, c_loss = torch.func.grad_and_value(critic_loss, argnums=(0, 1))(*critic)
    adam_([*critic[0], *critic[1]], [*grads[0], *grads[1]], opts[1])
    zero = torch.zeros((), dtype=c_loss.dtype, device=c_loss.device)
    if not k.update_actor:
        return c_loss, zero, zero

    def actor_loss(params: list[Tensor]) -> tuple[Tensor, Tensor]:
        mu, log_std = actor_forward(params, obs, k.log_std_min, k.log_std_max)
        pi, logp = squashed_sample(mu, log_std, noise[1])
        q = critic_forward(*critic, torch.cat([obs, pi], dim=-1)).min(0).values
        return (alpha * logp - q).mean(), logp

    a_grads, (a_loss, logp) = torch.func.grad_and_value(actor_loss, has_aux=True)(actor)
    if extra_grads is not None:
        a_grads = [g + e for g, e in zip(a_grads, extra_grads)]
    adam_(actor, a_grads, opts[0])
    if k.learn_temperature:
        adam_([log_alpha], [-(logp + k.target_entropy).mean()], opts[2])
    return c_loss, a_loss, logp.mean()


_compiled_step: Callable[..., tuple[Tensor, ...]] | None = None
_WARMUP: dict[tuple, float] = {}  # graph variant -> seconds of its first call (process-wide, like the cache)


def warmup_seconds() -> float:
    """Seconds this process spent in first calls of compiled graphs (compilation or cache loading)."""
    return sum(_WARMUP.values())


def compiled_step() -> Callable[..., tuple[Tensor, ...]]:
    """`sac_step` under torch.compile (one graph per network shape and per set of constants)."""
    global _compiled_step
    if _compiled_step is None:
        # Every agent shape and flag combination is its own graph; a benchmark process holds several.
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        _compiled_step = torch.compile(sac_step, dynamic=False, fullgraph=True)
    return _compiled_step


# ---------------------------------------------------------------------------------------- the agent side
def adam_state(opt: torch.optim.Optimizer, params: Sequence[Tensor]) -> AdamState:
    """The state tensors of `opt` for `params`, created as torch.optim.Adam would on its first step."""
    group = opt.param_groups[0]
    if len(opt.param_groups) != 1 or group["weight_decay"] or group["amsgrad"] or group["maximize"]:
        raise ValueError("the compiled SAC update supports plain Adam only (one group, no weight decay)")
    m, v, s = [], [], []
    for p in params:
        state = opt.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        elif state["step"].device != p.device:  # a CPU step counter loaded into a CUDA run
            state["step"] = state["step"].to(p.device)
        m.append(state["exp_avg"])
        v.append(state["exp_avg_sq"])
        s.append(state["step"])
    lr, (beta1, beta2) = float(group["lr"]), group["betas"]
    # torch.optim.Adam forms the bias corrections in double precision, from the step count as a float.
    if s[0].device.type == "cpu":
        t = float(s[0]) + 1
        factors = torch.tensor([-lr / (1 - beta1**t), math.sqrt(1 - beta2**t)], dtype=params[0].dtype)
    else:  # no host sync: the same arithmetic on the device
        t = s[0].to(torch.float64) + 1
        factors = torch.stack([-lr / (1 - beta1**t), (1 - beta2**t).sqrt()]).to(params[0].dtype)
    return AdamState(m, v, s, lr, (beta1, beta2), float(group["eps"]), factors)


def update(agent: SAC, batch: Batch, update_actor: bool,
           actor_extra: Callable[[], Tensor] | None = None) -> dict[str, Tensor]:
    """One compiled SAC update of `agent` (critics, then actor and temperature); metrics as the plain path."""
    cfg = agent.cfg
    actor, critic, target = _parameters(agent)
    shape = (batch.obs.shape[0], agent.act_dim)
    noise = (torch.randn(shape, generator=agent.generator, device=agent.device),
             torch.randn(shape, generator=agent.generator, device=agent.device) if update_actor else None)
    extra = _extra_grads(actor_extra, actor) if update_actor else None
    k = Constants(cfg.discount, cfg.log_std_min, cfg.log_std_max, agent.target_entropy, update_actor,
                  agent.learn_temperature)
    learn_alpha = update_actor and agent.learn_temperature  # a shared temperature's state is left alone
    opts = (adam_state(agent.actor_opt, actor) if update_actor else None,
            adam_state(agent.critic_opt, [*critic[0], *critic[1]]),
            adam_state(agent.alpha_opt, [agent.log_alpha]) if learn_alpha else None)
    variant = (k, extra is not None, tuple(batch.obs.shape), tuple(p.shape for p in critic[0]),
               tuple(p.shape for p in actor))
    start = time.perf_counter()
    with torch.no_grad():
        c_loss, a_loss, logp_mean = compiled_step()(actor, critic, target, agent.log_alpha, opts, tuple(batch),
                                                    noise, extra, k)
    if variant not in _WARMUP:  # the first call of a graph in this process includes its compilation
        _WARMUP[variant] = time.perf_counter() - start
    metrics = {"train/critic_loss": c_loss}
    if update_actor:
        metrics.update({"train/actor_loss": a_loss, "train/ent_coef": agent.log_alpha.detach().exp(),
                        "train/entropy": -logp_mean})
    return metrics


def _parameters(agent: SAC) -> tuple[list[Tensor], tuple[list[Tensor], list[Tensor]],
                                     tuple[list[Tensor], list[Tensor]]]:
    """The agent's actor, critic and target parameter lists, cached on the agent while its modules stay
    the same objects (their parameters are updated in place by every path, resets and loads included)."""
    modules = (agent.actor, agent.critic, agent.critic_target)
    cached = agent.__dict__.get("_fast_parameters")
    if cached is None or any(a is not b for a, b in zip(cached[0], modules)):
        lists = (list(agent.actor.parameters()), (list(agent.critic.weights), list(agent.critic.biases)),
                 (list(agent.critic_target.weights), list(agent.critic_target.biases)))
        cached = agent.__dict__["_fast_parameters"] = (modules, lists)
    return cached[1]


def _extra_grads(actor_extra: Callable[[], Tensor] | None, params: list[Tensor]) -> list[Tensor] | None:
    """Gradient of the optional extra actor-loss term, taken eagerly (None when it has no gradient)."""
    if actor_extra is None:
        return None
    with torch.enable_grad():
        extra = actor_extra()
        if not extra.requires_grad:
            return None
        grads = torch.autograd.grad(extra, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
