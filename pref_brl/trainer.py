"""The training loop: named phases around one SAC agent (or two, for the bilevel method).

Phases: seed steps (uniform actions) -> unsupervised exploration (state-entropy reward, preference methods
only) -> learning on the true reward (`sac`) or on the learned reward with feedback rounds every
`num_interact` steps while labels remain. Evaluation, logging and checkpoints are due at fixed periods;
checkpoints are taken at episode boundaries so that a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import deque

import numpy as np
import torch

from pref_brl.agents.replay import ReplayBuffer
from pref_brl.agents.sac import SAC
from pref_brl.checkpoint import RESUME_REMEDY, load_checkpoint, save_checkpoint
from pref_brl.config import TrainConfig
from pref_brl.envs import episode_length, is_metaworld, make_env
from pref_brl.episodes import EpisodeRecorder
from pref_brl.feedback import LABEL_WAIT_TAG, Collaborators
from pref_brl.human.session import LabellingInterrupted
from pref_brl.logger import Logger, Progress
from pref_brl.methods import make_learner
from pref_brl.runs import (
    DONE_FILE,
    RunLock,
    ended_mid_episode,
    finished_step,
    is_finished,
    prepare_run_dir,
    record_resume,
    run_dir_of,
    stop_on_signals,
    write_run_files,
)
from pref_brl.video import make_eval_videos

EVAL_SEED_OFFSET = 1_000_003


class Trainer:
    """Owns the environments, agents, replay buffer, preference learner and the loop over env steps (our SAC
    agent; :func:`pref_brl.training.make_trainer` picks it or the Stable-Baselines3 runner for a config)."""

    def __init__(self, cfg: TrainConfig, progress: bool = True, allow_config_change: bool = False) -> None:
        self.cfg = cfg
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        limit = cfg.max_episode_steps or None
        self.env = make_env(cfg.env, cfg.seed, goal_mode=cfg.goal_mode, max_episode_steps=limit)
        self.eval_env = make_env(cfg.env, cfg.seed + 1, goal_mode=cfg.goal_mode, max_episode_steps=limit)
        obs_dim = self.env.observation_space.shape[0]
        act_dim = self.env.action_space.shape[0]
        self.ep_len = cfg.max_episode_steps or episode_length(cfg.env)
        self.agents = {"A": SAC(obs_dim, act_dim, cfg.sac_config(), cfg.device, seed=cfg.seed)}
        self.replay = ReplayBuffer(obs_dim, act_dim, cfg.capacity, cfg.device)
        self.rng = np.random.default_rng([cfg.seed, 7])  # seed-step actions and episode reset seeds
        self.sample_generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed + 11)
        self.returns: deque[float] = deque(maxlen=10)
        self.learner = make_learner(cfg, obs_dim, act_dim, Collaborators(
            agent=self.agents["A"], replay=self.replay, sample_generator=self.sample_generator, returns=self.returns,
            ep_len=self.ep_len, stopping=lambda: bool(self.interrupted)))
        self.videos = make_eval_videos(cfg, run_dir_of(cfg), EVAL_SEED_OFFSET + 1000 * cfg.seed)
        # the folder comes after everything that can refuse the config (a user's reward model, a preference file)
        try:
            self.run_dir, resuming = prepare_run_dir(cfg, allow_config_change)
            self.lock = RunLock(self.run_dir)
        except BaseException:
            if self.videos is not None:
                self.videos.close()
            raise
        self.recorder = EpisodeRecorder(self.ep_len, obs_dim, act_dim)
        self.step = 0
        self.learned_returns: deque[float] = deque(maxlen=10)
        self.successes: deque[float] = deque(maxlen=10)
        self.metrics: dict[str, torch.Tensor | float] = {}
        self.obs: np.ndarray | None = None
        self.snapshots: frozenset[int] = frozenset()  # steps of the running episode to snapshot for the learner
        self.last_eval: dict[str, float] = {}
        self._last_checkpoint_step = 0
        self.interrupted = ""  # the signal that asked the run to stop, if any
        try:
            self.logger = self.open(resuming)
            if resuming and not is_finished(self.run_dir, cfg.steps):
                record_resume(self.run_dir)  # after the checkpoint loaded: a refused resume changes nothing
            self.learner.open_run_dir(self.run_dir)  # labelling by hand: its database and page
        except BaseException:
            if hasattr(self, "logger"):
                self.logger.close()
            if self.videos is not None:
                self.videos.close()
            self.lock.release()
            raise
        self.progress = Progress(cfg.steps, self.step, cfg.log_frequency, enabled=progress)
        self._clock = (time.time(), self.step)

    def open(self, resuming: bool) -> Logger:
        """Load the checkpoint of a resumed run; the logger (a new run's records its config first)."""
        cfg = self.cfg
        state = load_checkpoint(self.run_dir, RESUME_REMEDY) if resuming else None
        if state is not None:
            self.load_state_dict(state)
        # under the lock (one writer per folder), and after the checkpoint loaded: a refused resume changes nothing
        write_run_files(cfg, self.run_dir, resuming)
        # a resumed run drops what its killed session logged after the checkpoint (everything, when there is none)
        logger = Logger(self.run_dir, resume_step=self.step if resuming else None)
        if state is None:
            tags = ("eval/mean_reward", "eval/success_rate") if is_metaworld(cfg.env) else ("eval/mean_reward",)
            logger.config(cfg.to_json(), tags)
        return logger

    # ------------------------------------------------------------------------------------------ the loop
    def train(self) -> dict[str, float]:
        """Run until `cfg.steps` env steps; returns the last evaluation's scalars.

        SIGTERM/SIGINT stop the run at the end of the running episode, after a checkpoint (a second signal
        stops at once; the previous checkpoint is kept). `self.interrupted` then names the signal.
        """
        try:
            if is_finished(self.run_dir, self.cfg.steps):
                print(f"{self.run_dir} is already finished; nothing to do")
                return {}
            done = finished_step(self.run_dir)
            if done is not None:  # continued to a larger --steps: unfinished again until it gets there
                if ended_mid_episode(self.run_dir):
                    print(f"warning: {self.run_dir} ended inside an episode at step {done}; its continuation starts "
                          f"a new episode there, so it is not step for step the run started with --steps "
                          f"{self.cfg.steps}", file=sys.stderr, flush=True)
                (self.run_dir / DONE_FILE).unlink()
                print(f"continuing {self.run_dir}, finished at step {done}, from its checkpoint at step "
                      f"{self.step} to step {self.cfg.steps}", flush=True)
            with stop_on_signals(self):
                self.loop()
            if self.interrupted:
                return self.last_eval
            self.save()
            self.finish()
            return self.last_eval
        finally:
            self.close()

    def loop(self) -> None:
        while self.step < self.cfg.steps:
            if self.obs is None:
                if self.interrupted or self.checkpoint_due():
                    self.save()
                if self.interrupted:
                    print(f"stopped by {self.interrupted} at step {self.step}; checkpoint saved in "
                          f"{self.run_dir}; run the same command again to resume", flush=True)
                    return
            self.env_step()
            if self.learner.feedback_due(self.step):
                try:
                    values = self.log(self.learner.feedback_round(self.step))
                except LabellingInterrupted as exc:  # the labels given so far are in the run's database
                    print(f"{exc}; the last checkpoint in {self.run_dir} is kept; run the same command again "
                          "to resume (given labels are kept)", flush=True)
                    return
                self.progress.exclude(values.get(LABEL_WAIT_TAG, 0.0))  # waiting for a person is not training
                self.announce("feedback", values)
            if self.eval_due():
                self.announce("eval", self.log(self.evaluate()))
            if self.log_due():
                self.log_training()

    def env_step(self) -> None:
        """One env step of the loop: an episode begins when none runs, the acting agent acts, the transition is
        stored, the agents learn once learning has started, and the step is counted. `loop` adds checkpoints,
        feedback rounds, evaluations and logs around it; the tests and the bench drive it directly."""
        if self.obs is None:
            self.begin_episode()
        self.collect_step()
        if self.learning_due():
            self.update_agents()
        self.step += 1

    def learning_due(self) -> bool:
        return self.step >= self.cfg.learning_starts

    def eval_due(self) -> bool:
        return self.step % self.cfg.eval_frequency == 0 or self.step == self.cfg.steps

    def log_due(self) -> bool:
        return self.step % self.cfg.log_frequency == 0

    def checkpoint_due(self) -> bool:
        """At the first episode boundary after each multiple of checkpoint_frequency."""
        last = self._last_checkpoint_step
        return self.step // self.cfg.checkpoint_frequency > last // self.cfg.checkpoint_frequency

    # ------------------------------------------------------------------------------------------ acting
    def begin_episode(self) -> None:
        plan = self.learner.next_episode(self.step, int(self.rng.integers(2**31)))
        agent_name, reset_seed, self.episode_limit = plan.agent, plan.reset_seed, plan.max_steps
        self.obs, _ = self.env.reset(seed=reset_seed)
        if plan.start is not None:  # a branch: continue from a snapshot of an earlier episode (simulator only)
            self.env.set_sim_state(plan.start.state)
            self.obs = plan.start.obs.copy()
        self.snapshots = plan.snapshots
        self.acting = agent_name
        self.policy = self.learner.policy(agent_name)
        # The action noise stream is a function of the reset seed, so paired episodes share it.
        self.noise = np.random.default_rng([self.cfg.seed, reset_seed, 3])
        self.recorder.start(agent_name, reset_seed)

    def choose_action(self) -> np.ndarray:
        noise = self.noise.standard_normal(self.env.action_space.shape[0])
        if self.step < self.cfg.num_seed_steps:
            return self.rng.uniform(-1.0, 1.0, self.env.action_space.shape[0]).astype(np.float32)
        action = self.policy.act(self.obs, noise)
        if not np.isfinite(action).all():
            raise FloatingPointError(self.nonfinite_report(f"action of agent {self.acting}"))
        return action

    def nonfinite_report(self, what: str) -> str:
        """One line naming what went non-finite, the training losses that did, and the step."""
        losses = [k for k, v in self.metrics.items() if not math.isfinite(float(v))]
        cause = f" (non-finite: {', '.join(losses)})" if losses else ""
        return (f"non-finite {what} at step {self.step}{cause}; the last good checkpoint in {self.run_dir} is "
                "kept (rerun with --detect-anomaly to find the operation)")

    def collect_step(self) -> None:
        if self.recorder.t in self.snapshots:
            self.learner.record_snapshot(self.recorder.t, self.env.get_sim_state(), self.obs.copy())
        action = self.choose_action()
        next_obs, true_reward, terminated, truncated, info = self.env.step(action)
        reward = self.learner.step_reward(self.obs, action, true_reward)
        if self.learner.stores_transitions_of(self.acting):
            self.replay.add(self.obs, action, reward, next_obs, terminated, 0 if self.acting == "A" else 1)
        self.recorder.add(self.obs, action, true_reward, float(info.get("success", 0.0)))
        self.obs = next_obs
        if terminated or truncated or self.recorder.t >= self.episode_limit:
            self.end_episode(whole=terminated or truncated)

    def end_episode(self, whole: bool = True) -> None:
        """`whole`: the episode ended by itself (not cut short as half of a paired probe rollout)."""
        episode = self.recorder.finish()
        if episode.agent == "A" and whole:
            self.returns.append(float(episode.true_reward.sum()))
            self.successes.append(float(self.recorder.success))
        self.learner.add_episode(episode)
        learned = self.learner.learned_return(episode) if whole else None
        if learned is not None:
            self.learned_returns.append(learned)
        self.obs = None

    def update_agents(self) -> None:
        self.metrics.update(self.learner.update_agents(self.step))

    # ------------------------------------------------------------------------------------------ eval / logs
    @torch.no_grad()
    def evaluate(self, agent_name: str = "A") -> dict[str, float]:
        """Deterministic episodes (tanh of the mean action) on the eval env, fixed reset seeds."""
        returns, successes = [], []
        agent = self.agents["A"] if agent_name == "A" else self.learner.extra_policies()[agent_name]
        for i in range(self.cfg.num_eval_episodes):
            obs, _ = self.eval_env.reset(seed=EVAL_SEED_OFFSET + 1000 * self.cfg.seed + i)
            total, success, done = 0.0, 0.0, False
            while not done:
                obs, reward, terminated, truncated, info = self.eval_env.step(agent.act(obs))
                total += reward
                success = max(success, float(info.get("success", 0.0)))
                done = terminated or truncated
            returns.append(total)
            successes.append(success)
        if agent_name == "A" and self.videos is not None and self.videos.due(self.step):
            self.videos.record(self.step, agent.act)
        prefix = "eval" if agent_name == "A" else f"eval_{agent_name}"
        out = {f"{prefix}/mean_reward": float(np.mean(returns))}
        if is_metaworld(self.cfg.env):
            out[f"{prefix}/success_rate"] = float(np.mean(successes))
        if agent_name == "A":
            self.last_eval = out
            out.update(self.learner.eval_metrics())
            for name in self.learner.extra_policies():
                out.update(self.evaluate(name))
        return out

    def log_training(self) -> None:
        now = time.time()
        fps = (self.step - self._clock[1]) / max(now - self._clock[0], 1e-9)
        self._clock = (now, self.step)
        scalars = dict(self.metrics)
        scalars["time/fps"] = fps
        if self.cfg.compile:  # first call of each compiled update graph, compilation included
            from pref_brl.agents.fast_update import warmup_seconds

            scalars["time/compile_s"] = warmup_seconds()
        if self.returns:
            scalars["rollout/ep_rew_mean"] = float(np.mean(self.returns))
        if self.learned_returns:
            scalars["rollout/ep_learned_rew_mean"] = float(np.mean(self.learned_returns))
        if is_metaworld(self.cfg.env) and self.successes:
            scalars["rollout/success_rate"] = float(np.mean(self.successes))
        self.progress.update(self.step, self.log(scalars))
        self.logger.flush()
        self.metrics = {}  # a key not refreshed before the next log (e.g. exploration) is not repeated

    def announce(self, kind: str, values: dict[str, float]) -> None:
        """A progress line per evaluation and per feedback round (labels so far, what the round did)."""
        if kind == "eval":
            keys = [k for k in values if k.startswith("eval")]
        elif "feedback/total" in values:
            keys = ["reward/accuracy", "bilevel/kl_ab", "mrn/outer_loss"]
        else:
            kind, keys = "penalty", ["bilevel/gap_before", "bilevel/gap_after", "bilevel/penalty_snr"]
        body = " ".join(f"{k}={values[k]:.4g}" for k in keys if k in values)
        if "feedback/total" in values:
            body = f"labels {int(values['feedback/total'])}/{self.cfg.max_feedback} " + body
        if body:
            self.progress.event(self.step, f"{kind}: {body}")

    def log(self, scalars: dict) -> dict[str, float]:
        values = self.logger.log(self.step, scalars)
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            self.logger.flush()
            raise FloatingPointError(self.nonfinite_report(f"value of {', '.join(bad)}"))
        return values

    # ------------------------------------------------------------------------------------------ state

    def save(self) -> None:
        """Checkpoint, unless a network went non-finite (then the last good checkpoint is kept)."""
        self.check_finite()
        self.logger.flush()
        save_checkpoint(self.run_dir, self.state_dict())
        self._last_checkpoint_step = self.step

    def check_finite(self) -> None:
        modules = {f"agent {k}": a.actor for k, a in self.agents.items()}
        modules.update({f"agent {k} critic": a.critic for k, a in self.agents.items()})
        if isinstance(self.learner.reward_model, torch.nn.Module):
            modules["reward model"] = self.learner.reward_model
        modules.update({f"agent {k}": p.actor for k, p in self.learner.extra_policies().items()})
        for name, module in modules.items():
            if not all(bool(torch.isfinite(p).all()) for p in module.parameters()):
                raise FloatingPointError(f"non-finite parameters in the {name} at step {self.step}; the last "
                                         f"good checkpoint in {self.run_dir} is kept (try --detect-anomaly)")

    def finish(self) -> None:
        # mid_episode: the run stopped inside an episode, which a continuation to more steps cannot resume
        (self.run_dir / DONE_FILE).write_text(json.dumps({"step": self.step, **self.last_eval,
                                                          **({"mid_episode": True} if self.obs is not None else {})}),
                                              "utf-8")

    def close(self) -> None:
        """Flush and release everything (also after an error or a signal)."""
        self.progress.close()
        self.learner.close()
        if self.videos is not None:
            self.videos.close()
        if not self.logger.file.closed:
            self.logger.close()
        self.lock.release()

    def state_dict(self) -> dict:
        return {"step": self.step, "agents": {k: a.state_dict() for k, a in self.agents.items()},
                "replay": self.replay.state_dict(), "rng": self.rng.bit_generator.state,
                "sample_generator": self.sample_generator.get_state(), "returns": list(self.returns),
                "learned_returns": list(self.learned_returns), "successes": list(self.successes),
                "last_eval": self.last_eval, "metrics": {k: float(v) for k, v in self.metrics.items()},
                "learner": self.learner.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.step = self._last_checkpoint_step = state["step"]
        self.learner.load_state_dict(state["learner"])
        self.agents["A"].load_state_dict(state["agents"]["A"])
        self.replay.load_state_dict(state["replay"])
        self.rng.bit_generator.state = state["rng"]
        self.sample_generator.set_state(state["sample_generator"])
        self.returns.extend(state["returns"])
        self.learned_returns.extend(state["learned_returns"])
        self.successes.extend(state["successes"])
        self.last_eval = state["last_eval"]
        self.metrics = {k: torch.tensor(v) for k, v in state["metrics"].items()}
