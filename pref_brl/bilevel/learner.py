"""Method `bilevel` (SPEC §5) and method `sobirl` (SPEC §5.5) inside the PEBBLE loop.

`bilevel`: agent A is PEBBLE's agent (solves g, plays θ*, is evaluated); agent B (θ_λ) is a copy of A made
after the first reward round, with its own critic and A's temperature, and an actor loss with the extra
score-function term κ Ψ_f. Before each feedback round, E episode pairs are collected: A then B from the same
reset seed and the same action-noise stream (common random numbers). The reward update adds the penalty
λ [R^γ(T_A) − R^γ(T_B)] to every member's cross-entropy.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from agents.sac import SAC, squashed_log_prob
from pref_brl.bilevel.penalty import (
    discounted_returns,
    gaussian_kl,
    penalty_term,
    shared_states_term,
    sobirl_term,
    stack_episodes,
    upper_score_surrogate,
)
from pref_brl.feedback import PreferenceLearner
from pref_brl.preferences import Episode

if TYPE_CHECKING:
    from pref_brl.config import TrainConfig
    from pref_brl.trainer import Trainer

PSI_PAIRS = 16  # labelled pairs per Ψ_f estimate (per B actor update)
PSI_STEPS = 16  # sampled steps per pair (the 2H-step sum is estimated from them, unbiased)
PSI_MEMORY = 4  # Ψ_f uses the pairs labelled in the last this-many rounds
PSI_CLIP = 0.2  # Ψ_f's probability ratios π_θλ/π_old are capped at 1 + PSI_CLIP (PPO-style)
SHARED_STATES = 1024  # replay states for the shared-states estimator and for bilevel/kl_ab


class BilevelLearner(PreferenceLearner):
    """PEBBLE with the bilevel penalty reward update and the penalised agent B."""

    def __init__(self, cfg: TrainConfig, obs_dim: int, act_dim: int, trainer: Trainer) -> None:
        super().__init__(cfg, obs_dim, act_dim, trainer)
        self.lam = (1.0 - cfg.discount) * cfg.penalty_weight
        self.kappa = 1.0 / cfg.penalty_weight
        self.pending: Episode | None = None  # A's half of the pair being collected
        self.pairs: list[tuple[Episode, Episode]] = []  # last E complete (A, B) pairs
        self.open_pair = False  # the running episode is A's half of a pair
        self.psi_start = 0  # first labelled pair collected once B exists
        self.psi_losses: Tensor | None = None  # current ℓ_i of the pairs in psi_slice()
        self.psi_old_logp: Tensor | None = None  # log π_θλ at their steps when ℓ_i was computed [P, 2H]
        self.psi_rng = torch.Generator().manual_seed(cfg.seed + 31)
        self.paired = cfg.estimator == "paired-rollouts"

    # ------------------------------------------------------------------------------------------ acting
    @property
    def agent_b(self) -> SAC | None:
        return self.trainer.agents.get("B")

    def next_episode(self, step: int, reset_seed: int) -> tuple[str, int]:
        """A, except in the paired block just before a feedback round: A then B on one reset seed."""
        if self.pending is not None:
            return "B", self.pending.reset_seed
        block = 2 * self.cfg.paired_episodes * self.trainer.ep_len
        self.open_pair = self.b_active() and self.paired and 0 < self.next_round - step <= block
        return "A", reset_seed

    def b_active(self) -> bool:
        """B matters only while labels remain: once the budget is spent the reward is final, so B is frozen."""
        return self.agent_b is not None and self.total < self.cfg.max_feedback

    def add_episode(self, episode: Episode) -> None:
        super().add_episode(episode)
        if episode.agent == "B" and self.pending is not None:
            self.pairs = (self.pairs + [(self.pending, episode)])[-self.cfg.paired_episodes:]
            self.pending = None
        elif episode.agent == "A" and self.open_pair:
            self.pending = episode
        self.open_pair = False

    def query_agent(self) -> str | None:
        """B's episodes (f is evaluated at θ_λ) once B has completed one; before that, any agent's."""
        if self.agent_b is None or not self.paired or self.cfg.query_agent == "both":
            return None
        has_b = any(len(ep) >= self.cfg.segment for ep in self.store.episodes("B"))
        return "B" if has_b else None

    # ------------------------------------------------------------------------------------------ agents
    def update_agents(self, step: int) -> dict[str, Any]:
        metrics = super().update_agents(step)
        if self.b_active():
            batch = self.sample_batch(step)
            b_metrics = self.agent_b.update(batch, actor_extra=self.actor_term)
            metrics.update({k.replace("train/", "train_B/"): v for k, v in b_metrics.items()})
        return metrics

    def psi_slice(self) -> slice:
        """Labelled pairs that enter Ψ_f: those of the last PSI_MEMORY rounds since B exists."""
        start = max(self.psi_start, len(self.prefs) - PSI_MEMORY * self.cfg.reward_batch)
        return slice(start, len(self.prefs))

    def actor_term(self) -> Tensor:
        """κ Ψ_f(θ_λ) on a random minibatch of recent labelled pairs (zero before any exist)."""
        window = self.psi_slice()
        n = window.stop - window.start
        if self.psi_losses is None or n < 2 or len(self.psi_losses) != n:
            return torch.zeros((), device=self.cfg.device)
        idx = torch.randint(0, n, (min(PSI_PAIRS, n),), generator=self.psi_rng)
        rows = idx + window.start
        sa = torch.cat([self.prefs.sa0[rows], self.prefs.sa1[rows]], dim=1)  # [P, 2H, D]
        steps = torch.randint(0, sa.shape[1], (len(idx), PSI_STEPS), generator=self.psi_rng)
        sa = sa.gather(1, steps[..., None].expand(-1, -1, sa.shape[-1])).to(self.cfg.device)
        obs, act = sa[..., : self.ensemble.obs_dim], sa[..., self.ensemble.obs_dim:]
        mu, log_std = self.agent_b.actor(obs)
        log_probs = squashed_log_prob(mu, log_std, act).squeeze(-1)
        old = self.psi_old_logp[idx].gather(1, steps.to(self.psi_old_logp.device))
        return self.kappa * upper_score_surrogate(log_probs, self.psi_losses[idx], sa_steps(self.prefs),
                                                  old_log_probs=old, clip=PSI_CLIP)

    # ------------------------------------------------------------------------------------------ feedback
    def reset_after_first_round(self) -> dict[str, Any]:
        metrics = super().reset_after_first_round()
        self.trainer.agents["B"] = copy_agent(self.trainer.agents["A"])
        self.psi_start = len(self.prefs)  # Ψ_f only uses pairs labelled from now on
        return metrics

    def train_reward(self) -> dict[str, float]:
        extra, diag = self.penalty_loss_fn()
        metrics = super().train_reward(extra)
        if "reward/extra_grad_norm" in metrics:
            diag["bilevel/penalty_grad_norm"] = metrics["reward/extra_grad_norm"]
        diag["bilevel/ce_grad_norm"] = metrics["reward/ce_grad_norm"]
        self._refresh_psi_losses()
        return {**metrics, **diag, **self.kl_ab()}

    def penalty_loss_fn(self):
        """The per-member penalty closure for this round (None if no paired data yet) and diagnostics."""
        diag: dict[str, float] = {"bilevel/lambda": self.lam}
        if self.agent_b is None:
            return None, diag
        if not self.paired:
            obs, act_a, act_b = self._shared_states()
            return (lambda ens: shared_states_term(ens, obs, act_a, act_b, self.lam, self.cfg.discount)), diag
        if not self.pairs:
            return None, diag
        sa_a, m_a = stack_episodes([a for a, _ in self.pairs], self.cfg.device)
        sa_b, m_b = stack_episodes([b for _, b in self.pairs], self.cfg.device)
        with torch.no_grad():
            gap = (discounted_returns(self.ensemble, sa_a, m_a, self.cfg.discount).mean()
                   - discounted_returns(self.ensemble, sa_b, m_b, self.cfg.discount).mean())
        diag["bilevel/gap"] = float(gap)
        return (lambda ens: penalty_term(ens, sa_a, m_a, sa_b, m_b, self.lam, self.cfg.discount)), diag

    @torch.no_grad()
    def _shared_states(self) -> tuple[Tensor, Tensor, Tensor]:
        obs = self.trainer.replay.recent_obs(10 * SHARED_STATES)
        idx = torch.randint(0, len(obs), (min(SHARED_STATES, len(obs)),), generator=self.psi_rng)
        obs = obs[idx.to(obs.device)]
        act_a, _ = self.trainer.agents["A"].sample_action(obs)
        act_b, _ = self.agent_b.sample_action(obs)
        return obs, act_a, act_b

    @torch.no_grad()
    def _refresh_psi_losses(self) -> None:
        """ℓ_i of the Ψ_f pairs under the freshly trained ensemble (ensemble-mean CE, detached)."""
        window = self.psi_slice()
        if self.agent_b is None or window.stop - window.start == 0:
            self.psi_losses = None
            return
        dev = self.cfg.device
        sa0, sa1 = self.prefs.sa0[window].to(dev), self.prefs.sa1[window].to(dev)
        logits = self.ensemble.pair_logits(sa0, sa1)
        self.psi_losses = self.ensemble.pair_loss(logits, self.prefs.labels[window].to(dev)).mean(0)
        sa = torch.cat([sa0, sa1], dim=1)  # [P, 2H, D]: the trust region's anchor, log π_θλ now
        mu, log_std = self.agent_b.actor(sa[..., : self.ensemble.obs_dim])
        self.psi_old_logp = squashed_log_prob(mu, log_std, sa[..., self.ensemble.obs_dim:]).squeeze(-1)

    @torch.no_grad()
    def kl_ab(self) -> dict[str, float]:
        """bilevel/kl_ab: mean KL(π_B ‖ π_A) on recent replay states."""
        if self.agent_b is None:
            return {}
        obs = self.trainer.replay.recent_obs(SHARED_STATES)
        mu_b, ls_b = self.agent_b.actor(obs)
        mu_a, ls_a = self.trainer.agents["A"].actor(obs)
        return {"bilevel/kl_ab": float(gaussian_kl(mu_b, ls_b, mu_a, ls_a).mean())}

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "has_b": self.agent_b is not None, "pending": self.pending,
                "pairs": self.pairs, "psi_start": self.psi_start, "psi_losses": self.psi_losses,
                "psi_old_logp": self.psi_old_logp,
                "psi_rng": self.psi_rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state["has_b"] and self.agent_b is None:
            self.trainer.agents["B"] = copy_agent(self.trainer.agents["A"])  # weights are loaded next
        self.pending, self.pairs = state["pending"], state["pairs"]
        self.psi_start, self.psi_losses = state["psi_start"], state["psi_losses"]
        self.psi_old_logp = state["psi_old_logp"]
        self.psi_rng.set_state(state["psi_rng"])


def sa_steps(prefs) -> int:
    """Steps in one labelled pair (both segments): 2H."""
    return 2 * prefs.sa0.shape[1]


def copy_agent(agent: SAC) -> SAC:
    """B := A (actor, critic, target, optimiser states), sharing A's temperature, which only A learns."""
    twin = copy.deepcopy(agent)
    twin.log_alpha = agent.log_alpha
    twin.alpha_opt = agent.alpha_opt
    twin.learn_temperature = False
    twin.generator = torch.Generator(device=agent.device).manual_seed(int(agent.updates) + 977)
    return twin


class SoBiRLLearner(PreferenceLearner):
    """Method `sobirl`: one agent; reward loss CE + SoBiRL's model-free implicit term after a warm-up."""

    ALT_ACTIONS = 4

    def train_reward(self) -> dict[str, float]:
        return super().train_reward(self._sobirl_closure() if self.rounds >= self.cfg.sobirl_warmup else None)

    @torch.no_grad()
    def _sobirl_closure(self):
        recent = slice(max(0, len(self.prefs) - PSI_MEMORY * self.cfg.reward_batch), None)
        sa0, sa1 = self.prefs.sa0[recent].to(self.cfg.device), self.prefs.sa1[recent].to(self.cfg.device)
        labels = self.prefs.labels[recent].to(self.cfg.device)
        losses = self.ensemble.pair_loss(self.ensemble.pair_logits(sa0, sa1), labels)  # [M, P]
        sa = torch.cat([sa0, sa1], dim=1)  # [P, 2H, D]
        obs = sa[..., : self.ensemble.obs_dim]
        agent = self.trainer.agents["A"]
        alt = [torch.cat([obs, agent.sample_action(obs.reshape(-1, obs.shape[-1]))[0].reshape(
            *obs.shape[:-1], -1)], dim=-1) for _ in range(self.ALT_ACTIONS)]
        sa_alt = torch.stack(alt)
        alpha = float(agent.alpha)
        return lambda ens: sobirl_term(ens, sa, sa_alt, losses, alpha)


def make_bilevel_learner(cfg: TrainConfig, obs_dim: int, act_dim: int, trainer: Trainer) -> PreferenceLearner:
    if cfg.method == "sobirl":
        return SoBiRLLearner(cfg, obs_dim, act_dim, trainer)
    return BilevelLearner(cfg, obs_dim, act_dim, trainer)


__all__ = ["BilevelLearner", "SoBiRLLearner", "copy_agent", "make_bilevel_learner"]
