"""One entry to training: `make_trainer(cfg)` builds the trainer the config's agent needs.

Our SAC agent trains in :class:`pref_brl.trainer.Trainer`; a Stable-Baselines3 agent (`agent` sb3-*) in
:class:`pref_brl.sb3.runner.SB3Trainer`. Both satisfy :class:`RunTrainer`, which is all that the command line,
sweeps and `pref_brl.train` use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pref_brl.config import TrainConfig


class RunTrainer(Protocol):
    """A training run in its run folder: train (or resume) to the end, or stop at a signal after a checkpoint."""

    cfg: TrainConfig
    run_dir: Path
    step: int
    """env steps done so far (after a resume: from the checkpoint)"""
    interrupted: str
    """the name of the signal that asked the run to stop, else empty"""

    def train(self) -> dict[str, float]:
        """Train to the end (or a signal); returns the last evaluation's scalars."""
        ...


def make_trainer(cfg: TrainConfig, progress: bool = True, allow_config_change: bool = False) -> RunTrainer:
    """The trainer of `cfg`: ours for agent `sac`, the Stable-Baselines3 runner for sb3-* agents."""
    if cfg.agent == "sac":
        from pref_brl.trainer import Trainer

        return Trainer(cfg, progress=progress, allow_config_change=allow_config_change)
    from pref_brl.sb3.runner import SB3Trainer

    return SB3Trainer(cfg, progress=progress, allow_config_change=allow_config_change)
