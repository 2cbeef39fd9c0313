"""PEBBLE's preference learning inside the loop (SPEC §3.1-3.5): exploration reward, feedback rounds.

`PreferenceLearner` is method `pebble`. The bilevel learner (pref_brl.bilevel.learner) subclasses it and
replaces the reward update, the choice of acting agent and the agent updates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from agents.state_entropy import StateEntropy
from pref_brl.preferences import Episode, EpisodeStore, PreferenceBuffer
from pref_brl.queries import select_queries
from pref_brl.reward_model import RewardEnsemble
from pref_brl.teacher import ScriptedTeacher, teacher_from_name

if TYPE_CHECKING:
    from pref_brl.config import TrainConfig
    from pref_brl.trainer import Trainer

CORR_EPISODES = 10


class PreferenceLearner:
    """Reward ensemble, query and label stores, scripted teacher and the feedback schedule (`pebble`)."""

    def __init__(self, cfg: TrainConfig, obs_dim: int, act_dim: int, trainer: Trainer) -> None:
        self.cfg, self.trainer = cfg, trainer
        self.ensemble = RewardEnsemble(obs_dim, act_dim, cfg.ensemble_size, cfg.reward_hidden, cfg.reward_depth,
                                       cfg.reward_lr, device=cfg.device, seed=cfg.seed + 101)
        self.store = EpisodeStore(cfg.query_episodes)
        self.prefs = PreferenceBuffer()
        self.teacher = ScriptedTeacher(teacher_from_name(cfg.teacher), np.random.default_rng([cfg.seed, 21]))
        self.query_rng = np.random.default_rng([cfg.seed, 22])
        self.reward_rng = np.random.default_rng([cfg.seed, 23])
        self.entropy = StateEntropy(k=5)
        self.total = self.labeled = self.rounds = 0
        self.next_round = cfg.feedback_starts

    # ------------------------------------------------------------------------------------------ schedule
    def feedback_due(self, step: int) -> bool:
        return step == self.next_round and self.total < self.cfg.max_feedback

    def next_episode(self, step: int, reset_seed: int) -> tuple[str, int]:
        """Which agent plays the next episode, and its reset seed (PEBBLE: always A)."""
        return "A", reset_seed

    # ------------------------------------------------------------------------------------------ rewards
    @torch.no_grad()
    def step_reward(self, obs: np.ndarray, act: np.ndarray) -> float:
        """Learned reward stored in the replay buffer (0 before the first round; relabelled then)."""
        if self.rounds == 0:
            return 0.0
        sa = torch.as_tensor(np.concatenate([obs, act]), dtype=torch.float32, device=self.cfg.device)
        return float(self.ensemble.member_rewards(sa.unsqueeze(0)).mean())

    @torch.no_grad()
    def learned_return(self, episode: Episode) -> float:
        obs = torch.as_tensor(episode.obs, device=self.cfg.device)
        act = torch.as_tensor(episode.act, device=self.cfg.device)
        return float(self.ensemble.mean_reward(obs, act).sum())

    def add_episode(self, episode: Episode) -> None:
        self.store.add(episode)

    # ------------------------------------------------------------------------------------------ agents
    def update_agents(self, step: int) -> dict[str, Any]:
        """One SAC update of A: intrinsic state-entropy reward while exploring, stored reward after."""
        batch = self.sample_batch(step)
        metrics = self.trainer.agents["A"].update(batch)
        return {**metrics, **self.explore_metrics(step)}

    def explore_metrics(self, step: int) -> dict[str, Any]:
        """`explore/state_entropy` (mean raw k-NN distance of the last batch) while exploring."""
        if step < self.cfg.feedback_starts and self.entropy._last_mean is not None:
            return {"explore/state_entropy": self.entropy._last_mean}
        return {}

    def sample_batch(self, step: int):
        tr = self.trainer
        batch = tr.replay.sample(self.cfg.batch_size, tr.sample_generator)
        if step < self.cfg.feedback_starts:
            reward = self.entropy.intrinsic_reward(batch.obs, tr.replay.stored_obs())
            batch = batch._replace(reward=reward.reshape(-1, 1).to(batch.reward.dtype))
        return batch

    # ------------------------------------------------------------------------------------------ feedback
    def feedback_round(self, step: int) -> dict[str, Any]:
        """Query, label, train the reward model, relabel the buffer; after the first round, reset critics."""
        metrics: dict[str, Any] = {}
        self.collect_labels()
        if len(self.prefs) > 0:
            metrics.update(self.train_reward())
        self.trainer.replay.relabel(self.ensemble.mean_reward)
        if self.rounds == 0:
            metrics.update(self.reset_after_first_round())
        self.rounds += 1
        self.next_round = step + self.cfg.num_interact
        metrics.update({"feedback/total": self.total, "feedback/labeled": self.labeled,
                        "feedback/rounds": self.rounds})
        return metrics

    def query_agent(self) -> str | None:
        return None

    def collect_labels(self) -> None:
        cfg = self.cfg
        n = min(cfg.reward_batch, cfg.max_feedback - self.total)
        strategy = "uniform" if self.rounds == 0 else cfg.query
        pairs = select_queries(strategy, self.store, self.ensemble, n, cfg.segment, self.query_rng,
                               self.query_agent(), prefs=self.prefs)
        returns = self.trainer.returns
        mean_return = float(np.mean(returns)) if returns else 0.0
        keep, labels = self.teacher.label(pairs.rew0, pairs.rew1, mean_return, self.trainer.ep_len)
        if bool(keep.any()):
            self.prefs.add(pairs.select(keep), labels[keep])
        self.total += n
        self.labeled += int(keep.sum())

    def train_reward(self, extra_loss=None) -> dict[str, float]:
        """One reward-model round on every label so far; `extra_loss` is a method's per-member term."""
        metrics = self.ensemble.train_round(self.prefs, self.cfg.reward_update, self.reward_rng,
                                            batch_size=self.cfg.reward_minibatch, extra_loss=extra_loss)
        return {k: v for k, v in metrics.items() if v == v}  # accuracy is NaN with only "equal" labels

    def reset_after_first_round(self) -> dict[str, Any]:
        """PEBBLE: fresh critics (actor and temperature kept), then `reset_update` updates."""
        agent = self.trainer.agents["A"]
        agent.reset_critic()
        metrics: dict[str, Any] = {}
        for _ in range(self.cfg.reset_update):
            batch = self.trainer.replay.sample(self.cfg.batch_size, self.trainer.sample_generator)
            metrics = agent.update(batch)
        return metrics

    # ------------------------------------------------------------------------------------------ diagnostics
    @torch.no_grad()
    def eval_metrics(self) -> dict[str, float]:
        """How the learned reward tracks the true one on the last episodes (Pearson r), ensemble spread."""
        episodes = self.store.episodes()[-CORR_EPISODES:]
        if not episodes or self.rounds == 0:
            return {}
        obs = torch.as_tensor(np.concatenate([e.obs for e in episodes]), device=self.cfg.device)
        act = torch.as_tensor(np.concatenate([e.act for e in episodes]), device=self.cfg.device)
        true = torch.as_tensor(np.concatenate([e.true_reward for e in episodes]), device=self.cfg.device)
        mean, std = self.ensemble.mean_std_reward(obs, act)
        corr = torch.corrcoef(torch.stack([mean.reshape(-1), true.reshape(-1)]))[0, 1]
        return {"reward/true_corr": float(torch.nan_to_num(corr)), "reward/ensemble_std": float(std.mean())}

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"ensemble": self.ensemble.full_state(), "store": self.store.state_dict(),
                "prefs": self.prefs.state_dict(), "teacher": self.teacher.state_dict(),
                "query_rng": self.query_rng.bit_generator.state, "reward_rng": self.reward_rng.bit_generator.state,
                "entropy": self.entropy.state_dict(), "counters": (self.total, self.labeled, self.rounds,
                                                                  self.next_round)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ensemble.load_full_state(state["ensemble"])
        self.store.load_state_dict(state["store"])
        self.prefs.load_state_dict(state["prefs"])
        self.teacher.load_state_dict(state["teacher"])
        self.query_rng.bit_generator.state = state["query_rng"]
        self.reward_rng.bit_generator.state = state["reward_rng"]
        self.entropy.load_state_dict(state["entropy"])
        self.total, self.labeled, self.rounds, self.next_round = state["counters"]


def make_learner(cfg: TrainConfig, obs_dim: int, act_dim: int, trainer: Trainer) -> PreferenceLearner | None:
    """The preference learner of `cfg.method` (None for `sac`, which trains on the true reward).

    `bilevel` with penalty_weight 0 is PEBBLE exactly: no agent B is created and no extra random number
    is drawn, so it reproduces `pebble` bit for bit.
    """
    if cfg.method == "sac":
        return None
    if cfg.method == "pebble" or (cfg.method == "bilevel" and cfg.penalty_weight == 0):
        return PreferenceLearner(cfg, obs_dim, act_dim, trainer)
    from pref_brl.bilevel.learner import make_bilevel_learner

    return make_bilevel_learner(cfg, obs_dim, act_dim, trainer)
