"""Method `bilevel` (the penalty update, version 2) and method `sobirl` inside the PEBBLE loop.

`bilevel` (docs/bilevel.md): agent A is PEBBLE's agent (it solves the lower problem g, plays θ*, is
evaluated). At every feedback round after the first, once PEBBLE's cross-entropy update is done:

1. the round's new labelled pairs get their losses ℓ_i from the ensemble *before* it trained on them;
2. agent B is re-synced to A (θ_B ← θ_A) and takes `b_updates` actor steps on A's minibatches with A's
   critic and temperature: SAC actor loss + κ Ψ_f + β KL(π_B ‖ π_A), β adapted towards `kl_target`;
3. E paired rollouts with common random numbers, each half `pair_horizon` steps: A's half is played by π_A
   as it was at the re-sync (the anchor), B's half by B, from the same reset seed and noise stream;
4. `penalty_steps` reward steps of cross-entropy + λ [R^γ(A) − R^γ(B)] on those pairs (held-out pairs
   excluded and used for `bilevel/gap_before` / `gap_after`), then a relabel. Pairs serve one round only.

Steps 3–4 are the `paired-rollouts` estimator of the λ-term (its pairs collected by a strategy of
`pref_brl.bilevel.pairs`); `--estimator` picks another strategy from
`ESTIMATORS`: `branch` (the same pairs, each started from a simulator snapshot of A's most recent episode
instead of a reset; simulation only, `pref_brl.bilevel.branches`), `shared-states` (one action of A and of
B at recent replay states) or `likelihood-ratio` (A's own recent episodes reweighted by per-decision ratios
π_B/π_A). The last two need no rollouts: the penalty update follows B's solve at once.

B is kept until the next re-sync (evaluated as `eval_B/*`) and owned by this learner, not the trainer.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from pref_brl.agents.sac import Actor, act_with, squashed_log_prob, squashed_sample
from pref_brl.bilevel.estimators import ESTIMATORS, Estimate
from pref_brl.bilevel.pairs import PAIR_COLLECTIONS, Pair
from pref_brl.bilevel.penalty import (
    discounted_returns,
    gaussian_kl,
    sobirl_term,
    stack_episodes,
    upper_score_surrogate,
)
from pref_brl.feedback import Collaborators, EpisodePlan, PreferenceLearner
from pref_brl.preferences import Episode

if TYPE_CHECKING:
    from pref_brl.config import TrainConfig

PSI_MEMORY = 4  # sobirl: its term uses the pairs labelled in the last this-many rounds
SHARED_STATES = 1024  # replay states for the shared-states estimator, bilevel/kl_ab and bilevel/reward_shift
BETA_INIT = 1.0  # initial KL coefficient β (adaptive-KL PPO's starting value)
BETA_LIMITS = (1e-4, 1e4)
ACTING, PAIRING, PENALTY_DUE = "acting", "pairing", "penalty-due"  # the bilevel learner's phases
BACKTRACK_HALVINGS = 10  # B's line search per step: halvings of θ_B − θ_A before B is put back to the anchor


class ProbePolicy:
    """An actor network that acts like `SAC.act` (agent B, and A's anchor copy in paired rollouts)."""

    def __init__(self, actor: Actor, device: torch.device) -> None:
        self.actor, self.device = actor, device

    def act(self, obs, noise=None):
        return act_with(self.actor, obs, noise, self.device)


class BilevelLearner(PreferenceLearner):
    """PEBBLE with the bilevel penalty reward update and the per-round perturbation B of agent A."""

    def __init__(self, cfg: TrainConfig, obs_dim: int, act_dim: int, loop: Collaborators) -> None:
        super().__init__(cfg, obs_dim, act_dim, loop)
        self.lam = (1.0 - cfg.discount) * cfg.penalty_weight
        self.kappa = 1.0 / cfg.penalty_weight if cfg.upper_term else 0.0
        collection = PAIR_COLLECTIONS.get(cfg.estimator)
        self.collection = None if collection is None else collection(cfg)  # None: no rollouts to collect
        self.anchor: Actor | None = None  # π_A at this round's re-sync, frozen
        self.b_actor: Actor | None = None  # π_B
        self.beta = BETA_INIT
        self.psi: tuple[Tensor, Tensor] | None = None  # this round's new pairs [P, 2H, D] and their ℓ_i [P]
        self.phase = ACTING  # ACTING (A's ordinary episodes), PAIRING (the round's halves), PENALTY_DUE
        self.anchor_playing = False  # the running episode is A's half of a pair (played by the anchor)
        self.b_generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed + 31)

    @property
    def pairs_open(self) -> bool:
        return self.phase == PAIRING

    @property
    def penalty_ready(self) -> bool:
        return self.phase == PENALTY_DUE

    @property
    def pairs(self) -> list[Pair]:
        """The round's complete pairs so far."""
        return [] if self.collection is None else self.collection.pairs

    @property
    def branch_pool(self) -> list:
        """`branch`: the snapshots the next round's pairs start from."""
        return self.collection.pool

    # ------------------------------------------------------------------------------------------ acting
    def next_episode(self, step: int, reset_seed: int) -> EpisodePlan:
        """A; while pairs are collected: A's anchor, then B on the same reset seed, each `pair_horizon` steps."""
        self.anchor_playing = False
        if self.phase != PAIRING:
            plan = super().next_episode(step, reset_seed)
            return plan if self.collection is None else self.collection.ordinary_plan(plan)
        plan = self.collection.next_half(reset_seed)
        self.anchor_playing = plan.agent == "A"
        return plan

    def record_snapshot(self, step: int, state: Any, obs: np.ndarray) -> None:
        self.collection.record_snapshot(step, state, obs)

    def policy(self, agent: str) -> Any:
        if agent == "B" and self.b_actor is not None:
            return ProbePolicy(self.b_actor, self.loop.agent.device)
        if agent == "A" and self.anchor_playing:
            return ProbePolicy(self.anchor, self.loop.agent.device)
        return super().policy(agent)

    def stores_transitions_of(self, agent: str) -> bool:
        return agent == "A" or self.cfg.b_in_replay

    def extra_policies(self) -> dict[str, Any]:
        return {} if self.b_actor is None else {"B": ProbePolicy(self.b_actor, self.loop.agent.device)}

    def add_episode(self, episode: Episode) -> None:
        super().add_episode(episode)
        if self.collection is None:
            return
        self.collection.ordinary_episode_done()
        # the ordinary episode running when the round opened ends during PAIRING too: it is no half
        half = episode.agent == "B" or self.anchor_playing
        if self.phase == PAIRING and half and self.collection.add_half(episode):
            self.phase = PENALTY_DUE

    def query_agent(self) -> str | None:
        """`query_agent`'s episodes (A by default); any agent's while B has none long enough."""
        if self.cfg.query_agent == "both":
            return None
        if any(len(ep) >= self.cfg.segment for ep in self.store.episodes(self.cfg.query_agent)):
            return self.cfg.query_agent
        return None

    # ------------------------------------------------------------------------------------------ feedback
    def feedback_due(self, step: int) -> bool:
        return self.penalty_ready or super().feedback_due(step)

    def feedback_round(self, step: int) -> dict[str, Any]:
        """The penalty update when the round's pairs are complete; PEBBLE's round when one is due."""
        metrics = self.penalty_round() if self.penalty_ready else {}
        if super().feedback_due(step):
            metrics.update(super().feedback_round(step))
        return metrics

    @torch.no_grad()
    def before_reward_update(self, new: slice) -> dict[str, Any]:
        """ℓ_i of the round's new pairs under the ensemble that has not seen them (none in round 0)."""
        self.psi = None
        if self.rounds == 0:
            return {}
        dev = self.cfg.device
        sa0, sa1 = self.prefs.sa0[new].to(dev), self.prefs.sa1[new].to(dev)
        losses = self.ensemble.pair_loss(self.ensemble.pair_logits(sa0, sa1), self.prefs.labels[new].to(dev))
        self.psi = (torch.cat([sa0, sa1], dim=1), losses.mean(0))
        return {"bilevel/psi_pairs": float(len(losses[0]))}

    def after_reward_update(self, step: int) -> dict[str, Any]:
        """B ← A and B's inner solve; then open the paired rollouts (or, shared-states, update at once)."""
        if self.rounds < 2:  # `rounds` already counts this round: no B after the first one
            return {}
        metrics = self.solve_b()
        if self.collection is None:
            self.phase = ACTING
            metrics.update(self.penalty_round())
        else:
            self.collection.open()
            self.phase = PAIRING
        return metrics

    # ------------------------------------------------------------------------------------------ agent B
    def solve_b(self) -> dict[str, Any]:
        """Re-sync B to A, then `b_updates` steps on SAC actor loss + κ Ψ_f + β KL(π_B ‖ π_A)."""
        cfg, agent = self.cfg, self.loop.agent
        self.anchor = copy.deepcopy(agent.actor).requires_grad_(False)
        self.b_actor = copy.deepcopy(agent.actor)
        opt = torch.optim.Adam(self.b_actor.parameters(), lr=cfg.lr)
        upper = self._upper_term() if self.kappa > 0 else None
        alpha = agent.alpha.detach()
        sums, kl_max, backtracks = torch.zeros(3, dtype=torch.float64), 0.0, 0
        for _ in range(cfg.b_updates):
            obs = self.loop.replay.sample(cfg.batch_size, self.b_generator).obs
            noise = torch.randn((len(obs), agent.act_dim), generator=self.b_generator, device=obs.device)
            total, (sac, psi, kl) = self.b_loss(obs, noise, alpha, upper)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            backtracks += self._backtrack(obs)
            sums += torch.stack([sac.detach(), psi.detach(), kl.detach()]).double().cpu()
            kl_max = max(kl_max, float(kl.detach()))
            self._adapt_beta(float(kl.detach()))  # the KL of the minibatch before this step
        sac_mean, psi_mean, kl_mean = (sums / max(cfg.b_updates, 1)).tolist()
        return {"train_B/actor_loss": sac_mean, "bilevel/psi": psi_mean, "bilevel/kl_solve": kl_mean,
                "bilevel/kl_solve_max": kl_max, "bilevel/beta": self.beta, "bilevel/backtracks": backtracks,
                **self.kl_ab()}

    def b_loss(self, obs: Tensor, noise: Tensor, alpha: Tensor, upper=None) -> tuple[Tensor, tuple[Tensor, ...]]:
        """B's loss on one minibatch: SAC actor loss + κ Ψ_f + β KL(π_B ‖ π_A), and its three parts (detached).

        `noise` is the standard-normal draw of B's reparameterised actions, `alpha` A's frozen temperature,
        `upper` the Ψ_f closure of the round (None: no upper term)."""
        mu, log_std = self.b_actor(obs)
        act, logp = squashed_sample(mu, log_std, noise)
        sac = (alpha * logp - self.loop.agent.q_values(obs, act, detach_weights=True).min(0).values).mean()
        with torch.no_grad():
            mu_a, log_std_a = self.anchor(obs)
        kl = gaussian_kl(mu, log_std, mu_a, log_std_a).mean()
        psi = upper() if upper is not None else torch.zeros((), device=obs.device)
        total = sac + self.kappa * psi + self.beta * kl
        return total, (sac.detach(), psi.detach(), kl.detach())

    @torch.no_grad()
    def _backtrack(self, obs: Tensor) -> int:
        """Keep B inside 2 δ on the step's minibatch: halve θ_B − θ_A until the KL is below it (at most
        `BACKTRACK_HALVINGS` times, like TRPO's line search); if it is still above after the last halving,
        B goes back to the anchor (KL 0), the one point surely inside. The penalty β δ reacts one step late;
        this bounds each step. Returns the halvings made (one more when B was put back)."""
        b, a = list(self.b_actor.parameters()), list(self.anchor.parameters())
        mu_a, log_std_a = self.anchor(obs)
        for halvings in range(BACKTRACK_HALVINGS + 1):
            if float(gaussian_kl(*self.b_actor(obs), mu_a, log_std_a).mean()) <= 2 * self.cfg.kl_target:
                return halvings
            if halvings < BACKTRACK_HALVINGS:
                torch._foreach_lerp_(b, a, 0.5)
        torch._foreach_copy_(b, a)
        return BACKTRACK_HALVINGS + 1

    def _adapt_beta(self, kl: float) -> None:
        """Adaptive-KL PPO's rule, applied after every step of B: double β when the KL is over 1.5 δ, halve it
        when under δ / 1.5 (β carries over from round to round)."""
        if kl > 1.5 * self.cfg.kl_target:
            self.beta = min(self.beta * 2.0, BETA_LIMITS[1])
        elif kl < self.cfg.kl_target / 1.5:
            self.beta = max(self.beta / 2.0, BETA_LIMITS[0])

    def _upper_term(self):
        """Ψ_f(θ_B) on the round's new pairs (all their steps), ratios against the anchor π_A."""
        if self.psi is None or len(self.psi[1]) < 2:
            return None
        sa, losses = self.psi
        obs, act = sa[..., : self.ensemble.obs_dim], sa[..., self.ensemble.obs_dim:]
        with torch.no_grad():
            old = squashed_log_prob(*self.anchor(obs), act).squeeze(-1)

        def psi() -> Tensor:
            logp = squashed_log_prob(*self.b_actor(obs), act).squeeze(-1)
            return upper_score_surrogate(logp, losses, sa.shape[1], old_log_probs=old, clip=self.cfg.psi_clip)

        return psi

    @torch.no_grad()
    def kl_ab(self) -> dict[str, float]:
        """bilevel/kl_ab: mean KL(π_B ‖ π_A at the re-sync) on A's recent replay states."""
        if self.b_actor is None:
            return {}
        obs = self.loop.replay.recent_obs(SHARED_STATES, agent=0)
        return {"bilevel/kl_ab": float(gaussian_kl(*self.b_actor(obs), *self.anchor(obs)).mean())}

    # ------------------------------------------------------------------------------------------ the λ-term
    def penalty_round(self) -> dict[str, Any]:
        """Exactly `penalty_steps` reward steps of CE + λ-term, held-out gaps around them, then a relabel."""
        cfg, ens = self.cfg, self.ensemble
        self.phase = ACTING
        pairs = [] if self.collection is None else self.collection.take()
        held = cfg.heldout_pairs if len(pairs) > cfg.heldout_pairs else 0
        fit, heldout = pairs[: len(pairs) - held], pairs[len(pairs) - held:]
        with torch.no_grad():
            states = self.loop.replay.recent_obs(SHARED_STATES, agent=0)
            actions = self._actions(self.loop.agent.actor, states, self._noise(states))
            before = ens.mean_reward(states, actions)
        metrics: dict[str, Any] = {"bilevel/lambda": self.lam, **self._gap(heldout, "before")}
        extra, snr, units, own = self._penalty_closure(fit)
        metrics["bilevel/penalty_snr"] = snr  # NaN (below two units; shared-states) is left out of the logs
        metrics["bilevel/penalty_units"] = float(units)
        metrics.update(own)
        use = cfg.penalty and extra is not None and not (cfg.snr_min > 0 and not snr >= cfg.snr_min)
        metrics["bilevel/penalty_used"] = float(use)
        steps = ens.train_steps(self.prefs, cfg.penalty_steps, self.reward_rng, cfg.reward_minibatch,
                                extra if use else None)
        metrics["bilevel/ce_grad_norm"] = steps["reward/ce_grad_norm"]
        if use:
            metrics["bilevel/penalty_grad_norm"] = steps["reward/extra_grad_norm"]
        with torch.no_grad():
            after = ens.mean_reward(states, actions)
        metrics["bilevel/reward_shift"] = float((after - before).abs().mean() / before.std().clamp_min(1e-8))
        metrics.update(self._gap(heldout, "after"))
        self.loop.replay.relabel(ens.mean_reward)
        return {k: v for k, v in metrics.items() if v == v}

    def _penalty_closure(self, fit: list[Pair]) -> Estimate:
        """The round's λ-term (closure or None, SNR, units) by the configured estimator."""
        return ESTIMATORS[self.cfg.estimator](self, fit)

    @torch.no_grad()
    def log_ratios(self, sa: Tensor) -> Tensor:
        """log π_B(a|s) − log π_A(a|s) at stored steps [N, T], π_A the anchor; computed without a graph."""
        obs, act = sa[..., : self.ensemble.obs_dim], sa[..., self.ensemble.obs_dim:]
        log_b = squashed_log_prob(*self.b_actor(obs), act).squeeze(-1)
        return log_b - squashed_log_prob(*self.anchor(obs), act).squeeze(-1)

    @torch.no_grad()
    def _gap(self, pairs: list[tuple[Episode, Episode]], when: str) -> dict[str, float]:
        """bilevel/gap_<when>: mean R^γ(A) − mean R^γ(B) under the ensemble mean, on held-out pairs."""
        if not pairs:
            return {}
        sa_a, m_a = stack_episodes([a for a, _ in pairs], self.cfg.device)
        sa_b, m_b = stack_episodes([b for _, b in pairs], self.cfg.device)
        gamma = self.cfg.discount
        gap = (discounted_returns(self.ensemble, sa_a, m_a, gamma).mean()
               - discounted_returns(self.ensemble, sa_b, m_b, gamma).mean())
        return {f"bilevel/gap_{when}": float(gap)}

    @torch.no_grad()
    def shared_states(self) -> tuple[Tensor, Tensor, Tensor]:
        obs = self.loop.replay.recent_obs(SHARED_STATES, agent=0)
        noise = self._noise(obs)  # one noise draw for both: common random numbers
        return obs, self._actions(self.anchor, obs, noise), self._actions(self.b_actor, obs, noise)

    def _noise(self, obs: Tensor) -> Tensor:
        """Standard-normal action noise for `obs`, from B's generator (A's sampling stream is left alone)."""
        return torch.randn((len(obs), self.loop.agent.act_dim), generator=self.b_generator, device=obs.device)

    @staticmethod
    def _actions(actor: Actor, obs: Tensor, noise: Tensor) -> Tensor:
        return squashed_sample(*actor(obs), noise)[0]

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        nets = {k: None if m is None else m.state_dict() for k, m in (("anchor", self.anchor), ("b", self.b_actor))}
        return {**super().state_dict(), **nets, "beta": self.beta, "phase": self.phase,
                "anchor_playing": self.anchor_playing, "b_generator": self.b_generator.get_state(),
                "collection": None if self.collection is None else self.collection.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for name, attr in (("anchor", "anchor"), ("b", "b_actor")):
            if state[name] is not None:
                net = copy.deepcopy(self.loop.agent.actor)
                net.load_state_dict(state[name])
                setattr(self, attr, net.requires_grad_(attr == "b_actor"))
        self.beta = state["beta"]
        self.b_generator.set_state(state["b_generator"])
        if "phase" not in state:  # a checkpoint written before the pair collections existed
            state = _collection_state_of_earlier_checkpoints(state)
        self.phase, self.anchor_playing = state["phase"], state["anchor_playing"]
        if self.collection is not None and state["collection"] is not None:
            self.collection.load_state_dict(state["collection"])


def _collection_state_of_earlier_checkpoints(state: dict[str, Any]) -> dict[str, Any]:
    """Phase and pair-collection state from a checkpoint of the three flags (pairs open, penalty ready, anchor
    playing) and the pairs and branch fields kept beside them."""
    pairs_open, penalty_ready, anchor_playing = state["flags"]
    branch = state.get("branch") or {}
    collection = {"pairs": state["pairs"], "pending": state["pending"], "pending_start": branch.get("pending")}
    if branch:
        collection.update(pool=branch["pool"], starts=branch["starts"], rng=branch["rng"])
    phase = PAIRING if pairs_open else PENALTY_DUE if penalty_ready else ACTING
    return {"phase": phase, "anchor_playing": anchor_playing, "collection": collection}


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
        agent = self.loop.agent
        alt = [torch.cat([obs, agent.sample_action(obs.reshape(-1, obs.shape[-1]))[0].reshape(
            *obs.shape[:-1], -1)], dim=-1) for _ in range(self.ALT_ACTIONS)]
        sa_alt = torch.stack(alt)
        alpha = float(agent.alpha)
        return lambda ens: sobirl_term(ens, sa, sa_alt, losses, alpha)


__all__ = ["ESTIMATORS", "BilevelLearner", "ProbePolicy", "SoBiRLLearner"]
