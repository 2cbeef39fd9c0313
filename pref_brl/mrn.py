"""Method `mrn`: Meta-Reward-Net inside the PEBBLE loop (Liu, Bai, Du, Yang, "Meta-Reward-Net: Implicitly
Differentiable Reward Learning for Preference-based Reinforcement Learning", NeurIPS 2022; docs/mrn.md).

PEBBLE, plus a meta-step every `meta_every` env steps while labels remain:

1. a replay minibatch (drawn from this learner's own generator, so A's sampling stream is untouched) gets
   its rewards from the ensemble mean r̄_φ(s, a) *with* the graph to φ;
2. one differentiable SGD step of the critic on its TD loss, θ′ = θ − meta_lr · ∇_θ TD(θ, φ), evaluated
   with `torch.func.functional_call` on detached copies of the critic's parameters (no module copy; the
   critic itself, its optimiser and its gradients are never touched);
3. the outer loss: the preference cross-entropy of the updated critic's Q-values at the first (s, a) of
   each segment of the most recent `reward_batch` labelled pairs, both Q heads, times `outer_weight`;
4. its gradient to φ through the inner step, one Adam step with the ensemble's own optimiser, a relabel.

A's ordinary SAC update then runs as in `pebble` (on the relabelled buffer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from pref_brl.agents.replay import Batch
from pref_brl.agents.sac import squashed_sample
from pref_brl.feedback import Collaborators, PreferenceLearner
from pref_brl.reward_model import RewardEnsemble

if TYPE_CHECKING:
    from pref_brl.config import TrainConfig

GENERATOR_OFFSET = 41  # the meta-step generator's seed is the run seed plus this


def inner_step(critic: nn.Module, target: Tensor, obs: Tensor, act: Tensor, meta_lr: float) -> dict[str, Tensor]:
    """θ′ = θ − meta_lr · ∇_θ TD for the critic's parameters θ (taken as detached leaves), differentiable in
    `target` [B, 1]. TD = Σ_heads mean_batch (Q_head(s, a) − target)², SAC's critic loss."""
    theta = {name: p.detach().requires_grad_(True) for name, p in critic.named_parameters()}
    q = functional_call(critic, theta, (torch.cat([obs, act], dim=-1),))
    td = (q - target.unsqueeze(0)).pow(2).mean(dim=(1, 2)).sum()
    grads = torch.autograd.grad(td, list(theta.values()), create_graph=True)
    return {name: t - meta_lr * g for (name, t), g in zip(theta.items(), grads, strict=True)}


def preference_loss(critic: nn.Module, params: dict[str, Tensor], first0: Tensor, first1: Tensor,
                    labels: Tensor) -> Tensor:
    """Σ_heads mean_pairs CE of P(σ¹ ≻ σ⁰) = sigmoid(Q(s¹₀, a¹₀) − Q(s⁰₀, a⁰₀)) against `labels` [P] in [0, 1],
    with the critic at `params`; `first0`/`first1` [P, O+A] are the segments' first (s, a)."""
    q = functional_call(critic, params, (torch.cat([first0, first1], dim=0),)).squeeze(-1)  # [heads, 2P]
    n = first0.shape[0]
    logits = q[:, n:] - q[:, :n]
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype).expand_as(logits),
                                              reduction="none").mean(1).sum()


def outer_loss(critic: nn.Module, ensemble: RewardEnsemble, batch: Batch, next_value: Tensor, discount: float,
               first0: Tensor, first1: Tensor, labels: Tensor, meta_lr: float) -> Tensor:
    """The preference loss of the critic after one inner step whose TD target is r̄_φ(s, a) + γ·not_done·V(s′),
    as a function of the ensemble's parameters φ (V(s′) = `next_value` [B, 1], held fixed)."""
    reward = ensemble.member_rewards(torch.cat([batch.obs, batch.act], dim=-1)).mean(0).unsqueeze(-1)
    target = reward + discount * batch.not_done * next_value
    return preference_loss(critic, inner_step(critic, target, batch.obs, batch.act, meta_lr), first0, first1, labels)


class MRNLearner(PreferenceLearner):
    """PEBBLE with Meta-Reward-Net's meta-steps on the reward ensemble."""

    def __init__(self, cfg: TrainConfig, obs_dim: int, act_dim: int, loop: Collaborators) -> None:
        super().__init__(cfg, obs_dim, act_dim, loop)
        self.meta_generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed + GENERATOR_OFFSET)
        self.meta_steps = 0

    # ------------------------------------------------------------------------------------------ schedule
    def meta_due(self, step: int) -> bool:
        """Every `meta_every` env steps after the first feedback round, while labels remain."""
        return (self.rounds > 0 and self.total < self.cfg.max_feedback and step % self.cfg.meta_every == 0
                and len(self.prefs) > 0)

    def update_agents(self, step: int) -> dict[str, Any]:
        """A meta-step when one is due (reward update and relabel), then A's ordinary SAC update."""
        metrics = self.meta_step() if self.meta_due(step) else {}
        return {**super().update_agents(step), **metrics}

    # ------------------------------------------------------------------------------------------ meta-step
    @torch.no_grad()
    def next_value(self, batch: Batch) -> Tensor:
        """SAC's soft value of s′ under A's actor, target critic and α (a′ from this learner's generator)."""
        agent = self.loop.agent
        mu, log_std = agent.actor(batch.next_obs)
        eps = torch.randn(mu.shape, generator=self.meta_generator, device=mu.device)
        next_act, next_logp = squashed_sample(mu, log_std, eps)
        target_q = agent.critic_target(torch.cat([batch.next_obs, next_act], dim=-1)).min(0).values
        return target_q - agent.alpha.detach() * next_logp

    def outer_pairs(self) -> tuple[Tensor, Tensor, Tensor]:
        """First (s, a) of both segments [P, O+A] and labels [P] of the most recent `reward_batch` labels."""
        n = len(self.prefs)
        recent = slice(max(0, n - self.cfg.reward_batch), n)
        dev, dtype = self.cfg.device, self.ensemble.dtype
        return (self.prefs.sa0[recent, 0].to(dev, dtype), self.prefs.sa1[recent, 0].to(dev, dtype),
                self.prefs.labels[recent].to(dev, dtype))

    def hypergradient(self) -> tuple[list[Tensor], Tensor]:
        """d(outer_weight · outer loss)/dφ for every ensemble parameter, and the unweighted outer loss."""
        cfg = self.cfg
        batch = self.loop.replay.sample(cfg.batch_size, self.meta_generator)
        value = self.next_value(batch)
        first0, first1, labels = self.outer_pairs()
        loss = outer_loss(self.loop.agent.critic, self.ensemble, batch, value, cfg.discount, first0, first1,
                          labels, cfg.meta_lr)
        params = list(self.ensemble.parameters())
        grads = torch.autograd.grad(cfg.outer_weight * loss, params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)], loss.detach()

    def meta_step(self) -> dict[str, Tensor]:
        """One Adam step of the reward ensemble on the hypergradient, then a relabel of the replay buffer."""
        grads, loss = self.hypergradient()
        for p, g in zip(self.ensemble.parameters(), grads, strict=True):
            p.grad = g
        self.ensemble.optimizer.step()
        self.ensemble.optimizer.zero_grad(set_to_none=True)
        self.loop.replay.relabel(self.ensemble.mean_reward)
        self.meta_steps += 1
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        return {"mrn/outer_loss": loss.float(), "mrn/grad_norm": norm.detach().float(),
                "mrn/meta_steps": torch.tensor(float(self.meta_steps))}

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "mrn": {"generator": self.meta_generator.get_state(),
                                                "meta_steps": self.meta_steps}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.meta_generator.set_state(state["mrn"]["generator"])
        self.meta_steps = state["mrn"]["meta_steps"]
