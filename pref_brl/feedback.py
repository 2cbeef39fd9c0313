"""PEBBLE's preference learning inside the loop (Lee, Smith, Abbeel, "PEBBLE", ICML 2021; docs/pebble.md).

`PreferenceLearner` is method `pebble`: exploration reward, feedback rounds, reward training, relabelling.
It gets the collaborators it uses (agent A, the replay buffer, the minibatch generator, recent returns) as a
:class:`Collaborators` record, never the trainer; its teacher and reward model come through the protocols of
pref_brl.protocols. The bilevel learners (pref_brl.bilevel.learner) subclass it, and so does the
Stable-Baselines3 integration (pref_brl.sb3); pref_brl.methods picks the learner of a method.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from pref_brl.agents.replay import ReplayBuffer
from pref_brl.agents.sac import SAC
from pref_brl.agents.state_entropy import StateEntropy
from pref_brl.preferences import Episode, EpisodeStore, PreferenceBuffer, SegmentPairs
from pref_brl.protocols import HUMAN, Queries, check_labels, make_reward_model, make_teacher
from pref_brl.queries import select_queries
from pref_brl.reward_model import RewardEnsemble, hard_label_accuracy
from pref_brl.validate import ConfigError

if TYPE_CHECKING:
    from stable_baselines3.common.buffers import ReplayBuffer as SB3ReplayBuffer
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    from pref_brl.config import TrainConfig
    from pref_brl.human.session import HumanSession

LABEL_WAIT_TAG = "feedback/label_wait_s"
"""seconds a round taught by hand waited for its labels (the progress line's rate and ETA leave them out)"""
CORR_EPISODES = 10
UNIFORM_PAIRS = 256
"""segment pairs drawn uniformly at each evaluation for `reward/uniform_accuracy` and `reward/segment_corr`, and
at each round for the query pool's `feedback/pool_return` and `feedback/pool_gap`"""


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Collaborators:
    """What a preference learner uses of the loop; the trainer creates and owns all of it."""

    agent: SAC | OffPolicyAlgorithm | None
    """agent A: the deployed agent, trained on the learned reward (the Stable-Baselines3 learner gets its model)"""
    replay: ReplayBuffer | SB3ReplayBuffer | None
    """the shared replay buffer (relabelled after every reward update)"""
    sample_generator: torch.Generator
    """draws A's minibatches"""
    returns: deque[float]
    """true returns of A's last complete episodes (the teacher's thresholds read their mean)"""
    ep_len: int
    """episode length"""
    stopping: Callable[[], bool] = _never
    """whether a signal asked the run to stop (a round waiting for human labels gives up then)"""


class EpisodePlan(NamedTuple):
    """Who plays the next episode, from which reset seed, for how many steps at most.

    `start`: a `pref_brl.bilevel.branches.BranchStart` to continue from (a branch: the simulator is restored
    to that snapshot after the reset); `snapshots`: the steps at which the loop hands the learner a simulator
    snapshot (`record_snapshot`). Both are simulator-only and empty by default.
    """

    agent: str
    reset_seed: int
    max_steps: int
    start: Any = None
    snapshots: frozenset[int] = frozenset()


class OneAgent:
    """Acting for a learner whose only agent is A, playing whole episodes: PEBBLE's learner (and those built
    on it that keep A alone) and method sac's true-reward learner."""

    cfg: TrainConfig
    loop: Collaborators

    def next_episode(self, step: int, reset_seed: int) -> EpisodePlan:
        """Who plays the next episode (here always A, a whole episode)."""
        return EpisodePlan("A", reset_seed, self.loop.ep_len)

    def policy(self, agent: str) -> Any:
        """The policy (anything with `act(obs, noise)`) that plays an episode of `agent` (here A)."""
        if agent != "A":
            raise KeyError(f"unknown agent {agent!r}")
        return self.loop.agent

    def stores_transitions_of(self, agent: str) -> bool:
        """Whether `agent`'s transitions enter the shared replay buffer."""
        return True

    def record_snapshot(self, step: int, state: Any, obs: np.ndarray) -> None:
        """A simulator snapshot (`envs.sim_state.SimState`) before the action at `step` of the running
        episode, taken because the episode's plan listed `step` in `snapshots` (never asked for here)."""
        raise NotImplementedError(f"method {self.cfg.method} takes no simulator snapshots")

    def extra_policies(self) -> dict[str, Any]:
        """Policies evaluated next to A (name -> object with `act(obs, noise)` and an `actor` module)."""
        return {}


class PreferenceLearner(OneAgent):
    """Reward model, query and label stores, teacher and the feedback schedule (`pebble`)."""

    def __init__(self, cfg: TrainConfig, obs_dim: int, act_dim: int, loop: Collaborators) -> None:
        self.cfg, self.loop = cfg, loop
        try:
            self.reward_model = make_reward_model(cfg, obs_dim, act_dim, cfg.device)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        check_query_support(cfg, self.reward_model)
        self.store = EpisodeStore(cfg.query_episodes)
        self.prefs = PreferenceBuffer()
        self.seeded_teachers = seed_preferences(self.prefs, cfg.preferences, obs_dim, act_dim, cfg.segment)
        self.teacher_rng = np.random.default_rng([cfg.seed, 21])
        self.teacher = None if cfg.teacher == HUMAN else make_teacher(cfg.teacher, self.teacher_rng)
        self.audit_rng = np.random.default_rng([cfg.seed, 24])
        self.audit = make_teacher(cfg.audit_teacher, self.audit_rng) if cfg.audit_teacher else None
        self.human: HumanSession | None = None
        self.folded: set[str] = set()  # the human-labelled queries the reward model has been given
        self.round_metrics: dict[str, float] = {}
        self.query_rng = np.random.default_rng([cfg.seed, 22])
        self.reward_rng = np.random.default_rng([cfg.seed, 23])
        self.diagnostic_rng = np.random.default_rng([cfg.seed, 25])  # draws only the diagnostic pairs
        self.pool_rng = np.random.default_rng([cfg.seed, 26])  # draws only the query pool's diagnostic pairs
        self.entropy = StateEntropy(k=5)
        self.total = self.labeled = self.rounds = 0
        self.next_round = cfg.feedback_starts
        self._last_bonus: torch.Tensor | None = None  # the last batch's reward-uncertainty bonus (explore metrics)

    @property
    def ensemble(self) -> RewardEnsemble:
        """The reward model as PEBBLE's ensemble (the bilevel-family learners work on its members' parameters)."""
        if not isinstance(self.reward_model, RewardEnsemble):
            raise TypeError(f"method {self.cfg.method} needs the reward ensemble, not {self.cfg.reward_model!r}")
        return self.reward_model

    # ------------------------------------------------------------------------------------------ schedule
    def feedback_due(self, step: int) -> bool:
        return step == self.next_round and self.total < self.cfg.max_feedback

    # ------------------------------------------------------------------------------------------ rewards
    @torch.no_grad()
    def step_reward(self, obs: np.ndarray, act: np.ndarray, true_reward: float = 0.0) -> float:
        """Learned reward stored in the replay buffer (0 before the first round; relabelled then); the
        environment's `true_reward` is never read."""
        if self.rounds == 0:
            return 0.0
        model = self.reward_model
        if isinstance(model, RewardEnsemble):  # the hot path: one row, no chunking
            sa = torch.as_tensor(np.concatenate([obs, act]), dtype=torch.float32, device=self.cfg.device)
            return float(model.member_rewards(sa.unsqueeze(0)).mean())
        return float(model.mean_reward(torch.as_tensor(obs[None], dtype=torch.float32),
                                       torch.as_tensor(act[None], dtype=torch.float32))[0])

    @torch.no_grad()
    def learned_return(self, episode: Episode) -> float:
        obs = torch.as_tensor(episode.obs, device=self.cfg.device)
        act = torch.as_tensor(episode.act, device=self.cfg.device)
        return float(self.reward_model.mean_reward(obs, act).sum())

    def add_episode(self, episode: Episode) -> None:
        self.store.add(episode)

    # ------------------------------------------------------------------------------------------ agents
    def update_agents(self, step: int) -> dict[str, Any]:
        """One SAC update of A: intrinsic state-entropy reward while exploring, stored reward after (plus the
        reward-uncertainty bonus, when on)."""
        batch = self.sample_batch(step)
        metrics = self.loop.agent.update(batch)
        return {**metrics, **self.explore_metrics(step)}

    def explore_metrics(self, step: int) -> dict[str, Any]:
        """`explore/state_entropy` (mean raw k-NN distance of the last batch) while exploring; after, with the
        reward-uncertainty bonus on, `explore/uncertainty_bonus` (the last batch's mean β_t·σ̂) and
        `explore/uncertainty_beta` (β_t)."""
        if step < self.cfg.feedback_starts:
            return self.entropy.metrics()
        if self._last_bonus is None:
            return {}
        return {"explore/uncertainty_bonus": float(self._last_bonus.mean()),
                "explore/uncertainty_beta": self.uncertainty_beta(step)}

    def sample_batch(self, step: int):
        replay = self.loop.replay
        idx = replay.sample_indices(self.cfg.batch_size, self.loop.sample_generator)
        batch = replay.gather(idx)
        if step < self.cfg.feedback_starts:
            reward = self.entropy.intrinsic_reward(batch.obs, replay.stored_obs())
            batch = batch._replace(reward=reward.reshape(-1, 1).to(batch.reward.dtype))
        elif self.cfg.uncertainty_bonus > 0 and self.rounds > 0:
            batch = batch._replace(reward=batch.reward + self.uncertainty_bonus(idx, step))
        return batch

    def uncertainty_beta(self, step: int) -> float:
        """β_t = β₀·(1 − ρ)^t of the reward-uncertainty bonus at env step t."""
        return self.cfg.uncertainty_bonus * (1.0 - self.cfg.uncertainty_decay) ** step

    @torch.no_grad()
    def uncertainty_bonus(self, idx: torch.Tensor, step: int) -> torch.Tensor:
        """Reward-uncertainty exploration (Liang, Shu, Lee, Abbeel, RUNE): β_t·σ̂(s, a) [B, 1] of the replay
        slots `idx`, σ̂ the ensemble members' (population) std of the learned reward under the current model.
        Added at sampling: the stored rewards stay the ensemble mean. σ̂ is computed once per slot and reward
        model (the replay buffer's cache, cleared by every relabel and checkpointed with the buffer), not once
        per minibatch."""
        std = self.loop.replay.cached(idx, lambda obs, act: self.ensemble.mean_std_reward(obs, act)[1])
        self._last_bonus = self.uncertainty_beta(step) * std.reshape(-1, 1).to(self.loop.replay.reward.dtype)
        return self._last_bonus

    # ------------------------------------------------------------------------------------------ feedback
    def feedback_round(self, step: int) -> dict[str, Any]:
        """Query, label, train the reward model, relabel the buffer; after the first round, reset critics.

        `before_reward_update(new)` sees the round's new labels (a slice of `prefs`) before the reward model
        trains on them, `after_reward_update(step)` runs at the end; both are hooks for other methods.
        """
        new = self.collect_labels()
        metrics = {**self.heldout_accuracy(new), **self.before_reward_update(new), **self.round_metrics}
        if len(self.prefs) > 0:
            metrics.update(self.train_reward())
        self.relabel_replay()
        if self.rounds == 0:
            metrics.update(self.reset_after_first_round())
        self.rounds += 1
        self.next_round = step + self.cfg.num_interact
        metrics.update({"feedback/total": self.total, "feedback/labeled": self.labeled,
                        "feedback/rounds": self.rounds})
        metrics.update(self.after_reward_update(step))
        return metrics

    def relabel_replay(self) -> None:
        """Rewrite every stored reward with the reward model's (after each reward update)."""
        self.loop.replay.relabel(self.reward_model.mean_reward)

    @torch.no_grad()
    def heldout_accuracy(self, new: slice) -> dict[str, float]:
        """`reward/heldout_accuracy`: how well the reward model, before this round's update, predicts the
        round's new labels (pairs it has never trained on, from the agent's latest behaviour). Training
        accuracy cannot show a reward that the policy has learned to exploit; this can."""
        if self.rounds == 0 or new.stop <= new.start:
            return {}
        dev = self.cfg.device
        logits = self.reward_model.pair_logits(self.prefs.sa0[new].to(dev), self.prefs.sa1[new].to(dev))
        accuracy = hard_label_accuracy(logits, self.prefs.labels[new].to(dev))
        return {} if accuracy != accuracy else {"reward/heldout_accuracy": accuracy}

    def before_reward_update(self, new: slice) -> dict[str, Any]:
        return {}

    def after_reward_update(self, step: int) -> dict[str, Any]:
        return {}

    def query_agent(self) -> str | None:
        return None

    def collect_labels(self) -> slice:
        """Query and label one round; returns the slice of `prefs` that holds the new labels."""
        cfg = self.cfg
        first = len(self.prefs)
        n = min(cfg.reward_batch, cfg.max_feedback - self.total)
        strategy = "uniform" if self.rounds == 0 else cfg.query
        pairs = select_queries(strategy, self.store, self.reward_model, n, cfg.segment, self.query_rng,
                               self.query_agent(), prefs=self.prefs)
        self.round_metrics = self.query_metrics(pairs)
        if self.human is not None:
            return self.collect_human(pairs, n)
        labels = self.label(pairs)
        keep = ~np.isnan(labels)
        if bool(keep.any()):
            self.prefs.add(pairs.select(keep), torch.from_numpy(labels[keep]))
        self.total += n
        self.labeled += int(keep.sum())
        return slice(first, len(self.prefs))

    def label(self, pairs: SegmentPairs, teacher: Any = None) -> np.ndarray:
        """The teacher's (or `teacher`'s: the audit teacher) labels [B] of `pairs` (NaN: skipped), checked."""
        if teacher is None and self.teacher is None:
            raise ConfigError(f"teacher {HUMAN!r} labels on the page of a run folder (pref-brl-train, pref_brl.train); "
                              "this loop has none")
        returns = self.loop.returns
        mean_return = float(np.mean(returns)) if returns else 0.0
        rng = self.teacher_rng if teacher is None else self.audit_rng
        queries = Queries.of(pairs, mean_return, self.loop.ep_len, rng)
        name = self.cfg.teacher if teacher is None else self.cfg.audit_teacher
        return check_labels((teacher or self.teacher)(queries), len(pairs), name)

    # ------------------------------------------------------------------------------------------ by hand
    def open_run_dir(self, run_dir: Path) -> None:
        """Start labelling by hand in `run_dir` (teacher human): database, clips, server (after a resume)."""
        if self.cfg.teacher == HUMAN and self.human is None:
            from pref_brl.human.session import HumanSession

            self.human = HumanSession(self.cfg, run_dir, self.folded)

    def collect_human(self, pairs: SegmentPairs, n: int) -> slice:
        """Offer the round's pairs on the labelling page; take every label given so far (and, unless
        `human_async`, wait until this round's queries are all labelled)."""
        first = len(self.prefs)
        self.human.offer(self.rounds, pairs, self.store, None if self.audit is None else self.label(pairs, self.audit))
        started = time.time()
        if not self.cfg.human_async:
            self.human.wait(self.rounds, self.loop.stopping)
        waited = time.time() - started
        self.total += n
        taken, labels, _ = self.human.take()
        keep = ~np.isnan(labels)
        if taken is not None and bool(keep.any()):
            self.prefs.add(taken.select(keep), torch.from_numpy(labels[keep]))
        self.labeled += int(keep.sum())
        self.round_metrics.update({**self.human.agreement(), LABEL_WAIT_TAG: waited})
        return slice(first, len(self.prefs))

    def close(self) -> None:
        """Stop the labelling server (if any)."""
        if self.human is not None:
            self.human.close()
            self.human = None

    def train_reward(self, extra_loss=None) -> dict[str, float]:
        """One reward-model round on every label so far; `extra_loss` is a method's per-member term."""
        extra = {} if extra_loss is None else {"extra_loss": extra_loss}
        metrics = self.reward_model.train_round(self.prefs, self.cfg.reward_update, self.reward_rng,
                                                batch_size=self.cfg.reward_minibatch, **extra)
        return {k: v for k, v in metrics.items() if v == v}  # accuracy is NaN with only "equal" labels

    def reset_after_first_round(self) -> dict[str, Any]:
        """PEBBLE: fresh critics (actor and temperature kept), then `reset_update` updates."""
        agent = self.loop.agent
        agent.reset_critic()
        metrics: dict[str, Any] = {}
        for _ in range(self.cfg.reset_update):
            batch = self.loop.replay.sample(self.cfg.batch_size, self.loop.sample_generator)
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
        out = self.uniform_pair_metrics()
        if not hasattr(self.reward_model, "mean_std_reward"):
            return {**out, "reward/true_corr": _corr(self.reward_model.mean_reward(obs, act), true)}
        mean, std = self.reward_model.mean_std_reward(obs, act)
        return {**out, "reward/true_corr": _corr(mean, true), "reward/ensemble_std": float(std.mean())}

    @torch.no_grad()
    def uniform_pair_metrics(self) -> dict[str, float]:
        """The reward model on UNIFORM_PAIRS segment pairs drawn uniformly from the recent episodes of the
        query agent and never trained on: `reward/uniform_accuracy`, the share whose true-return order (the
        rational oracle's label) the learned segment returns predict, and `reward/segment_corr`, the Pearson r
        of learned and true segment returns — what preference labels constrain. Unlike
        `reward/heldout_accuracy`, whose pairs are the round's hardest (picked for disagreement), these tell a
        weak reward from hard queries."""
        try:
            pairs = self.store.sample_pairs(UNIFORM_PAIRS, self.cfg.segment, self.diagnostic_rng, self.query_agent())
        except ValueError:  # no stored episode of a segment's length yet
            return {}
        pairs = pairs.to(self.cfg.device)
        learned = [self.reward_model.mean_reward(o.flatten(0, 1), a.flatten(0, 1)).reshape(o.shape[:2]).sum(1)
                   for o, a in ((pairs.obs0, pairs.act0), (pairs.obs1, pairs.act1))]
        true = [pairs.rew0.sum(1), pairs.rew1.sum(1)]
        hard = true[0] != true[1]
        correct = ((learned[1] - learned[0]) > 0) == (true[1] > true[0])
        out = {"reward/segment_corr": _corr(torch.cat(learned), torch.cat(true).to(learned[0].dtype))}
        if bool(hard.any()):
            out["reward/uniform_accuracy"] = float(correct[hard].double().mean())
        return out

    @torch.no_grad()
    def query_metrics(self, pairs: SegmentPairs) -> dict[str, float]:
        """Where the round's queries sit in the pool they were picked from (the query agent's recent episodes),
        by the environment's true reward: the mean segment return of the queried segments
        (`feedback/query_return`) and the mean true-return gap |R(σ⁰) − R(σ¹)| of a queried pair
        (`feedback/query_gap`), beside the same of UNIFORM_PAIRS pairs drawn uniformly from the pool at that
        moment (`feedback/pool_return`, `feedback/pool_gap`). A query gap far below the pool's: the strategy asks
        about near-ties, whose labels say little about the true reward's scale; a query return below the pool's:
        the queries miss the best behaviour the agent has shown. Drawn with a generator of their own, so the
        run's training is the same with or without them."""
        try:
            pool = self.store.sample_pairs(UNIFORM_PAIRS, self.cfg.segment, self.pool_rng, self.query_agent())
        except ValueError:  # no stored episode of a segment's length (the queries came from elsewhere)
            return {}
        out = {}
        for name, p in (("query", pairs), ("pool", pool)):
            r0, r1 = p.rew0.double().sum(1), p.rew1.double().sum(1)
            out[f"feedback/{name}_return"] = float(torch.cat([r0, r1]).mean())
            out[f"feedback/{name}_gap"] = float((r0 - r1).abs().mean())
        return out

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"ensemble": self.reward_model.full_state(), "store": self.store.state_dict(),
                "prefs": self.prefs.state_dict(), "teacher": {"rng": self.teacher_rng.bit_generator.state},
                "seeded_teachers": list(self.seeded_teachers),
                "query_rng": self.query_rng.bit_generator.state, "reward_rng": self.reward_rng.bit_generator.state,
                "diagnostic_rng": self.diagnostic_rng.bit_generator.state,
                "pool_rng": self.pool_rng.bit_generator.state,
                "entropy": self.entropy.state_dict(), "counters": (self.total, self.labeled, self.rounds,
                                                                  self.next_round),
                **({"human": {"folded": sorted(self.folded), "audit_rng": self.audit_rng.bit_generator.state}}
                   if self.cfg.teacher == HUMAN else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reward_model.load_full_state(state["ensemble"])
        self.store.load_state_dict(state["store"])
        self.prefs.load_state_dict(state["prefs"])
        self.seeded_teachers = list(state.get("seeded_teachers", []))
        self.teacher_rng.bit_generator.state = state["teacher"]["rng"]
        self.query_rng.bit_generator.state = state["query_rng"]
        self.reward_rng.bit_generator.state = state["reward_rng"]
        if "diagnostic_rng" in state:  # checkpoints written before the uniform-pair diagnostics have none
            self.diagnostic_rng.bit_generator.state = state["diagnostic_rng"]
        if "pool_rng" in state:  # nor, before the query pool's diagnostics, this one
            self.pool_rng.bit_generator.state = state["pool_rng"]
        self.entropy.load_state_dict(state["entropy"])
        self.total, self.labeled, self.rounds, self.next_round = state["counters"]
        if "human" in state:
            self.folded.clear()
            self.folded.update(state["human"]["folded"])
            self.audit_rng.bit_generator.state = state["human"]["audit_rng"]



def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson r of two equally long tensors (0 when either is constant)."""
    corr = torch.corrcoef(torch.stack([a.reshape(-1).to(b.dtype), b.reshape(-1)]))[0, 1]
    return float(torch.nan_to_num(corr))


MEMBER_QUERIES = ("disagreement", "kcenter_disagreement")
"""query strategies that rank pairs by the spread across reward-model members"""


def check_query_support(cfg: TrainConfig, model: Any) -> None:
    """A disagreement strategy needs two members or more: refuse a single model in one line."""
    if cfg.query in MEMBER_QUERIES and int(model.n_members) < 2:
        raise ConfigError(f"query strategy {cfg.query!r} ranks pairs by the disagreement of reward-model members, "
                          f"and {cfg.reward_model!r} has {model.n_members}; use --query entropy, kcenter or uniform")


def seed_preferences(prefs: PreferenceBuffer, path: str, obs_dim: int, act_dim: int, segment: int) -> list[str]:
    """Add the labelled pairs of the preference file `path` (none when empty); returns each one's teacher."""
    if not path:
        return []
    from pref_brl.datasets import load_preferences

    try:
        data = load_preferences(path)
        data.check_shape(obs_dim, act_dim, segment)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    prefs.add(data.pairs(), torch.from_numpy(data.labels))
    return [str(t) for t in data.teacher]
