"""Run configuration: one frozen dataclass (the single source of truth) and named presets.

Every field's docstring becomes `pref-brl-train --help` text. Presets are plain data: a preset name and an
environment family map to field overrides, printable with `pref-brl-train --print-presets`.

`TrainConfig(env=..., **fields)` takes every preset field you do not pass from the preset its `preset` names
(cpu by default) for that env's family, so a door-open config never silently gets walker's numbers; a config
that still carries another family's values (`dataclasses.replace` of a walker config) fails validation.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pref_brl.agents.sac import SACConfig


class ConfigError(ValueError):
    """A configuration value is unusable; the message names it and says what to do."""


Method = Literal["sac", "pebble", "bilevel", "sobirl", "mrn"]
Agent = Literal["sac", "sb3-sac", "sb3-td3", "sb3-tqc"]
Estimator = Literal["paired-rollouts", "branch", "shared-states", "likelihood-ratio"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run."""

    env: str = "walker_walk"
    """environment: walker_walk, cheetah_run, quadruped_walk (DeepMind Control); metaworld_door-open-v3,
    metaworld_button-press-v3, metaworld_sweep-into-v3, metaworld_drawer-open-v3, metaworld_window-open-v3
    (Meta-World)"""
    method: Method = "sac"
    """sac: true reward (upper bound); pebble: PEBBLE; bilevel: PEBBLE with the bilevel penalty reward
    update; sobirl: PEBBLE with SoBiRL's model-free hypergradient term; mrn: PEBBLE with Meta-Reward-Net's
    meta-steps (docs/mrn.md)"""
    preset: str = "cpu"
    """named preset the defaults came from (cpu or paper; see --print-presets); in Python also custom,
    a config built field by field whose values are never checked against a preset (docs/library.md)"""
    agent: Agent = "sac"
    """the learning agent: sac (ours), or Stable-Baselines3's SAC, TD3 or TQC (sb3-tqc needs sb3-contrib)
    with PEBBLE around it; methods sac and pebble (docs/library.md)"""
    seed: int = 0
    """run seed; every random component derives its own generator from it"""
    device: str = "cpu"
    """torch device (cpu, cuda, cuda:1, ...)"""
    run_dir: str = ""
    """run folder; empty means runs/<env>/<method>/seed<seed>. Re-running on a folder resumes it"""
    threads: int = 0
    """torch CPU threads (0: torch's default)"""
    compile: bool = True
    """run each SAC update as one compiled graph (about 2x faster on CPU once compiled; the first update
    of each network shape compiles, seconds with a warm cache, up to a minute cold). --no-compile: plain path"""
    max_episode_steps: int = 0
    """episode length override (0: the environment's own, 1000 DMC / 500 Meta-World); for quick tests"""
    goal_mode: Literal["fresh", "preset"] = "fresh"
    """Meta-World goals: fresh random goal every reset (B-Pref) or one of 50 preset goals (MT1)"""

    # --- schedule
    steps: int = 100_000
    """total environment steps (all agents together)"""
    num_seed_steps: int = 1000
    """uniform random actions before learning starts"""
    num_unsup_steps: int = 9000
    """unsupervised state-entropy pre-training steps (preference methods only)"""
    eval_frequency: int = 10_000
    """evaluate every this many env steps"""
    num_eval_episodes: int = 10
    """deterministic evaluation episodes per evaluation"""
    video_every: int = 0
    """record one evaluation episode to <run_dir>/videos/*.mp4 every this many evaluations, and the last one
    (0: off); needs the [video] extra and headless MuJoCo rendering (MUJOCO_GL=egl on a GPU, osmesa on a CPU)"""
    checkpoint_frequency: int = 10_000
    """write a checkpoint every this many env steps (and at the end)"""
    log_frequency: int = 1000
    """log training scalars every this many env steps"""
    replay_capacity: int = 0
    """replay buffer capacity (0: equal to steps)"""

    # --- SAC
    hidden_dim: int = 256
    """SAC hidden width"""
    hidden_depth: int = 2
    """SAC hidden layers"""
    batch_size: int = 256
    """SAC minibatch"""
    lr: float = 5e-4
    """SAC actor and critic learning rate"""
    alpha_lr: float = 1e-4
    """temperature learning rate"""
    init_temperature: float = 0.1
    """initial α"""
    discount: float = 0.99
    """γ"""
    tau: float = 0.005
    """target critic Polyak coefficient"""
    target_update_every: int = 2
    """target critic update period (updates)"""

    # --- preference learning (PEBBLE)
    max_feedback: int = 100
    """label budget (total queries; skipped ones count)"""
    reward_batch: int = 10
    """queries per feedback round"""
    num_interact: int = 8000
    """env steps between feedback rounds"""
    reward_update: int = 50
    """max reward-model epochs per round (early stop at 97% training accuracy)"""
    segment: int = 50
    """segment length H"""
    teacher: str = "oracle"
    """who labels: a scripted teacher preset (oracle, mistake, noisy, skip, myopic, equal), human (you, on a
    web page the run serves; docs/human.md), or module:function for your own teacher (docs/library.md)"""
    label_host: str = "127.0.0.1"
    """--teacher human: the address the labelling page is served on (127.0.0.1: this machine only; 0.0.0.0
    opens it to every network this machine is on, on purpose)"""
    label_port: int = 0
    """--teacher human: the labelling page's port (0: any free port)"""
    human_async: bool = False
    """--teacher human: keep training on the current reward while labels come in and take them at the next
    round (default: each round waits until all its queries are labelled)"""
    audit_teacher: str = ""
    """--teacher human: a scripted teacher preset (e.g. oracle) whose label of each human-labelled query is
    recorded next to it, logged as feedback/human_oracle_agreement (empty: none)"""
    query: str = "disagreement"
    """query strategy: uniform, disagreement, entropy, kcenter, kcenter_disagreement, kcenter_entropy"""
    reset_update: int = 100
    """SAC updates on the relabelled buffer right after the first reward round"""
    ensemble_size: int = 3
    """reward-model ensemble members"""
    reward_lr: float = 3e-4
    """reward-model Adam learning rate"""
    reward_hidden: int = 256
    """reward-model hidden width"""
    reward_depth: int = 3
    """reward-model hidden layers"""
    reward_minibatch: int = 128
    """labelled pairs per reward-model step"""
    query_episodes: int = 100
    """query candidates come from this many most recent complete episodes"""
    reward_model: str = "ensemble"
    """the learned reward: ensemble (PEBBLE's), or module:factory for your own, built as
    factory(obs_dim, act_dim, config); method pebble only (docs/library.md)"""
    preferences: str = ""
    """seed the run's labelled pairs from this preference file (.npz, from pref_brl.export_preferences);
    they do not count against --max-feedback (docs/library.md)"""
    uncertainty_bonus: float = 0.0
    """β₀ of reward-uncertainty exploration (Liang, Shu, Lee, Abbeel, RUNE): after the first feedback round,
    agent A's SAC updates learn from r̂ + β_t·σ̂, σ̂(s, a) the reward ensemble members' std, β_t = β₀·(1 − ρ)^t at
    env step t (0: off; PEBBLE's ensemble and our agent; docs/pebble.md)"""
    uncertainty_decay: float = 0.0
    """ρ of --uncertainty-bonus, the bonus's decay per env step: β_t = β₀·(1 − ρ)^t (0: no decay)"""

    # --- bilevel (agent B: a per-round, KL-budgeted perturbation of A; docs/bilevel.md)
    penalty_weight: float = 1.0
    """λ̃ (λ = (1−γ)·λ̃; B's upper-loss weight κ = 1/λ̃); 0 makes bilevel train exactly like pebble"""
    b_updates: int = 1000
    """K_B: actor updates of agent B per feedback round (B starts from A, uses A's critic and α)"""
    kl_target: float = 0.02
    """δ: mean KL(π_B ‖ π_A) per state (nats) that B's adaptive KL coefficient β aims for"""
    psi_clip: float = 0.2
    """ε of Ψ_f's two-sided clipped probability ratio (PPO's surrogate) against π_A"""
    upper_term: bool = True
    """κ Ψ_f in B's loss; --no-upper-term is the κ = 0 control (B moves on the SAC loss and the KL only)"""
    penalty: bool = True
    """the λ-term in the reward update; --no-penalty is the control with B on and the penalty off"""
    paired_episodes: int = 10
    """E: paired A/B rollouts (common random numbers) per feedback round"""
    pair_horizon: int = 200
    """T_pair: steps of each half of a paired rollout (γ^t leaves 13% of the discounted weight after 200)"""
    heldout_pairs: int = 2
    """pairs of the E kept out of the reward update, for bilevel/gap_before and bilevel/gap_after"""
    penalty_steps: int = 20
    """reward-model steps on cross-entropy + λ-term per round, after PEBBLE's cross-entropy epochs"""
    snr_min: float = 0.0
    """skip the λ-term in a round whose bilevel/penalty_snr is below this (0: never skip)"""
    estimator: Estimator = "paired-rollouts"
    """penalty estimator: paired-rollouts (truncated A/B pairs), branch (the pairs start from simulator
    snapshots of A's last episode; simulation only), shared-states (cheaper, biased) or likelihood-ratio
    (A's own recent episodes reweighted by π_B/π_A; no extra env steps; docs/bilevel.md)"""
    lr_episodes: int = 10
    """likelihood-ratio: A's most recent complete episodes that the estimate reweights"""
    lr_window: int = 100
    """likelihood-ratio: decisions in each per-decision weight's product (0: all since the episode's start;
    100 = 1/(1 − γ) at γ = 0.99)"""
    lr_clip: float = 0.0
    """likelihood-ratio: cap c >= 1 on each ratio π_B/π_A (0: no cap)"""
    query_agent: Literal["A", "B", "both"] = "A"
    """whose recent episodes query candidates are drawn from (bilevel)"""
    b_in_replay: bool = True
    """store B's transitions in the shared replay (--no-b-in-replay: the control that keeps them out)"""
    sobirl_warmup: int = 1
    """sobirl: feedback rounds before its hypergradient term is switched on"""

    # --- Meta-Reward-Net (docs/mrn.md)
    meta_every: int = 400
    """mrn: env steps between meta-steps, taken while labels remain (presets: 400/1,000 walker, 5,000/10,000
    door-open for cpu/paper; the official code: 1,000 and 10,000)"""
    outer_weight: float = 0.1
    """mrn: weight of the preference loss of the one-step-updated critic; 0 makes mrn train exactly like pebble"""
    meta_lr: float = 5e-4
    """mrn: step size of the differentiable inner SGD step on the critic (the official code: the critic's lr)"""

    def sac_config(self) -> SACConfig:
        return SACConfig(hidden_dim=self.hidden_dim, hidden_depth=self.hidden_depth, actor_lr=self.lr,
                         critic_lr=self.lr, alpha_lr=self.alpha_lr, init_temperature=self.init_temperature,
                         discount=self.discount, tau=self.tau, target_update_every=self.target_update_every,
                         compile=self.compile)

    @property
    def uses_preferences(self) -> bool:
        return self.method != "sac"

    @property
    def learning_starts(self) -> int:
        """First step at which SAC updates run."""
        return self.num_seed_steps

    @property
    def feedback_starts(self) -> int:
        """Step of the first feedback round (end of unsupervised exploration)."""
        return self.num_seed_steps + (self.num_unsup_steps if self.uses_preferences else 0)

    @property
    def capacity(self) -> int:
        return self.replay_capacity or self.steps

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string right below it in the class body, as `--help` shows it), read from the
    source; {} when the source is not available."""
    import ast
    import inspect
    import textwrap

    try:
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body  # type: ignore[attr-defined]
    except (OSError, TypeError):
        return {}
    docs = {}
    for node, following in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant) and isinstance(following.value.value, str)):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _document_fields(cls: type) -> None:
    """Append every field (type, default, its `--help` text) to the class docstring, so help(cls) lists them."""
    docs = field_docs(cls)
    if not docs:
        return
    lines = [f"    {f.name} ({getattr(f.type, '__name__', f.type)} = {f.default!r}): {docs.get(f.name, '')}"
             for f in dataclasses.fields(cls)]
    cls.__doc__ = f"{cls.__doc__}\n\nFields (the text of `pref-brl-train --help`):\n\n" + "\n".join(lines)


_document_fields(TrainConfig)


PREFERENCE_FIELDS: frozenset[str] = frozenset({
    "num_unsup_steps", "max_feedback", "reward_batch", "num_interact", "reward_update", "segment", "teacher",
    "query", "reset_update", "ensemble_size", "reward_lr", "reward_hidden", "reward_depth", "reward_minibatch",
    "query_episodes", "sobirl_warmup", "reward_model", "preferences", "human_async", "audit_teacher",
    "uncertainty_bonus", "uncertainty_decay"})
SERVING_FIELDS = frozenset({"label_host", "label_port"})
"""Where the labelling page is served: never part of what a run is (a resumed run may serve elsewhere)."""
BILEVEL_FIELDS = frozenset({
    "penalty_weight", "b_updates", "kl_target", "psi_clip", "upper_term", "penalty", "paired_episodes",
    "pair_horizon", "heldout_pairs", "penalty_steps", "snr_min", "estimator", "query_agent", "b_in_replay",
    "lr_episodes", "lr_window", "lr_clip"})
"""Config fields that only method `bilevel` reads."""
MRN_FIELDS = frozenset({"meta_every", "outer_weight", "meta_lr"})
"""Config fields that only method `mrn` reads."""
PREFERENCE_FIELDS = PREFERENCE_FIELDS | BILEVEL_FIELDS | MRN_FIELDS
"""Config fields that only methods learning from preferences read."""
IGNORED_FIELDS: dict[str, frozenset[str]] = {
    "sac": PREFERENCE_FIELDS | SERVING_FIELDS,
    "pebble": BILEVEL_FIELDS | {"sobirl_warmup"} | MRN_FIELDS | SERVING_FIELDS,
    "bilevel": frozenset({"sobirl_warmup"}) | MRN_FIELDS | SERVING_FIELDS,
    "sobirl": BILEVEL_FIELDS | MRN_FIELDS | SERVING_FIELDS,
    "mrn": BILEVEL_FIELDS | {"sobirl_warmup"} | SERVING_FIELDS,
}
"""Fields a method does not read: overrides of them do not split its runs, and plots do not show them."""


def _family(env: str) -> str:
    return "metaworld" if env.startswith("metaworld_") else "dmc"


# Overrides of the TrainConfig defaults per (preset, environment family). The CPU presets keep the paper's
# label budgets and compress the feedback schedule into a shorter run with 2x256 (or 3x256) networks.
# mrn: meta_every keeps the official meta-steps per feedback interval (walker 20000/1000, door-open
# 5000/10000) on the compressed schedule; meta_lr is the family's critic lr, as in the official code.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {
        "dmc": dict(steps=100_000, hidden_dim=256, hidden_depth=2, batch_size=256, lr=5e-4,
                    max_feedback=100, reward_batch=10, num_interact=8000, reward_update=50,
                    meta_every=400, meta_lr=5e-4),
        "metaworld": dict(steps=150_000, hidden_dim=256, hidden_depth=3, batch_size=256, lr=3e-4,
                          max_feedback=1000, reward_batch=25, num_interact=2500, reward_update=10,
                          paired_episodes=4, pair_horizon=150, meta_every=5000, meta_lr=3e-4),
    },
    "paper": {
        "dmc": dict(steps=500_000, hidden_dim=1024, hidden_depth=2, batch_size=1024, lr=5e-4,
                    max_feedback=100, reward_batch=10, num_interact=20_000, reward_update=50,
                    checkpoint_frequency=20_000, meta_every=1000, meta_lr=5e-4),
        "metaworld": dict(steps=1_000_000, hidden_dim=256, hidden_depth=3, batch_size=512, lr=3e-4,
                          max_feedback=1000, reward_batch=10, num_interact=5000, reward_update=10,
                          paired_episodes=6, pair_horizon=200, checkpoint_frequency=20_000,
                          meta_every=10_000, meta_lr=3e-4),
    },
}


def _fill_from_preset(init: Callable[..., None]) -> Callable[..., None]:
    """TrainConfig's __init__, then: fields the caller did not pass take the values of the preset that `preset`
    names for the env's family (a `custom` or unknown preset: the dataclass defaults). `dataclasses.replace`,
    the command line and `config.json` pass every field, so they are kept as they are."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]

    @functools.wraps(init)
    def __init__(self: TrainConfig, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        given = set(names[: len(args)]) | set(kwargs)
        for key, value in PRESETS.get(self.preset, {}).get(_family(self.env), {}).items():
            if key not in given:
                object.__setattr__(self, key, value)

    return __init__


TrainConfig.__init__ = _fill_from_preset(TrainConfig.__init__)  # type: ignore[method-assign]


def preset_config(preset: str, env: str, **overrides: Any) -> TrainConfig:
    """The TrainConfig of a named preset for `env`, with explicit overrides applied last."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    fields = {"env": env, "preset": preset, **PRESETS[preset][_family(env)], **overrides}
    return TrainConfig(**fields)


CUSTOM_PRESET = "custom"
"""The `preset` of a config built field by field, whose values follow no preset (never checked against one)."""


def _preset_values(preset: str, family: str) -> dict[str, Any]:
    """Every field any preset sets, as the (preset, family) pair sets it (a field it leaves: the default)."""
    names = {k for families in PRESETS.values() for values in families.values() for k in values}
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name in names}
    return {**defaults, **PRESETS[preset][family]}


def carried_preset(cfg: TrainConfig) -> tuple[str, str, list[str]] | None:
    """(preset, family, fields) when `cfg` carries another (preset, family)'s values instead of its own.

    A config carries another pair's values when, on every field where the two pairs differ, it holds the
    other pair's value: `dataclasses.replace(walker_config, env="metaworld_door-open-v3")` keeps walker's cpu
    numbers. A config that sets any of those fields otherwise is taken as meant; `preset="custom"` is never
    checked.
    """
    if cfg.preset not in PRESETS:
        return None
    own = _preset_values(cfg.preset, _family(cfg.env))
    for preset, families in PRESETS.items():
        for family in families:
            other = _preset_values(preset, family)
            differing = sorted(k for k in own if own[k] != other[k])
            if differing and all(getattr(cfg, k) == other[k] for k in differing):
                return preset, family, differing
    return None


def describe_presets() -> str:
    """Human-readable table of every preset."""
    lines = []
    for name, families in PRESETS.items():
        for family, values in families.items():
            body = ", ".join(f"{k}={v}" for k, v in values.items())
            lines.append(f"{name:6s} {family:9s} {body}")
    return "\n".join(lines)
