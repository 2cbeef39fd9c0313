"""Signal, bias and cost of the λ-term's estimators at a fixed checkpoint of a bilevel run (docs/bilevel.md).

A run logs `bilevel/penalty_snr` only for the estimator it was trained with, once per round. To compare
estimators on the same footing, `measure` loads one checkpoint read-only, and for each repeat:

1. re-solves agent B from that checkpoint's agent A (the run's own solve: `b_updates` KL-limited steps on the
   latest labelled pairs' Ψ_f), with B's generator seeded per repeat, so each repeat is a fresh round;
2. estimates the round's target λ ∇_φ [J_φ(π_A) − J_φ(π_B)] (J discounted from the reset distribution) with
   a **reference**: many whole-episode pairs of A and B under common random numbers (seeded apart from the
   estimators' draws, so it is held out from them);
3. collects each setting's units anew, as a run would (paired halves from resets, branches from snapshots of
   one ordinary episode of A, or A's episodes: the run's stored ones, as the run uses them, or fresh ones of
   the re-synced A, what stored behaviour log-probabilities would make exact), and reports its SNR over
   those units, the cosine of its mean gradient with the reference's, and the env steps it cost.

Nothing in the run folder is written; the agents' and the reward model's parameters are the checkpoint's
throughout (only B and the episodes differ between repeats). The reference's own reliability is reported
as the cosine between the mean gradients of its two halves: a cosine with the reference is only as
informative as that split-half cosine is close to 1.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pref_brl.agents.replay import ReplayBuffer
from pref_brl.agents.sac import SAC
from pref_brl.bilevel.branches import BranchStart, snapshot_steps
from pref_brl.bilevel.estimators import ESTIMATORS, Estimate
from pref_brl.bilevel.learner import BilevelLearner, ProbePolicy
from pref_brl.checkpoint import load_checkpoint
from pref_brl.config import TrainConfig
from pref_brl.envs import episode_length, make_env
from pref_brl.feedback import Collaborators
from pref_brl.methods import make_learner
from pref_brl.preferences import Episode
from pref_brl.runs import CONFIG_FILE, config_from_dict

SETTING_FIELDS = frozenset({"paired_episodes", "pair_horizon", "lr_episodes", "lr_window", "lr_clip"})
"""The estimator settings a measured setting may change (everything else is the checkpoint's run's)."""
SOURCES = ("stored", "fresh")
"""Where `likelihood-ratio` takes A's episodes: the run's episode store (as in a run) or fresh episodes of the
re-synced A."""


class MeasureError(ValueError):
    """A bad run folder or setting, with the message to print."""


@dataclass(frozen=True)
class Setting:
    """One estimator at one setting: `estimator[+key=value...]`, e.g. `branch+pair_horizon=100`."""

    estimator: str
    values: tuple[tuple[str, Any], ...] = ()
    source: str = "stored"

    @property
    def name(self) -> str:
        extras = [f"{k}={v}" for k, v in self.values]
        if self.estimator == "likelihood-ratio":
            extras.append(f"source={self.source}")
        return "+".join([self.estimator, *extras])


def parse_setting(spec: str) -> Setting:
    """`likelihood-ratio+lr_window=20+source=fresh` as a Setting; MeasureError naming what is wrong."""
    from pref_brl.study import StudyError, coerce

    base, *parts = spec.split("+")
    if base not in ESTIMATORS or base == "shared-states":
        known = ", ".join(k for k in ESTIMATORS if k != "shared-states")
        raise MeasureError(f"setting {spec!r}: unknown estimator {base!r}; known (with an SNR): {known}")
    values, source = {}, "stored"
    for part in parts:
        key, sep, raw = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not raw.strip():
            raise MeasureError(f"setting {spec!r}: {part!r} is not key=value (e.g. branch+pair_horizon=100)")
        if key == "source":
            if base != "likelihood-ratio" or raw not in SOURCES:
                raise MeasureError(f"setting {spec!r}: source is for likelihood-ratio, one of {', '.join(SOURCES)}")
            source = raw
            continue
        if key not in SETTING_FIELDS:
            raise MeasureError(f"setting {spec!r}: {key} is not an estimator setting; one of "
                               f"{', '.join(sorted(SETTING_FIELDS))}")
        try:
            values[key] = coerce(key, raw.strip())
        except StudyError as exc:
            raise MeasureError(f"setting {spec!r}: {exc}") from None
    return Setting(base, tuple(sorted(values.items())), source)


@dataclass
class Row:
    """One setting in one repeat."""

    setting: str
    repeat: int
    snr: float
    units: int
    cosine: float  # of the mean gradient with the reference's
    env_steps: int  # extra env steps a run spends on this estimate per round
    seconds: float  # wall time of collecting the units and computing the estimate
    weight_mean: float = math.nan  # likelihood-ratio: mean per-decision weight (1 in expectation on π_A's episodes)


@dataclass
class Checkpointed:
    """A bilevel learner and its world loaded from a run's checkpoint (read-only)."""

    cfg: TrainConfig
    learner: BilevelLearner
    env: Any
    step: int


def load(run_dir: Path, seed: int) -> Checkpointed:
    """The run's config and checkpoint as a live learner; `seed` seeds the measurement's environment."""
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise MeasureError(f"{run_dir} is not a run folder (no {CONFIG_FILE})")
    try:
        cfg = config_from_dict(json.loads(config_path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise MeasureError(f"{config_path} is not a readable run config ({exc})") from None
    if cfg.method != "bilevel" or cfg.agent != "sac" or cfg.penalty_weight == 0:
        raise MeasureError(f"{run_dir} is a {cfg.method} run; the λ-term's estimators need a bilevel run "
                           "(our SAC agent, --penalty-weight > 0)")
    state = load_checkpoint(run_dir, "measure another run folder")
    if state is None:
        raise MeasureError(f"{run_dir} has no checkpoint yet: wait for its first one")
    cfg = dataclasses.replace(cfg, device="cpu", compile=False)
    env = make_env(cfg.env, seed, goal_mode=cfg.goal_mode, max_episode_steps=cfg.max_episode_steps or None)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    agent = SAC(obs_dim, act_dim, cfg.sac_config(), cfg.device, seed=cfg.seed)
    replay = ReplayBuffer(obs_dim, act_dim, cfg.capacity, cfg.device)
    ep_len = cfg.max_episode_steps or episode_length(cfg.env)
    learner = make_learner(cfg, obs_dim, act_dim, Collaborators(
        agent=agent, replay=replay, sample_generator=torch.Generator().manual_seed(seed), returns=deque(maxlen=10),
        ep_len=ep_len))
    learner.load_state_dict(state["learner"])
    agent.load_state_dict(state["agents"]["A"])
    replay.load_state_dict(state["replay"])
    if learner.rounds < 1 or len(learner.prefs) < 2:
        raise MeasureError(f"{run_dir}'s checkpoint (step {state['step']}) comes before the first feedback round: "
                           "B needs labelled pairs")
    return Checkpointed(cfg, learner, env, int(state["step"]))


def check_setting(cfg: TrainConfig, setting: Setting) -> None:
    """The setting's values checked against the run's config as `pref-brl-train` would check them."""
    from pref_brl.validate import ConfigError, validate_bilevel, validate_types

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise MeasureError(f"setting {setting.name!r} on this run: {message}")

    try:
        changed = dataclasses.replace(cfg, estimator=setting.estimator, **dict(setting.values))
        validate_types(changed, need)
        validate_bilevel(changed, need)
    except ConfigError as exc:
        raise MeasureError(f"setting {setting.name!r} on this run: {exc}") from None


def play(env, policy, reset_seed: int, horizon: int, noise: np.random.Generator, agent: str,
         start: BranchStart | None = None, snapshot_at: frozenset[int] = frozenset()
         ) -> tuple[Episode, list[BranchStart]]:
    """`horizon` steps of `policy` from a reset (or a snapshot), actions driven by `noise` as in the loop; the
    snapshots taken before the action at each step in `snapshot_at`."""
    obs, _ = env.reset(seed=reset_seed)
    if start is not None:
        env.set_sim_state(start.state)
        obs = start.obs.copy()
    observations, actions, rewards, snapshots = [], [], [], []
    for t in range(horizon):
        if t in snapshot_at:
            snapshots.append(BranchStart(env.get_sim_state(), obs.copy(), t))
        action = policy.act(obs, noise.standard_normal(env.action_space.shape[0]))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        obs = next_obs
        if terminated or truncated:
            break
    return Episode(np.array(observations), np.array(actions), np.array(rewards), agent, reset_seed), snapshots


class Round:
    """One measured round: B re-solved from the checkpoint's A; units drawn from `rng`."""

    def __init__(self, world: Checkpointed, repeat: int, seed: int) -> None:
        self.world, learner = world, world.learner
        learner.b_generator.manual_seed(seed * 1000 + repeat)
        n = len(learner.prefs)
        learner.before_reward_update(slice(max(0, n - learner.cfg.reward_batch), n))
        self.metrics = learner.solve_b()
        device = learner.loop.agent.device
        self.a, self.b = ProbePolicy(learner.anchor, device), ProbePolicy(learner.b_actor, device)

    def pairs(self, rng: np.random.Generator, n: int, horizon: int) -> list[tuple[Episode, Episode]]:
        """Paired halves of A and B from the same reset and noise stream (the loop's common random numbers)."""
        out = []
        for _ in range(n):
            seed = int(rng.integers(2**31))
            out.append(self.pair(seed, seed, horizon))
        return out

    def branches(self, rng: np.random.Generator, n: int, horizon: int) -> list[tuple[Episode, Episode]]:
        """n branches from snapshots of one ordinary episode of A (free in a run: A plays it anyway)."""
        length = self.world.learner.loop.ep_len
        seed = int(rng.integers(2**31))
        steps = snapshot_steps(rng, length, horizon, n)
        _, starts = play(self.world.env, self.a, seed, length, np.random.default_rng([seed, 3]), "A",
                         snapshot_at=steps)
        out = []
        for start in starts:
            out.append(self.pair(seed, int(rng.integers(2**31)), horizon, start))
        return out

    def pair(self, reset_seed: int, noise_seed: int, horizon: int, start: BranchStart | None = None
             ) -> tuple[Episode, Episode]:
        """A's half then B's, from the same reset (or snapshot) and the same noise stream."""
        a, b = (play(self.world.env, policy, reset_seed, horizon, np.random.default_rng([noise_seed, 3]), name,
                     start=start)[0] for policy, name in ((self.a, "A"), (self.b, "B")))
        return a, b

    def episodes_of_a(self, rng: np.random.Generator, n: int) -> list[Episode]:
        """n fresh whole episodes of the re-synced A."""
        length = self.world.learner.loop.ep_len
        out = []
        for _ in range(n):
            seed = int(rng.integers(2**31))
            out.append(play(self.world.env, self.a, seed, length, np.random.default_rng([seed, 3]), "A")[0])
        return out


def gradient(learner: BilevelLearner, estimate: Estimate) -> Tensor:
    """The φ-gradient of Σ_m of the estimate's closure, all ensemble parameters in one vector."""
    params = [p for p in learner.ensemble.parameters() if p.requires_grad]
    grads = torch.autograd.grad(estimate.closure(learner.ensemble).sum(), params, allow_unused=True)
    return torch.cat([torch.zeros(p.numel()) if g is None else g.reshape(-1) for g, p in zip(grads, params,
                                                                                            strict=True)]).double()


def cosine(x: Tensor, y: Tensor) -> float:
    denominator = float(x.norm() * y.norm())
    return float(x @ y) / denominator if denominator > 0 else float("nan")


class _Store:
    """Stands in for the learner's episode store while a setting's fresh episodes are measured."""

    def __init__(self, episodes: Sequence[Episode]) -> None:
        self._episodes = list(episodes)

    def recent(self, agent: str, k: int) -> list[Episode]:
        return [e for e in self._episodes if e.agent == agent][-k:]


def estimate(world: Checkpointed, rnd: Round, setting: Setting, rng: np.random.Generator) -> tuple[Estimate, int]:
    """The setting's estimate in this round and the extra env steps a run would spend on it."""
    learner = world.learner
    cfg = dataclasses.replace(world.cfg, estimator=setting.estimator, **dict(setting.values))
    learner.cfg = cfg
    try:
        if setting.estimator == "paired-rollouts":
            fit, steps = rnd.pairs(rng, cfg.paired_episodes, cfg.pair_horizon), None
        elif setting.estimator == "branch":
            fit, steps = rnd.branches(rng, cfg.paired_episodes, cfg.pair_horizon), None
        else:
            fit, steps = [], 0
        if setting.source == "fresh":
            store, learner.store = learner.store, _Store(rnd.episodes_of_a(rng, cfg.lr_episodes))
            try:
                result = ESTIMATORS[setting.estimator](learner, fit)
            finally:
                learner.store = store
        else:
            result = ESTIMATORS[setting.estimator](learner, fit)
        if steps is None:
            steps = sum(len(a) + len(b) for a, b in fit)
        return result, steps
    finally:
        learner.cfg = world.cfg


@dataclass
class Measurement:
    """Rows per setting and repeat, the reference per repeat (SNR, split-half cosine, kl_ab, pairs), the
    checkpoint's step and B's KL budget δ."""

    rows: list[Row]
    references: list[dict[str, float]]
    step: int
    kl_target: float
    run: dict[str, Any] = dataclasses.field(default_factory=dict)  # env, method and seed of the measured run

    def to_json(self) -> str:
        """Everything `table` reads, no path of the machine that measured it."""
        return json.dumps({"run": self.run, "step": self.step, "kl_target": self.kl_target,
                           "references": self.references, "rows": [dataclasses.asdict(r) for r in self.rows]},
                          indent=1)

    @classmethod
    def from_json(cls, text: str) -> Measurement:
        data = json.loads(text)
        return cls([Row(**r) for r in data["rows"]], data["references"], data["step"], data["kl_target"],
                   data.get("run", {}))


def measure(run_dir: Path, settings: Sequence[Setting], repeats: int = 3, reference_pairs: int = 40,
            seed: int = 0, progress=print, kl_target: float = 0.0) -> Measurement:
    """Each setting in `repeats` fresh rounds at the run's checkpoint (module docstring). `kl_target` > 0
    replaces the run's KL budget δ of B's solve (how far B may move from A)."""
    world = load(run_dir, seed)
    if kl_target > 0:
        world.cfg = dataclasses.replace(world.cfg, kl_target=kl_target)
        world.learner.cfg = world.cfg
    for setting in settings:
        check_setting(world.cfg, setting)
    rows, references = [], []
    length = world.learner.loop.ep_len
    for repeat in range(repeats):
        rnd = Round(world, repeat, seed)
        ref_rng = np.random.default_rng([seed, repeat, 1])  # the reference's draws, apart from the settings'
        started = time.time()
        ref_pairs = rnd.pairs(ref_rng, reference_pairs, length)
        world.learner.cfg = dataclasses.replace(world.cfg, estimator="paired-rollouts")
        ref = ESTIMATORS["paired-rollouts"](world.learner, ref_pairs)
        halves = [ESTIMATORS["paired-rollouts"](world.learner, part)
                  for part in (ref_pairs[: reference_pairs // 2], ref_pairs[reference_pairs // 2:])]
        world.learner.cfg = world.cfg
        g_ref = gradient(world.learner, ref)
        split = cosine(gradient(world.learner, halves[0]), gradient(world.learner, halves[1]))
        references.append({"repeat": repeat, "snr": ref.snr, "split_half_cosine": split,
                           "kl_ab": rnd.metrics.get("bilevel/kl_ab", math.nan), "pairs": reference_pairs,
                           "seconds": time.time() - started})
        progress(f"repeat {repeat + 1}/{repeats}: reference of {reference_pairs} whole-episode pairs: SNR "
                 f"{ref.snr:.2f}, split-half cosine {split:.2f}, kl_ab {references[-1]['kl_ab']:.4f}")
        for number, setting in enumerate(settings):
            started = time.time()
            rng = np.random.default_rng([seed, repeat, 2, number])
            result, steps = estimate(world, rnd, setting, rng)
            g = gradient(world.learner, result) if result.closure is not None else None
            row = Row(setting.name, repeat, result.snr, result.units,
                      cosine(g, g_ref) if g is not None else math.nan, steps, time.time() - started,
                      result.metrics.get("bilevel/lr_weight_mean", math.nan))
            rows.append(row)
            progress(f"  {row.setting}: SNR {row.snr:.2f} over {row.units} units, cosine with the reference "
                     f"{row.cosine:.2f}, {row.env_steps} env steps, {row.seconds:.1f} s")
    run = {"env": world.cfg.env, "method": world.cfg.method, "seed": world.cfg.seed}
    return Measurement(rows, references, world.step, world.cfg.kl_target, run)


def table(measured: Measurement) -> str:
    """Markdown: per setting the median SNR, the mean cosine with the reference, env steps per round,
    SNR² per 1000 extra env steps (the signal an env step buys; SNR² grows linearly in the units) and, for
    likelihood-ratio, the mean per-decision weight."""
    rows, references, step, kl_target = measured.rows, measured.references, measured.step, measured.kl_target
    names = list(dict.fromkeys(r.setting for r in rows))
    lines = [f"At the checkpoint of step {step}, {len(references)} repeats (B re-solved each time, KL budget "
             f"δ = {kl_target}). Reference: "
             f"{references[0]['pairs']} whole-episode pairs, SNR "
             f"{np.median([r['snr'] for r in references]):.2f} (median), split-half cosine "
             f"{np.mean([r['split_half_cosine'] for r in references]):.2f} (mean), kl_ab "
             f"{np.mean([r['kl_ab'] for r in references]):.4f}.", "",
             "| setting | units | SNR, median (min – max) | cosine with the reference, mean | extra env steps per "
             "round | SNR² per 1000 extra env steps | mean weight W_t | seconds per round |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        mine = [r for r in rows if r.setting == name]
        snr = np.array([r.snr for r in mine])
        steps = int(np.median([r.env_steps for r in mine]))
        per_step = f"{1000 * np.median(snr) ** 2 / steps:.3g}" if steps else "(none extra)"
        weights = [r.weight_mean for r in mine if not math.isnan(r.weight_mean)]
        weight = f"{np.mean(weights):.2f}" if weights else "–"
        lines.append(f"| `{name}` | {mine[0].units} | {np.median(snr):.2f} ({snr.min():.2f} – {snr.max():.2f}) | "
                     f"{np.nanmean([r.cosine for r in mine]):.2f} | {steps} | {per_step} | {weight} | "
                     f"{np.mean([r.seconds for r in mine]):.1f} |")
    return "\n".join(lines) + "\n"
