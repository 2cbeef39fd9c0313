"""pref-brl as a library: train a run, read what it wrote, load its policy and learned reward (docs/library.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pref_brl.runs import CONFIG_FILE, DONE_FILE, SB3_MODEL_FILE, SCALARS_FILE

if TYPE_CHECKING:
    from pref_brl.config import TrainConfig

__all__ = ["LearnedReward", "Policy", "RunResult", "load_policy", "load_reward", "scripted_policy", "train"]

"""a Stable-Baselines3 agent's model, saved by SB3 in its run folder"""


@dataclass(frozen=True)
class RunResult:
    """What a training run left behind; the files are those of the run folder (README.md, "Run folders")."""

    run_dir: Path
    """the run folder"""
    config: TrainConfig
    """the config it ran with"""
    last_eval: dict[str, float]
    """the last evaluation: eval/mean_reward (and eval/success_rate on Meta-World)"""
    finished: bool
    """whether it ran all config.steps (done.json is written)"""
    interrupted: str = ""
    """the signal that stopped it early (SIGINT, SIGTERM; re-running resumes it), else empty"""

    @property
    def checkpoint(self) -> Path:
        """the newest checkpoint (networks, reward model, labelled pairs, counters)"""
        return self.run_dir / "checkpoint.pt"

    @property
    def scalars(self) -> Path:
        """every logged scalar, one JSON record per line"""
        return self.run_dir / SCALARS_FILE

    @property
    def tensorboard(self) -> Path:
        """TensorBoard's event folder"""
        return self.run_dir / "tb"

    def records(self) -> list[dict[str, float]]:
        """The records of :attr:`scalars` (each has `step` and the scalars logged at that step)."""
        from pref_brl.logger import read_scalars

        return read_scalars(self.run_dir)

    def load_policy(self, agent: str = "A", device: str = "cpu") -> Policy:
        """:func:`load_policy` of this run."""
        return load_policy(self.run_dir, agent, device)


def train(config: TrainConfig, *, progress: bool = True, allow_config_change: bool = False) -> RunResult:
    """Train (or resume) the run `config` describes, after checking it: every input it refuses raises
    :class:`pref_brl.validate.ConfigError` (a ValueError) with the line `pref-brl-train` prints after `error:`."""
    from pref_brl.training import make_trainer
    from pref_brl.validate import validate

    validate(config)
    trainer = make_trainer(config, progress=progress, allow_config_change=allow_config_change)
    last_eval = trainer.train()
    done = trainer.run_dir / DONE_FILE
    if done.exists():
        last_eval = {k: v for k, v in json.loads(done.read_text(encoding="utf-8")).items() if k != "step"}
    return RunResult(Path(trainer.run_dir), config, dict(last_eval), done.exists(), trainer.interrupted)


class Policy:
    """A trained policy. `predict(obs, deterministic=True) -> (action, None)`: Stable-Baselines3's spelling and
    return value, but deterministic by default (SB3's default is stochastic); obs [O] gives one action [A],
    obs [N, O] gives [N, A], in the environment's [-1, 1] units."""

    def __init__(self, act: Callable[[np.ndarray, bool], np.ndarray], obs_dim: int, act_dim: int,
                 step: int | None = None) -> None:
        self._act = act
        self.obs_dim = obs_dim
        """state size"""
        self.act_dim = act_dim
        """action size"""
        self.step = step
        """the env step of the checkpoint it was loaded from (None for a Stable-Baselines3 model file)"""

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """(action, None); `state` and `episode_start` exist for SB3's signature (no recurrent policies)."""
        obs = np.asarray(observation, dtype=np.float32)
        if obs.shape[-1] != self.obs_dim or obs.ndim not in (1, 2):
            raise ValueError(f"expected an observation [{self.obs_dim}] or a batch [N, {self.obs_dim}], "
                             f"got {obs.shape}")
        batch = obs if obs.ndim == 2 else obs[None]
        action = self._act(batch, deterministic)
        return (action if obs.ndim == 2 else action[0]), None


def load_policy(run_dir: str | Path, agent: str = "A", device: str = "cpu") -> Policy:
    """The policy of agent `agent` (A: the deployed one; B: bilevel's perturbed agent) from a run folder's newest
    checkpoint; a Stable-Baselines3 run's model file for an sb3-* agent. A ValueError says what is missing."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    if cfg.agent != "sac":
        return _sb3_policy(run_dir, cfg, agent, device)
    actor_state, step = _actor_state(run_dir, agent)
    return _sac_policy(actor_state, cfg, device, step)


def scripted_policy(env: Any) -> Policy:
    """Meta-World's scripted policy for the task of `env`, a Meta-World environment from :func:`pref_brl.make_env`
    (`metaworld.policies`: the hand-written controllers with which Meta-World shows that each task can be
    solved), behind the Policy interface: behaviour that solves the task with no training, e.g. to ask whether a
    learned reward ranks it high (`pref-brl-reward-check --expert`). Give it the observations of that `env`: some
    controllers steer to the goal, which the default goal mode hides from the observation, and the policy reads
    it from `env` (a privilege of the simulator, like the scripted teacher's). It is deterministic
    (`deterministic=False` acts the same); its actions are clipped to [-1, 1], as the simulator clips them;
    `step` is None. A ValueError for any other environment."""
    import warnings

    from pref_brl.envs.metaworld_env import MetaWorldEnv

    sim = getattr(env, "unwrapped", env)
    if not isinstance(sim, MetaWorldEnv):
        raise ValueError(f"scripted policies are Meta-World's, and this is a {type(sim).__name__}: give a Meta-World "
                         "environment of pref_brl.make_env (elsewhere, score a trained agent, e.g. a sac run's)")
    from metaworld.policies import ENV_POLICY_MAP

    controller = ENV_POLICY_MAP[sim.task_name]()  # every known task has one (tests/test_envs.py)
    obs_dim, act_dim = sim.observation_space.shape[0], sim.action_space.shape[0]

    def act(obs: np.ndarray, deterministic: bool) -> np.ndarray:
        actions = np.empty((len(obs), act_dim), dtype=np.float32)
        with warnings.catch_warnings():  # "Constant(s) may be too high": a proportional step past [-1, 1]
            warnings.simplefilter("ignore", UserWarning)
            for i, o in enumerate(obs):
                full = np.array(o, dtype=np.float64)  # a copy: the controllers also shift parts of it in place
                full[-3:] = sim.goal  # the goal, hidden or not (then the same numbers)
                actions[i] = np.clip(controller.get_action(full), -1.0, 1.0)
        return actions

    return Policy(act, obs_dim, act_dim)


def run_config(run_dir: Path) -> TrainConfig:
    """The config a run folder's run was made with; a ValueError when there is none or it cannot be read."""
    from pref_brl.runs import config_from_dict

    path = run_dir / CONFIG_FILE
    if not path.exists():
        raise ValueError(f"{run_dir} is not a pref-brl run folder (no config.json)")
    try:
        return config_from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a readable run config ({exc})") from None


def _actor_state(run_dir: Path, agent: str) -> tuple[dict[str, Any], int]:
    """The actor's weights of `agent` in the newest checkpoint, and that checkpoint's env step."""
    from pref_brl.checkpoint import load_checkpoint

    state = load_checkpoint(run_dir)
    if state is None:
        raise ValueError(f"{run_dir} has no checkpoint yet")
    if agent == "A":
        return state["agents"]["A"]["actor"], int(state["step"])
    if agent == "B" and (state.get("learner") or {}).get("b") is not None:
        return state["learner"]["b"], int(state["step"])
    raise ValueError(f"{run_dir} has no agent {agent!r} (agent B exists in bilevel runs with --penalty-weight > 0 "
                     "after their first feedback round)")


def _sac_policy(actor_state: dict[str, Any], cfg: TrainConfig, device: str,
                step: int | None = None) -> Policy:
    import torch

    from pref_brl.agents.sac import Actor, SACConfig

    weights = [v for k, v in actor_state.items() if k.endswith("weight")]
    obs_dim, act_dim = int(weights[0].shape[1]), int(weights[-1].shape[0]) // 2
    actor = Actor(obs_dim, act_dim, SACConfig(hidden_dim=cfg.hidden_dim, hidden_depth=cfg.hidden_depth))
    actor.load_state_dict(actor_state)
    actor.to(device).eval().requires_grad_(False)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)

    @torch.no_grad()
    def act(obs: np.ndarray, deterministic: bool) -> np.ndarray:
        mu, log_std = actor(torch.as_tensor(obs, device=device))
        if not deterministic:
            mu = mu + log_std.exp() * torch.randn(mu.shape, generator=generator, device=device)
        return torch.tanh(mu).cpu().numpy()

    return Policy(act, obs_dim, act_dim, step)


def _sb3_policy(run_dir: Path, cfg: TrainConfig, agent: str, device: str) -> Policy:
    from pref_brl.sb3.runner import load_sb3_model

    if agent != "A":
        raise ValueError(f"{run_dir} holds one Stable-Baselines3 agent, A; there is no agent {agent!r}")
    path = run_dir / SB3_MODEL_FILE
    if not path.exists():
        raise ValueError(f"{run_dir} has no {SB3_MODEL_FILE} yet (a Stable-Baselines3 run saves it when it ends)")
    model = load_sb3_model(cfg.agent, path, device)
    obs_dim, act_dim = model.observation_space.shape[0], model.action_space.shape[0]
    return Policy(lambda obs, deterministic: model.predict(obs, deterministic=deterministic)[0], obs_dim, act_dim)


class LearnedReward:
    """A preference run's learned reward: `reward(obs, act)` -> the reward of each step, [N] for obs [N, O] and
    act [N, A] (one number for a single step), the reward model's ensemble mean, with which the run relabels
    its replay buffer and its agent learns."""

    def __init__(self, model: Any, obs_dim: int, act_dim: int, device: str, step: int = 0, labels: int = 0,
                 label_returns: np.ndarray | None = None) -> None:
        self._model = model
        self._device = device
        self.obs_dim = obs_dim
        """state size"""
        self.act_dim = act_dim
        """action size"""
        self.step = step
        """the env step of the checkpoint it was loaded from"""
        self.labels = labels
        """the labels it had been trained on by then (`feedback/total`)"""
        self.label_returns = np.zeros((0, 2)) if label_returns is None else np.asarray(label_returns, dtype=float)
        """[N, 2]: the true returns of σ⁰ and σ¹ of each labelled pair it was trained on, in the order labelled (the
        environment's reward over each segment, whoever labelled it): how far up the task its labels reached"""
        if self.label_returns.ndim != 2 or self.label_returns.shape[1] != 2:
            raise ValueError(f"label_returns must be [N, 2], a true return for each segment of each labelled pair; "
                             f"got shape {self.label_returns.shape}")

    def __call__(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        single, o, a = self._steps(obs, act)
        with _no_grad():
            return _numpy(self._model.mean_reward(o, a), single)

    @property
    def has_ensemble(self) -> bool:
        """whether the reward model has members whose disagreement :meth:`ensemble_std` can measure (PEBBLE's
        ensemble has; a `--reward-model` of your own has if it offers `mean_std_reward`)"""
        return hasattr(self._model, "mean_std_reward")

    def ensemble_std(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        """The ensemble members' disagreement on each step: the (population) standard deviation across members
        of the per-step reward, shaped like `reward(obs, act)`. High where the labels so far say little: where
        an exploration bonus on reward uncertainty would send the agent. A ValueError if the model has no
        members (:attr:`has_ensemble`)."""
        if not self.has_ensemble:
            raise ValueError("this reward model has no ensemble members (no mean_std_reward) to disagree")
        single, o, a = self._steps(obs, act)
        with _no_grad():
            return _numpy(self._model.mean_std_reward(o, a)[1], single)

    def _steps(self, obs: np.ndarray, act: np.ndarray) -> tuple[bool, Any, Any]:
        import torch

        o, a = np.asarray(obs, dtype=np.float32), np.asarray(act, dtype=np.float32)
        single = o.ndim == 1
        o, a = (o[None], a[None]) if single else (o, a)
        if o.ndim != 2 or a.ndim != 2 or o.shape[1] != self.obs_dim or a.shape[1] != self.act_dim \
                or len(o) != len(a):
            raise ValueError(f"expected obs [N, {self.obs_dim}] and act [N, {self.act_dim}] (or one step of each), "
                             f"got {np.shape(obs)} and {np.shape(act)}")
        return single, torch.as_tensor(o, device=self._device), torch.as_tensor(a, device=self._device)


def _no_grad() -> Any:
    import torch

    return torch.no_grad()


def _numpy(values: Any, single: bool) -> Any:
    out = values.reshape(-1).double().cpu().numpy()
    return out[0] if single else out


class RewardNotYet(ValueError):
    """A preference run that has no learned reward yet: no checkpoint, or none after its first feedback round."""


def load_reward(run_dir: str | Path, device: str = "cpu") -> LearnedReward:
    """The learned reward of a preference run (pebble, bilevel, sobirl, mrn) from its newest checkpoint; a
    ValueError says what is missing (a sac run learns from the true reward and has none; :class:`RewardNotYet`,
    a ValueError, that the run has not got that far yet), a
    :class:`pref_brl.checkpoint.CheckpointError` that no checkpoint can be read."""
    from pref_brl.checkpoint import load_checkpoint
    from pref_brl.envs import make_env
    from pref_brl.protocols import make_reward_model

    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    if cfg.method == "sac":
        raise ValueError(f"{run_dir} is a sac run: it learns from the true reward and has no learned reward")
    state = load_checkpoint(run_dir, "its learned reward cannot be read; name another run folder")
    if state is None:
        raise RewardNotYet(f"{run_dir} has no checkpoint yet")
    learner = state.get("learner") or {}
    if "ensemble" not in learner or learner.get("counters", (0, 0, 0))[2] == 0:
        raise RewardNotYet(f"{run_dir} has had no feedback round yet, so its reward model has learned nothing; "
                         "load it after its first round")
    env = make_env(cfg.env, cfg.seed)
    try:
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    finally:
        env.close()
    model = make_reward_model(cfg, obs_dim, act_dim, device)
    model.load_full_state(learner["ensemble"])
    prefs = learner.get("prefs") or {}
    n = int(prefs.get("n", 0))
    returns = np.stack([prefs["rew0"][:n].double().sum(1).numpy(), prefs["rew1"][:n].double().sum(1).numpy()],
                       axis=1) if n else None
    return LearnedReward(model, obs_dim, act_dim, device, int(state.get("step", 0)), int(learner["counters"][0]),
                         returns)
