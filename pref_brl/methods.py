"""Which preference learner a method uses (the one place that knows every learner class)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pref_brl.bilevel.learner import BilevelLearner, SoBiRLLearner
from pref_brl.config import TrainConfig
from pref_brl.feedback import Collaborators, OneAgent, PreferenceLearner
from pref_brl.mrn import MRNLearner
from pref_brl.preferences import Episode


class TrueRewardLearner(OneAgent):
    """Method `sac`'s learner: agent A alone on the environment's reward (the upper bound of the preference
    methods). It learns no reward, asks for no labels and keeps no state: its checkpoint entry is None."""

    reward_model = None

    def __init__(self, cfg: TrainConfig, loop: Collaborators) -> None:
        self.cfg, self.loop = cfg, loop

    def step_reward(self, obs: np.ndarray, act: np.ndarray, true_reward: float = 0.0) -> float:
        """The environment's reward, stored as it is."""
        return true_reward

    def learned_return(self, episode: Episode) -> float | None:
        return None  # no learned reward: `rollout/ep_learned_rew_mean` is not logged

    def add_episode(self, episode: Episode) -> None:
        pass

    def update_agents(self, step: int) -> dict[str, Any]:
        """One SAC update of A on a minibatch of the true reward."""
        return self.loop.agent.update(self.loop.replay.sample(self.cfg.batch_size, self.loop.sample_generator))

    def feedback_due(self, step: int) -> bool:
        return False

    def feedback_round(self, step: int) -> dict[str, Any]:
        return {}

    def eval_metrics(self) -> dict[str, float]:
        return {}

    def open_run_dir(self, run_dir: Path) -> None:
        pass

    def close(self) -> None:
        pass

    def state_dict(self) -> None:
        return None

    def load_state_dict(self, state: None) -> None:
        pass


Learner = PreferenceLearner | TrueRewardLearner
"""What the training loop drives: a preference learner, or method sac's true-reward learner."""


def make_learner(cfg: TrainConfig, obs_dim: int, act_dim: int, loop: Collaborators) -> Learner:
    """The learner of `cfg.method`: `TrueRewardLearner` for `sac` (no reward model), else a preference learner.

    `bilevel` with penalty_weight 0 has no penalty and no agent B, and `mrn` with outer_weight 0 has no
    meta-step: both are PEBBLE's learner, so they reproduce `pebble` bit for bit.
    """
    if cfg.method == "sac":
        return TrueRewardLearner(cfg, loop)
    if (cfg.method == "pebble" or (cfg.method == "bilevel" and cfg.penalty_weight == 0)
            or (cfg.method == "mrn" and cfg.outer_weight == 0)):
        return PreferenceLearner(cfg, obs_dim, act_dim, loop)
    if cfg.method == "sobirl":
        return SoBiRLLearner(cfg, obs_dim, act_dim, loop)
    if cfg.method == "mrn":
        return MRNLearner(cfg, obs_dim, act_dim, loop)
    return BilevelLearner(cfg, obs_dim, act_dim, loop)
