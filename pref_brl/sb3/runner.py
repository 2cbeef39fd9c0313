"""A run folder for a Stable-Baselines3 agent (`--agent sb3-sac|sb3-td3|sb3-tqc`): the same files as our trainer's
(config.json, versions.json, scalars.jsonl, tb/, checkpoint.pt with the labelled pairs, done.json) plus SB3's
`sb3_model.zip`. Hyper-parameters come from the config where SB3 has them (docs/library.md lists the mapping).
Such a run does not resume: an unfinished folder is refused.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.logger import HumanOutputFormat, KVWriter, Logger, TensorBoardOutputFormat
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from pref_brl.checkpoint import save_checkpoint
from pref_brl.config import TrainConfig
from pref_brl.runs import (
    DONE_FILE,
    SB3_MODEL_FILE,
    SCALARS_FILE,
    RunFolderError,
    RunLock,
    prepare_run_dir,
    stop_on_signals,
    write_run_files,
)
from pref_brl.sb3.buffer import PreferenceReplayBuffer
from pref_brl.sb3.pebble import PEBBLE

SB3_AGENTS: dict[str, tuple[str, str]] = {"sb3-sac": ("stable_baselines3", "SAC"),
                                          "sb3-td3": ("stable_baselines3", "TD3"),
                                          "sb3-tqc": ("sb3_contrib", "TQC")}
"""--agent -> (package, class)"""
TD3_NOISE = 0.1
"""std of TD3's Gaussian exploration noise (SB3's examples; the TD3 paper's)"""


def sb3_class(agent: str) -> type[OffPolicyAlgorithm]:
    package, name = SB3_AGENTS[agent]
    return getattr(importlib.import_module(package), name)


def make_sb3_model(cfg: TrainConfig, env: Any) -> OffPolicyAlgorithm:
    """The SB3 model of `cfg.agent` on `env`, with our config's sizes, learning rate, schedule and seed."""
    kwargs: dict[str, Any] = dict(
        learning_rate=cfg.lr, buffer_size=cfg.capacity, learning_starts=cfg.num_seed_steps, batch_size=cfg.batch_size,
        tau=cfg.tau, gamma=cfg.discount, train_freq=1, gradient_steps=1, replay_buffer_class=PreferenceReplayBuffer,
        policy_kwargs=dict(net_arch=[cfg.hidden_dim] * cfg.hidden_depth), seed=cfg.seed, device=cfg.device, verbose=0)
    if cfg.agent == "sb3-td3":
        act_dim = env.action_space.shape[0]
        kwargs["action_noise"] = NormalActionNoise(np.zeros(act_dim), TD3_NOISE * np.ones(act_dim))
    else:
        kwargs.update(ent_coef=f"auto_{cfg.init_temperature}", target_update_interval=cfg.target_update_every)
    return sb3_class(cfg.agent)("MlpPolicy", env, **kwargs)


def load_sb3_model(agent: str, path: Path, device: str = "cpu") -> OffPolicyAlgorithm:
    return sb3_class(agent).load(path, device=device)


class JsonlFormat(KVWriter):
    """SB3 logger output in our `scalars.jsonl` format: one {"step": ..., key: value, ...} record per dump."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8")

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        values = {k: float(v) for k, v in key_values.items()
                  if isinstance(v, int | float | np.number) or (isinstance(v, torch.Tensor) and v.numel() == 1)}
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class SB3Trainer:
    """The run of an SB3 agent: :class:`PEBBLE` around `make_sb3_model`, SB3's logger writing into the run folder.
    `pref_brl.training.make_trainer(cfg)` returns one for an sb3-* agent (a :class:`RunTrainer`, like ours)."""

    def __init__(self, cfg: TrainConfig, progress: bool = True, allow_config_change: bool = False) -> None:
        self.cfg = cfg
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.pebble = PEBBLE(cfg)
        self.model = make_sb3_model(cfg, self.pebble.env)
        self.run_dir, resuming = prepare_run_dir(cfg, allow_config_change)
        if resuming and not (self.run_dir / DONE_FILE).exists():
            raise RunFolderError(f"{self.run_dir} holds an unfinished run of a Stable-Baselines3 agent, and those do "
                                 "not resume: delete the folder or choose another --run-dir")
        self.lock = RunLock(self.run_dir)
        try:
            write_run_files(cfg, self.run_dir, resuming)  # under the lock: one writer per folder
        except BaseException:
            self.lock.release()
            raise
        self.step = 0
        self.interrupted = ""
        """the signal that stopped the run, if any"""
        formats: list[KVWriter] = [TensorBoardOutputFormat(str(self.run_dir / "tb")),
                                   JsonlFormat(self.run_dir / SCALARS_FILE)]
        if progress:
            formats.append(HumanOutputFormat(sys.stdout))
        self.model.set_logger(Logger(None, formats))

    def train(self) -> dict[str, float]:
        """Run `cfg.steps` env steps; returns the last evaluation's scalars (SIGTERM/SIGINT stop it early)."""
        try:
            if (self.run_dir / DONE_FILE).exists():
                print(f"{self.run_dir} is already finished; nothing to do")
                return {}
            episodes = max(1, round(self.cfg.log_frequency / self.pebble.ep_len))
            with stop_on_signals(self):
                self.model.learn(self.cfg.steps, callback=self.pebble.callback(lambda: self.interrupted),
                                 log_interval=episodes)
            self.step = self.model.num_timesteps
            if not self.interrupted:
                self.save()
            return self.pebble.last_eval
        finally:
            self.close()

    def save(self) -> None:
        """SB3's model file, our checkpoint (labelled pairs, reward model, counters) and done.json."""
        self.model.save(self.run_dir / SB3_MODEL_FILE)
        learner = self.pebble.learner
        save_checkpoint(self.run_dir, {
            "step": self.step, "obs_dim": int(self.pebble.env.observation_space.shape[0]), "agents": {},
            "learner": None if learner is None else learner.state_dict(), "last_eval": self.pebble.last_eval})
        (self.run_dir / DONE_FILE).write_text(json.dumps({"step": self.step, **self.pebble.last_eval}), "utf-8")

    def close(self) -> None:
        self.model.logger.close()
        self.pebble.env.close()
        self.pebble.eval_env.close()
        self.lock.release()
