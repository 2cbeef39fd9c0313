"""Which preference learner a method uses (the one place that knows every learner class)."""

from __future__ import annotations

from pref_brl.bilevel.learner import BilevelLearner, SoBiRLLearner
from pref_brl.config import TrainConfig
from pref_brl.feedback import Collaborators, PreferenceLearner
from pref_brl.mrn import MRNLearner


def make_learner(cfg: TrainConfig, obs_dim: int, act_dim: int, loop: Collaborators) -> PreferenceLearner | None:
    """The preference learner of `cfg.method` (None for `sac`, which trains on the true reward).

    `bilevel` with penalty_weight 0 has no penalty and no agent B, and `mrn` with outer_weight 0 has no
    meta-step: both are PEBBLE's learner, so they reproduce `pebble` bit for bit.
    """
    if cfg.method == "sac":
        return None
    if (cfg.method == "pebble" or (cfg.method == "bilevel" and cfg.penalty_weight == 0)
            or (cfg.method == "mrn" and cfg.outer_weight == 0)):
        return PreferenceLearner(cfg, obs_dim, act_dim, loop)
    if cfg.method == "sobirl":
        return SoBiRLLearner(cfg, obs_dim, act_dim, loop)
    if cfg.method == "mrn":
        return MRNLearner(cfg, obs_dim, act_dim, loop)
    return BilevelLearner(cfg, obs_dim, act_dim, loop)
