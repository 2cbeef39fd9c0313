"""How the bilevel learner collects a round's A/B pairs after B's solve: one strategy per rollout estimator.

A round of the bilevel learner is three phases: B is solved (`BilevelLearner.solve_b`), the pairs are
collected, the penalty round uses them. The rollout estimators differ only in where a pair starts:

* `paired-rollouts` (`ResetPairs`): each pair is A's anchor and then B, each `pair_horizon` steps from the
  same reset seed, so the halves share the reset and the action-noise stream (common random numbers);
* `branch` (`BranchPairs`): the same, each pair started from a simulator snapshot of A's most recent complete
  ordinary episode (pref_brl.bilevel.branches).

The other estimators (`shared-states`, `likelihood-ratio`) collect nothing: their penalty round follows B's
solve at once. A strategy's state is part of the learner's checkpoint, so a run stopped between two halves
resumes there exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pref_brl.bilevel.branches import BranchStart, snapshot_steps, start_from_checkpoint, start_to_checkpoint
from pref_brl.feedback import EpisodePlan
from pref_brl.preferences import Episode, episode_state

if TYPE_CHECKING:
    from pref_brl.config import TrainConfig

Pair = tuple[Episode, Episode]


class ResetPairs:
    """`paired-rollouts`: E pairs, A's anchor half then B's half, from the same reset seed."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.pairs: list[Pair] = []
        self.pending: Episode | None = None  # A's half of the pair being collected
        self.pending_start: BranchStart | None = None  # where that pair started (branches only)

    # ---- A's ordinary episodes (before and between rounds)
    def ordinary_plan(self, plan: EpisodePlan) -> EpisodePlan:
        """The plan of one of A's ordinary episodes (unchanged: resets need nothing from them)."""
        return plan

    def record_snapshot(self, step: int, state: Any, obs: np.ndarray) -> None:
        raise NotImplementedError(f"--estimator {self.cfg.estimator} takes no simulator snapshots")

    def ordinary_episode_done(self) -> None:
        """A's ordinary episode ended."""

    # ---- the round's pairs
    def open(self) -> None:
        """A new round: no pair yet."""
        self.pairs, self.pending, self.pending_start = [], None, None

    def next_half(self, reset_seed: int) -> EpisodePlan:
        """B's half on A's reset seed (and start) when A's half is in; else A's half of a new pair."""
        if self.pending is not None:
            return EpisodePlan("B", self.pending.reset_seed, self.cfg.pair_horizon, self.pending_start)
        self.pending_start = self.next_start()
        return EpisodePlan("A", reset_seed, self.cfg.pair_horizon, self.pending_start)

    def next_start(self) -> BranchStart | None:
        return None

    def add_half(self, episode: Episode) -> bool:
        """Take a played half; True when the round's `paired_episodes` pairs are complete."""
        if episode.agent == "B" and self.pending is not None:
            self.pairs.append((self.pending, episode))
            self.pending = None
        elif episode.agent == "A":
            self.pending = episode
        return len(self.pairs) == self.cfg.paired_episodes

    def take(self) -> list[Pair]:
        """The complete round's pairs, handed over once."""
        pairs, self.pairs = self.pairs, []
        return pairs

    # ---- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"pairs": [(episode_state(a), episode_state(b)) for a, b in self.pairs],
                "pending": None if self.pending is None else episode_state(self.pending),
                "pending_start": None if self.pending_start is None else start_to_checkpoint(self.pending_start)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pairs = [(Episode(**a), Episode(**b)) for a, b in state["pairs"]]
        self.pending = None if state["pending"] is None else Episode(**state["pending"])
        start = state.get("pending_start")
        self.pending_start = None if start is None else start_from_checkpoint(start)


class BranchPairs(ResetPairs):
    """`branch`: while A plays an ordinary episode the loop snapshots it at E steps drawn below L − H; at the
    next round the E snapshots of A's most recent complete episode start the E pairs."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        self.rng = np.random.default_rng([cfg.seed, 32])  # which steps of A's episodes are snapshot
        self.snapshots: list[BranchStart] = []  # taken in the running episode of A
        self.pool: list[BranchStart] = []  # the E snapshots of A's most recent complete episode
        self.starts: list[BranchStart] = []  # this round's starts not yet played

    def ordinary_plan(self, plan: EpisodePlan) -> EpisodePlan:
        self.snapshots = []
        steps = snapshot_steps(self.rng, plan.max_steps, self.cfg.pair_horizon, self.cfg.paired_episodes)
        return plan._replace(snapshots=steps)

    def record_snapshot(self, step: int, state: Any, obs: np.ndarray) -> None:
        self.snapshots.append(BranchStart(state, obs, step))

    def ordinary_episode_done(self) -> None:
        if len(self.snapshots) == self.cfg.paired_episodes:
            self.pool, self.snapshots = self.snapshots, []

    def open(self) -> None:
        super().open()
        self.starts = list(self.pool)

    def next_start(self) -> BranchStart | None:
        return self.starts.pop(0)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pool": [start_to_checkpoint(s) for s in self.pool],
                "starts": [start_to_checkpoint(s) for s in self.starts],
                "rng": self.rng.bit_generator.state}  # checkpoints fall between episodes: no snapshots

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.pool = [start_from_checkpoint(s) for s in state["pool"]]
        self.starts = [start_from_checkpoint(s) for s in state["starts"]]
        self.rng.bit_generator.state = state["rng"]


PAIR_COLLECTIONS = {"paired-rollouts": ResetPairs, "branch": BranchPairs}
"""Rollout estimators -> how their pairs are collected (the other estimators collect none)."""
