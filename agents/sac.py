"""Soft actor-critic as PEBBLE/B-Pref run it (Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", 2018).

Tanh-squashed Gaussian actor (log σ squashed into [log_std_min, log_std_max]), twin Q critics stacked in
one batched network, learned temperature on log α with target entropy −|A|, Polyak target updates every
`target_update_every` steps. `update(batch, step)` returns a metrics dict of detached tensors; the agent
never logs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pref_brl.agents import fast_update
from pref_brl.agents.networks import StackedMLP, mlp
from pref_brl.agents.replay import Batch


@dataclass(frozen=True)
class SACConfig:
    """Hyper-parameters of one SAC agent."""

    hidden_dim: int = 256
    """width of every hidden layer (actor and critics)"""
    hidden_depth: int = 2
    """number of hidden layers (actor and critics)"""
    actor_lr: float = 5e-4
    """Adam learning rate of the actor"""
    critic_lr: float = 5e-4
    """Adam learning rate of the critics"""
    alpha_lr: float = 1e-4
    """Adam learning rate of log α"""
    init_temperature: float = 0.1
    """initial entropy coefficient α"""
    discount: float = 0.99
    """γ"""
    tau: float = 0.005
    """Polyak coefficient of the target critics"""
    target_update_every: int = 2
    """update the target critics every this many updates"""
    actor_update_every: int = 1
    """update the actor and temperature every this many updates"""
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    compile: bool = False
    """run each update as one compiled functional graph (agents.fast_update); False: the plain
    autograd + torch.optim path. Both give the same update up to float rounding and share one state format"""


class Actor(nn.Module):
    """MLP -> (mean, log σ) of a Gaussian squashed by tanh."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: SACConfig,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.trunk = mlp(obs_dim, cfg.hidden_dim, cfg.hidden_depth, 2 * act_dim, generator)
        self.log_std_min, self.log_std_max = cfg.log_std_min, cfg.log_std_max

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_std = self.trunk(obs).chunk(2, dim=-1)
        log_std = torch.tanh(log_std)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1)
        return mu, log_std


def squashed_sample(mu: Tensor, log_std: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """a = tanh(μ + σ ε) and log π(a|s), with the numerically stable tanh log-determinant."""
    u = mu + log_std.exp() * eps
    log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)
    log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    return torch.tanh(u), log_prob - log_det.sum(-1, keepdim=True)


def squashed_log_prob(mu: Tensor, log_std: Tensor, action: Tensor, clip: float = 1 - 1e-6) -> Tensor:
    """log π(a|s) of given squashed actions (inverse tanh of the clipped action)."""
    u = torch.atanh(action.clamp(-clip, clip))
    eps = (u - mu) / log_std.exp()
    log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)
    log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    return log_prob - log_det.sum(-1, keepdim=True)


@torch.no_grad()
def act_with(actor: Actor, obs: np.ndarray, noise: np.ndarray | None, device: torch.device) -> np.ndarray:
    """Action for one observation: tanh(μ) if `noise` is None, else tanh(μ + σ·noise).

    Taking the standard-normal noise from the caller lets two policies share one noise stream
    (common random numbers for paired rollouts).
    """
    obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0)
    mu, log_std = actor(obs_t)
    if noise is None:
        return torch.tanh(mu)[0].cpu().numpy()
    eps = torch.as_tensor(noise, dtype=torch.float32, device=device).unsqueeze(0)
    return torch.tanh(mu + log_std.exp() * eps)[0].cpu().numpy()


class SAC:
    """A SAC agent; `device` is an argument and every random draw comes from `generator`."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: SACConfig, device: str | torch.device = "cpu",
                 seed: int = 0) -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.init_generator = torch.Generator().manual_seed(seed)  # network (re-)initialisation only
        self.actor = Actor(obs_dim, act_dim, cfg, self.init_generator).to(self.device)
        self.critic = StackedMLP(2, obs_dim + act_dim, cfg.hidden_dim, cfg.hidden_depth, 1,
                                 generator=self.init_generator).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(cfg.init_temperature), device=self.device, requires_grad=True)
        self.target_entropy = -float(act_dim)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.updates = 0
        self.learn_temperature = True

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.exp()

    # ---------------------------------------------------------------------------------- acting
    def act(self, obs: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Action for one observation (see :func:`act_with`)."""
        return act_with(self.actor, obs, noise, self.device)

    def sample_action(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Reparameterised (action, log π) for a batch of observations."""
        mu, log_std = self.actor(obs)
        eps = torch.randn(mu.shape, generator=self.generator, device=self.device)
        return squashed_sample(mu, log_std, eps)

    def q_values(self, obs: Tensor, act: Tensor, detach_weights: bool = False) -> Tensor:
        """Both critics' Q(s, a): [2, B, 1]."""
        return self.critic(torch.cat([obs, act], dim=-1), detach=detach_weights)

    # ---------------------------------------------------------------------------------- losses
    def critic_loss(self, batch: Batch) -> Tensor:
        """Σ_i MSE(Q_i(s, a), r + γ·not_done·(min Q'(s', a') − α log π(a'|s'))); truncations bootstrap."""
        with torch.no_grad():
            next_act, next_logp = self.sample_action(batch.next_obs)
            target_q = self.critic_target(torch.cat([batch.next_obs, next_act], dim=-1)).min(0).values
            target_v = target_q - self.alpha * next_logp
            target = batch.reward + self.cfg.discount * batch.not_done * target_v
        q = self.q_values(batch.obs, batch.act)
        return (q - target.unsqueeze(0)).pow(2).mean(dim=(1, 2)).sum()

    def actor_loss(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """(α log π − min Q) with the critic's weights detached; also returns log π for the temperature."""
        act, logp = self.sample_action(obs)
        q = self.q_values(obs, act, detach_weights=True).min(0).values
        return (self.alpha.detach() * logp - q).mean(), logp

    def alpha_loss(self, logp: Tensor) -> Tensor:
        """Temperature loss on log α: −log α · (log π + target entropy)."""
        return -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()

    # ---------------------------------------------------------------------------------- updates
    def update(self, batch: Batch, actor_extra: Callable[[], Tensor] | None = None) -> dict[str, Tensor]:
        """One SAC update: critics, then actor and temperature, then (every k updates) the targets.

        `actor_extra()` (optional) returns a scalar added to the actor loss before its backward pass
        (the bilevel method's upper-loss term for the penalised agent).
        """
        update_actor = self.updates % self.cfg.actor_update_every == 0
        if self.cfg.compile:
            metrics = fast_update.update(self, batch, update_actor, actor_extra)
        else:
            metrics = self.update_critic(batch)
            if update_actor:
                metrics.update(self.update_actor(batch.obs, actor_extra))
        if self.updates % self.cfg.target_update_every == 0:
            self.soft_update_target()
        self.updates += 1
        return metrics

    def update_critic(self, batch: Batch) -> dict[str, Tensor]:
        loss = self.critic_loss(batch)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        return {"train/critic_loss": loss.detach()}

    def update_actor(self, obs: Tensor, actor_extra: Callable[[], Tensor] | None = None) -> dict[str, Tensor]:
        loss, logp = self.actor_loss(obs)
        total = loss if actor_extra is None else loss + actor_extra()
        self.actor_opt.zero_grad(set_to_none=True)
        if self.learn_temperature:
            a_loss = self.alpha_loss(logp)
            self.alpha_opt.zero_grad(set_to_none=True)
            (total + a_loss).backward()
            self.alpha_opt.step()
        else:
            total.backward()
        self.actor_opt.step()
        return {"train/actor_loss": loss.detach(), "train/ent_coef": self.alpha.detach(),
                "train/entropy": -logp.detach().mean()}

    @torch.no_grad()
    def soft_update_target(self) -> None:
        torch._foreach_lerp_(list(self.critic_target.parameters()), list(self.critic.parameters()),
                             self.cfg.tau)

    def reset_critic(self) -> None:
        """Fresh critic, target and critic optimiser (PEBBLE does this after the first reward round)."""
        self.critic.reset_parameters(generator=self.init_generator)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=self.cfg.critic_lr)

    # ---------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "alpha_opt": self.alpha_opt.state_dict(), "generator": self.generator.get_state(),
                "init_generator": self.init_generator.get_state(),
                "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.generator.set_state(state["generator"])
        self.init_generator.set_state(state["init_generator"])
        self.updates = state["updates"]
