"""A run folder for a Stable-Baselines3 agent (`--agent sb3-sac|sb3-td3|sb3-tqc`): the same files as our trainer's
(config.json, versions.json, scalars.jsonl, tb/, checkpoint.pt with the labelled pairs, done.json) plus SB3's
`sb3_model.zip`. Hyper-parameters come from the config where SB3 has them (docs/library.md lists the mapping).

Checkpoints, every `checkpoint_frequency` steps and when a signal stops the run: SB3's model (networks,
optimisers, step counters) and replay buffer in step-stamped files, then our checkpoint.pt (labelled pairs,
reward model, schedule, the names of those two files) as the commit point; the files of the previous
checkpoint are kept as its fallback. Re-running the command resumes from the newest readable checkpoint, with
the logs after it dropped. Unlike our trainer's, the resume is not bit for bit: the episode running at the
checkpoint starts afresh and SB3's random streams are re-seeded.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.logger import HumanOutputFormat, KVWriter, Logger
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from pref_brl.checkpoint import LATEST, PREVIOUS, RESUME_REMEDY, load_checkpoint, save_checkpoint
from pref_brl.config import TrainConfig
from pref_brl.logger import Logger as RunLogger
from pref_brl.runs import (
    DONE_FILE,
    SB3_MODEL_FILE,
    RunLock,
    prepare_run_dir,
    record_resume,
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


def load_sb3_model(agent: str, path: Path, device: str = "cpu", env: Any = None) -> OffPolicyAlgorithm:
    return sb3_class(agent).load(path, device=device, env=env)


SB3_CHECKPOINT_PREFIX = "sb3_checkpoint_"
"""step-stamped SB3 model (.zip) and replay buffer (.pkl) files of a checkpoint"""


class ScalarsFormat(KVWriter):
    """SB3 logger output through our run logger: scalars.jsonl records and TensorBoard scalars (x-axis: env
    steps), both cut back to the checkpoint's step when a run resumes."""

    def __init__(self, logger: RunLogger) -> None:
        self.logger = logger

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        values = {k: float(v) for k, v in key_values.items()
                  if isinstance(v, int | float | np.number) or (isinstance(v, torch.Tensor) and v.numel() == 1)}
        self.logger.log(step, values)
        self.logger.flush()

    def close(self) -> None:
        self.logger.close()


class SB3Trainer:
    """The run of an SB3 agent: :class:`PEBBLE` around `make_sb3_model`, SB3's logger writing into the run folder.
    `pref_brl.training.make_trainer(cfg)` returns one for an sb3-* agent (a :class:`RunTrainer`, like ours)."""

    def __init__(self, cfg: TrainConfig, progress: bool = True, allow_config_change: bool = False) -> None:
        self.cfg = cfg
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.pebble = PEBBLE(cfg)
        self.model = make_sb3_model(cfg, self.pebble.env)
        self.run_dir, resuming = prepare_run_dir(cfg, allow_config_change, can_extend=False)
        self.lock = RunLock(self.run_dir)
        self.step = 0
        self.interrupted = ""
        """the signal that stopped the run, if any"""
        self.evaluated = 0
        """the step of the last evaluation (the callback's schedule)"""
        self._last_checkpoint_step = 0
        try:
            unfinished = resuming and not (self.run_dir / DONE_FILE).exists()
            if unfinished:
                self.resume()
            # under the lock (one writer per folder), and after the checkpoint loaded: a refused resume changes nothing
            write_run_files(cfg, self.run_dir, resuming)
            logger = RunLogger(self.run_dir, resume_step=self.step if unfinished else None)
            if unfinished:
                record_resume(self.run_dir)
        except BaseException:
            self.lock.release()
            raise
        formats: list[KVWriter] = [ScalarsFormat(logger)]
        if progress:
            formats.append(HumanOutputFormat(sys.stdout))
        self.model.set_logger(Logger(None, formats))

    def resume(self) -> None:
        """Load the newest readable checkpoint (its SB3 files included); none yet: start afresh."""
        state = load_checkpoint(self.run_dir, RESUME_REMEDY)
        if state is None:
            return
        files = state["sb3"]
        self.model = load_sb3_model(self.cfg.agent, self.run_dir / files["model"], self.cfg.device, self.pebble.env)
        self.model.load_replay_buffer(self.run_dir / files["replay"])
        self.model._last_obs = None  # the episode running at the checkpoint starts afresh
        if self.pebble.learner is not None:
            self.pebble.learner.load_state_dict(state["learner"])
        self.pebble.env.returns.extend(state["returns"])
        self.pebble.env.learned_returns.extend(state["learned_returns"])
        self.pebble.last_eval = state["last_eval"]
        self.step = self._last_checkpoint_step = int(state["step"])
        self.evaluated = int(state["evaluated"])

    def train(self) -> dict[str, float]:
        """Run `cfg.steps` env steps; returns the last evaluation's scalars (SIGTERM/SIGINT stop it early, after
        a checkpoint)."""
        try:
            if (self.run_dir / DONE_FILE).exists():
                print(f"{self.run_dir} is already finished; nothing to do")
                return {}
            episodes = max(1, round(self.cfg.log_frequency / self.pebble.ep_len))
            callback = self.pebble.callback(lambda: self.interrupted, on_step_end=self.maybe_checkpoint,
                                            evaluated=self.evaluated)
            with stop_on_signals(self):
                self.model.learn(self.cfg.steps - self.model.num_timesteps, callback=callback,
                                 log_interval=episodes, reset_num_timesteps=False)
            self.step, self.evaluated = self.model.num_timesteps, callback.evaluated
            self.checkpoint()
            if self.interrupted:
                print(f"stopped by {self.interrupted} at step {self.step}; checkpoint saved in {self.run_dir}; run "
                      "the same command again to resume", flush=True)
                return self.pebble.last_eval
            self.model.save(self.run_dir / SB3_MODEL_FILE)
            (self.run_dir / DONE_FILE).write_text(json.dumps({"step": self.step, **self.pebble.last_eval}), "utf-8")
            return self.pebble.last_eval
        finally:
            self.close()

    def maybe_checkpoint(self, step: int, evaluated: int) -> None:
        """The callback's hook after each step: a checkpoint at the first step after each multiple of
        `checkpoint_frequency`."""
        if step // self.cfg.checkpoint_frequency > self._last_checkpoint_step // self.cfg.checkpoint_frequency:
            self.step, self.evaluated = step, evaluated
            self.checkpoint()

    def checkpoint(self) -> None:
        """SB3's model and replay buffer in step-stamped files, then checkpoint.pt naming them (the commit
        point); files no checkpoint names any more are removed."""
        stem = f"{SB3_CHECKPOINT_PREFIX}{self.step}"
        buffer = self.model.replay_buffer
        entropy, buffer.entropy = buffer.entropy, None  # the exploration reward is the learner's, saved there
        try:
            _save_atomically(self.model.save, self.run_dir / f"{stem}.zip")
            _save_atomically(self.model.save_replay_buffer, self.run_dir / f"{stem}.pkl")
        finally:
            buffer.entropy = entropy
        learner = self.pebble.learner
        save_checkpoint(self.run_dir, {
            "step": self.step, "obs_dim": int(self.pebble.env.observation_space.shape[0]), "agents": {},
            "learner": None if learner is None else learner.state_dict(), "last_eval": self.pebble.last_eval,
            "sb3": {"model": f"{stem}.zip", "replay": f"{stem}.pkl"}, "evaluated": self.evaluated,
            "returns": list(self.pebble.env.returns), "learned_returns": list(self.pebble.env.learned_returns)})
        self._last_checkpoint_step = self.step
        named = set()
        for name in (LATEST, PREVIOUS):
            if (self.run_dir / name).exists():
                named.update(torch.load(self.run_dir / name, map_location="cpu", weights_only=True)["sb3"].values())
        for path in self.run_dir.glob(f"{SB3_CHECKPOINT_PREFIX}*"):
            if path.name not in named:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        self.model.logger.close()
        self.pebble.env.close()
        self.pebble.eval_env.close()
        self.lock.release()


def _save_atomically(save, path: Path) -> None:
    """`save(tmp)` then rename onto `path`: a kill mid-write leaves no half-written file under the final name."""
    tmp = path.with_name(path.name + ".tmp")
    save(tmp)
    written = tmp if tmp.exists() else tmp.with_name(tmp.name + path.suffix)  # SB3 may append its own suffix
    os.replace(written, path)
