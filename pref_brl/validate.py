"""Up-front checks of a TrainConfig, so bad input fails in one clear line before anything is created.

`validate(cfg)` is the one validation pass that the command line, every grid point of a sweep (also under
`--dry-run`) and `pref_brl.train` run before any folder, lock, server or process exists: field types, every
range of every field the method reads (NaN and inf included), the device, the replay buffer's memory, the run
folder's path, files that must parse (a preference file) and, where a run renders, a renderer that opens.
"""

from __future__ import annotations

import functools
import math
import os
import re
import typing

from pref_brl.config import CUSTOM_PRESET, IGNORED_FIELDS, PRESETS, ConfigError, TrainConfig, carried_preset

__all__ = ["ConfigError", "validate"]


MAX_SEED = 4_293_966
"""Largest run seed: its evaluation episodes reset with seed 1,000,003 + 1000 * seed + i, and DeepMind Control
takes seeds below 2**32."""
MAX_THREADS = 1024
MAX_EVAL_EPISODES = 1000
"""Evaluation episodes per evaluation (the reset seeds of seed s and s + 1 are 1,000 apart)."""
MAX_LR = 1
"""Learning rates above this are taken for typos (3e4 for 3e-4), never for a setting."""


def option(name: str) -> str:
    """The command-line spelling of config field `name`."""
    return "--" + name.replace("_", "-")


# (lowest, lowest allowed?, highest, highest allowed?, what it is); checked when the method reads the field
RANGES: dict[str, tuple[float, bool, float, bool, str]] = {
    "seed": (0, True, MAX_SEED, True, "the run seed"),
    "threads": (0, True, MAX_THREADS, True, "0: torch's default"),
    "max_episode_steps": (0, True, math.inf, False, "0: the environment's own episode length"),
    "num_seed_steps": (0, True, math.inf, False, "uniform random steps before learning"),
    "num_unsup_steps": (0, True, math.inf, False, "exploration steps"),
    "num_eval_episodes": (1, True, MAX_EVAL_EPISODES, True, "episodes per evaluation"),
    "target_update_every": (1, True, math.inf, False, "updates between target-critic updates"),
    "lr": (0, False, MAX_LR, True, "the SAC learning rate"),
    "alpha_lr": (0, False, MAX_LR, True, "the temperature's learning rate"),
    "reward_lr": (0, False, MAX_LR, True, "the reward model's learning rate"),
    "init_temperature": (0, False, math.inf, False, "the initial SAC temperature alpha"),
    "discount": (0, True, 1, False, "gamma"),
    "tau": (0, False, 1, True, "the target critic's Polyak coefficient"),
    "reset_update": (0, True, math.inf, False, "SAC updates after the first reward round"),
    "ensemble_size": (1, True, math.inf, False, "reward-model members"),
    "reward_hidden": (1, True, math.inf, False, "reward-model width"),
    "reward_depth": (1, True, math.inf, False, "reward-model hidden layers"),
    "reward_minibatch": (1, True, math.inf, False, "labelled pairs per reward-model step"),
    "query_episodes": (1, True, math.inf, False, "recent episodes query candidates come from"),
    "sobirl_warmup": (0, True, math.inf, False, "feedback rounds before SoBiRL's term"),
    "uncertainty_bonus": (0, True, math.inf, False, "0: no reward-uncertainty bonus"),
    "uncertainty_decay": (0, True, 1, False, "the bonus's decay per env step; 0: none"),
}


def validate(cfg: TrainConfig) -> None:
    """Raise ConfigError for the first problem found (cheap checks first, the renderer probe last)."""
    from pref_brl.envs import KNOWN_ENVS

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    validate_types(cfg, need)
    need(cfg.env in KNOWN_ENVS, f"unknown env {cfg.env!r}; known: {', '.join(KNOWN_ENVS)}")
    validate_preset(cfg, need)
    validate_schedule(cfg, need)
    validate_ranges(cfg, need)
    validate_agent(cfg, need)
    validate_machine(cfg, need)
    validate_run_dir(cfg)
    if cfg.uses_preferences:
        validate_preferences(cfg, need)
    if cfg.video_every > 0:
        validate_rendering(cfg, "--video-every", "imageio_ffmpeg", "the [video] extra", need)


def validate_types(cfg: TrainConfig, need) -> None:
    """Every field holds a value of its declared type (Python callers can pass anything)."""
    import dataclasses

    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        kind, value = hints[f.name], getattr(cfg, f.name)
        if typing.get_origin(kind) is typing.Literal:
            allowed = typing.get_args(kind)
            need(value in allowed and isinstance(value, str),
                 f"{option(f.name)} must be one of {', '.join(allowed)}, got {value!r}")
            continue
        ok = {int: isinstance(value, int) and not isinstance(value, bool),
              float: isinstance(value, int | float) and not isinstance(value, bool),
              bool: isinstance(value, bool), str: isinstance(value, str)}[kind]
        name = {int: "an integer", float: "a number", bool: "True or False", str: "a string"}[kind]
        need(ok, f"{option(f.name)} (TrainConfig.{f.name}) must be {name}, got {value!r} "
                 f"({type(value).__name__})")


def validate_schedule(cfg: TrainConfig, need) -> None:
    """Sizes, periods and lengths that every method reads, and how they fit together."""
    from pref_brl.envs import episode_length

    need(cfg.steps > 0, f"--steps must be positive, got {cfg.steps}")
    need(cfg.batch_size > 0 and cfg.hidden_dim > 0 and cfg.hidden_depth >= 1,
         "--batch-size, --hidden-dim must be positive and --hidden-depth >= 1")
    need(cfg.eval_frequency > 0 and cfg.log_frequency > 0 and cfg.checkpoint_frequency > 0,
         "--eval-frequency, --log-frequency and --checkpoint-frequency must be positive")
    need(cfg.replay_capacity >= 0, "--replay-capacity must be >= 0 (0: as many as --steps)")
    need(cfg.video_every >= 0, f"--video-every must be >= 0 (0: no videos), got {cfg.video_every}")
    need(cfg.batch_size <= cfg.capacity,
         f"--batch-size {cfg.batch_size} is larger than the replay buffer ({cfg.capacity} transitions: "
         "--replay-capacity, or --steps when it is 0); lower --batch-size")
    length = episode_length(cfg.env)
    need(cfg.max_episode_steps <= length,
         f"--max-episode-steps must be in [0, {length}] ({cfg.env}'s own episode length; 0: that length), got "
         f"{cfg.max_episode_steps}")
    need(cfg.num_seed_steps < cfg.steps,
         f"--num-seed-steps {cfg.num_seed_steps} leaves no step to learn in (--steps {cfg.steps}); lower it or "
         "raise --steps")


def validate_ranges(cfg: TrainConfig, need) -> None:
    """Each field of RANGES that the method reads is inside its range (a NaN is inside none)."""
    ignored = IGNORED_FIELDS.get(cfg.method, frozenset())
    for name, (low, low_in, high, high_in, what) in RANGES.items():
        if name in ignored:
            continue
        value = getattr(cfg, name)
        inside = (value >= low if low_in else value > low) and (value <= high if high_in else value < high)
        if inside:
            continue
        if high == math.inf and value == math.inf:
            bound = f"a finite number {'>=' if low_in else '>'} {low}"
        elif high == math.inf:
            bound = f">= {low}" if low_in else "a positive finite number" if low == 0 else f"> {low}"
        else:
            bound = f"in {'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"
        need(False, f"{option(name)} must be {bound} ({what}), got {value}")


def validate_preset(cfg: TrainConfig, need) -> None:
    """A known preset, and not another env family's (or preset's) values under its name."""
    need(cfg.preset in PRESETS or cfg.preset == CUSTOM_PRESET,
         f"unknown preset {cfg.preset!r}; known presets: {', '.join(PRESETS)} (or {CUSTOM_PRESET}: values as given)")
    carried = carried_preset(cfg)
    if carried is not None:
        preset, family, keys = carried
        values = ", ".join(f"{k}={getattr(cfg, k)}" for k in keys[:4]) + (", ..." if len(keys) > 4 else "")
        need(False, f"TrainConfig(env={cfg.env!r}, preset={cfg.preset!r}) carries the {preset} preset's {family} "
                    f"values ({values}), not its own (dataclasses.replace keeps every field): build it with "
                    f"pref_brl.TrainConfig(env={cfg.env!r}, ...) or pref_brl.preset_config({cfg.preset!r}, "
                    f"{cfg.env!r}, ...), or set preset={CUSTOM_PRESET!r} to keep these values")


def validate_agent(cfg: TrainConfig, need) -> None:
    """A Stable-Baselines3 agent runs methods sac and pebble, and needs its package."""
    from importlib.util import find_spec

    if cfg.agent == "sac":
        return
    need(cfg.method in ("sac", "pebble"),
         f"--agent {cfg.agent} runs methods sac and pebble; method {cfg.method} needs our agent (--agent sac)")
    package = "sb3_contrib" if cfg.agent == "sb3-tqc" else "stable_baselines3"
    need(find_spec(package) is not None, f"--agent {cfg.agent} needs the {package.replace('_', '-')} package "
                                         f"(pip install {package.replace('_', '-')})")


def validate_machine(cfg: TrainConfig, need) -> None:
    """A device this torch can use here, with room for the replay buffer."""
    from pref_brl.envs import ENV_SIZES
    from pref_brl.inputs import device_memory, device_problem, format_bytes

    problem = device_problem(cfg.device)
    need(problem is None, str(problem))
    obs_dim, act_dim = ENV_SIZES[cfg.env]
    replay = cfg.capacity * ((2 * obs_dim + act_dim + 2) * 4 + 1)  # float32 s, a, r, s', not_done; uint8 agent
    memory = device_memory(cfg.device)
    need(replay <= memory,
         f"the replay buffer of {cfg.capacity:,} transitions needs {format_bytes(replay)}, more than the "
         f"{format_bytes(memory)} of memory of {cfg.device} here; lower --replay-capacity (or --steps)")


def validate_run_dir(cfg: TrainConfig) -> None:
    """The run folder can be created or resumed here; its problems are RunFolderErrors, the ConfigError of a run
    folder. Whose run it holds (another config, or none) is compared when the run opens it, before it writes."""
    from pref_brl.inputs import folder_problem
    from pref_brl.runs import CONFIG_FILE, RunFolderError, folder_holder, run_dir_of

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise RunFolderError(message)

    run_dir = run_dir_of(cfg)
    problem = folder_problem(run_dir, "--run-dir")
    need(problem is None, f"{problem}{'' if cfg.run_dir else ' (the default run folder; choose one with --run-dir)'}")
    if not (run_dir / CONFIG_FILE).is_file():
        return
    holder = folder_holder(run_dir)
    need(holder is None, f"{run_dir} is in use by another process (pid {holder}); wait for it to end or choose "
                         "another --run-dir")


def validate_preferences(cfg: TrainConfig, need) -> None:
    """What the preference methods read: plugins, queries, the feedback schedule, and each method's settings."""
    from pref_brl.envs import episode_length
    from pref_brl.queries import QUERY_STRATEGIES

    validate_plugins(cfg, need)
    need(cfg.query in QUERY_STRATEGIES,
         f"unknown query strategy {cfg.query!r}; known: {', '.join(QUERY_STRATEGIES)}")
    need(cfg.max_feedback > 0, f"--max-feedback must be positive, got {cfg.max_feedback}")
    need(cfg.reward_batch > 0, f"--reward-batch must be positive, got {cfg.reward_batch}")
    need(cfg.max_feedback >= cfg.reward_batch,
         f"--max-feedback {cfg.max_feedback} is smaller than one round (--reward-batch {cfg.reward_batch}); "
         "raise the budget or lower --reward-batch")
    need(cfg.num_interact > 0 and cfg.reward_update > 0 and cfg.segment > 0,
         "--num-interact, --reward-update and --segment must be positive")
    length = cfg.max_episode_steps or episode_length(cfg.env)
    need(cfg.segment <= length, f"--segment {cfg.segment} is longer than an episode ({length} steps); a segment "
                                "is cut from one episode: lower --segment")
    need(cfg.steps > cfg.feedback_starts,
         f"--steps {cfg.steps} ends before the first feedback round at step {cfg.feedback_starts} "
         "(--num-seed-steps + --num-unsup-steps); raise --steps or shorten those phases")
    need(0 <= cfg.penalty_weight < float("inf"),
         f"--penalty-weight must be a finite number >= 0, got {cfg.penalty_weight}")
    need(cfg.paired_episodes >= 1, f"--paired-episodes must be >= 1, got {cfg.paired_episodes}")
    validate_human(cfg, need)
    need(cfg.uncertainty_decay == 0 or cfg.uncertainty_bonus > 0,
         "--uncertainty-decay decays the reward-uncertainty bonus, which is off (--uncertainty-bonus 0): set both "
         "or neither")
    if cfg.uncertainty_bonus > 0:
        validate_uncertainty_bonus(cfg, need)
    if cfg.method == "bilevel":
        validate_bilevel(cfg, need)
    if cfg.method == "mrn":
        validate_mrn(cfg, need)


def validate_uncertainty_bonus(cfg: TrainConfig, need) -> None:
    """The bonus is the disagreement of PEBBLE's ensemble, added in our agent's updates."""
    from pref_brl.protocols import ENSEMBLE

    need(cfg.reward_model == ENSEMBLE, f"--uncertainty-bonus is the disagreement of PEBBLE's reward ensemble; your "
                                       f"reward model {cfg.reward_model!r} has none: drop one of the two")
    need(cfg.agent == "sac", f"--uncertainty-bonus is added in our agent's updates; --agent {cfg.agent} learns "
                             "from SB3's own buffer: use --agent sac or drop --uncertainty-bonus")
    need(cfg.ensemble_size >= 2, f"--uncertainty-bonus is the disagreement of the reward ensemble's members, and "
                                 f"--ensemble-size {cfg.ensemble_size} has none to disagree: use 2 or more")


def validate_plugins(cfg: TrainConfig, need) -> None:
    """The teacher, the reward model and the preference file, where they are the user's."""
    from pref_brl.protocols import ENSEMBLE, HUMAN, resolve
    from pref_brl.teacher import TEACHER_PRESETS

    if cfg.teacher not in TEACHER_PRESETS and cfg.teacher != HUMAN:
        need(":" in cfg.teacher, f"unknown teacher {cfg.teacher!r}; known: {', '.join(TEACHER_PRESETS)}, "
                                 f"{HUMAN}, or module:function for your own")
        _resolves(resolve, cfg.teacher, "teacher", need)
    if cfg.reward_model != ENSEMBLE:
        need(":" in cfg.reward_model, f"unknown reward model {cfg.reward_model!r}; known: {ENSEMBLE}, or "
                                      "module:factory for your own")
        need(cfg.method == "pebble", f"method {cfg.method} works on the members of PEBBLE's reward ensemble; your "
                                     f"reward model {cfg.reward_model!r} works with method pebble")
        _resolves(resolve, cfg.reward_model, "reward model", need)
    if cfg.preferences:
        validate_preference_file(cfg, need)


def validate_preference_file(cfg: TrainConfig, need) -> None:
    """--preferences: an .npz file that parses as a preference file and fits this env and --segment."""
    from pref_brl.datasets import load_preferences
    from pref_brl.envs import ENV_SIZES
    from pref_brl.inputs import npz_problem

    problem = npz_problem(cfg.preferences, "--preferences")
    need(problem is None, str(problem))
    try:
        data = load_preferences(cfg.preferences)
        data.check_shape(*ENV_SIZES[cfg.env], cfg.segment)
    except ValueError as exc:
        need(False, f"--preferences: {exc}")


def validate_human(cfg: TrainConfig, need) -> None:
    """Labelling by hand: where the page is served, the audit teacher, and what it needs installed."""
    from pref_brl.protocols import HUMAN
    from pref_brl.teacher import TEACHER_PRESETS

    human = cfg.teacher == HUMAN
    need(human or not (cfg.human_async or cfg.audit_teacher),
         f"--human-async and --audit-teacher go with --teacher {HUMAN} (the teacher is {cfg.teacher!r})")
    if not human:
        return
    need(0 <= cfg.label_port <= 65535, f"--label-port must be in [0, 65535] (0: any free port), got {cfg.label_port}")
    need(_HOST.fullmatch(cfg.label_host) is not None,
         f"--label-host {cfg.label_host!r} is not an address or host name (127.0.0.1: this machine; 0.0.0.0: every "
         "network)")
    need(cfg.audit_teacher in ("", *TEACHER_PRESETS),
         f"unknown audit teacher {cfg.audit_teacher!r}; known: {', '.join(TEACHER_PRESETS)} (empty: none)")
    need(cfg.agent == "sac", f"--teacher {HUMAN} runs with our agent (--agent sac), not {cfg.agent}")
    problem = _serving_problem(cfg.label_host, cfg.label_port)
    need(problem is None, f"cannot serve the labelling page on {cfg.label_host}:{cfg.label_port} ({problem}); "
                          "choose another --label-port (0: any free port) or --label-host")
    validate_rendering(cfg, f"--teacher {HUMAN}", "imageio_ffmpeg", "the [human] extra", need)


def validate_rendering(cfg: TrainConfig, purpose: str, module: str, extra: str, need) -> None:
    """The encoder is installed and MuJoCo renders this env here (tried once per env in a child process)."""
    from importlib.util import find_spec

    need(find_spec(module) is not None, f"{purpose} encodes video with {module.replace('_', '-')}: install "
                                        f"{extra} (pip install -e '.[{extra.split('[')[1].split(']')[0]}]')")
    problem = _renderer_problem(cfg.env, cfg.goal_mode, purpose, os.environ.get("MUJOCO_GL", ""))
    need(problem is None, str(problem))


@functools.lru_cache(maxsize=None)
def _renderer_problem(env: str, goal_mode: str, purpose: str, backend: str) -> str | None:
    """inputs.renderer_problem, once per (env, goal mode, purpose, MUJOCO_GL) in a process."""
    from pref_brl.inputs import renderer_problem

    return renderer_problem(env, goal_mode, purpose)


def _serving_problem(host: str, port: int) -> str | None:
    """Why the labelling page could not listen on host:port (bound and released at once), or None."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
            sock.bind(infos[0][4])
    except OSError as exc:
        return str(exc.strerror or exc)
    return None


_HOST = re.compile(r"[A-Za-z0-9_.:-]{1,253}")


def _resolves(resolve, spec: str, what: str, need) -> None:
    try:
        resolve(spec, what)
    except ValueError as exc:
        need(False, str(exc))


def validate_mrn(cfg: TrainConfig, need) -> None:
    """The meta-step's period, outer weight and inner step size."""
    need(cfg.meta_every >= 1, f"--meta-every must be >= 1 (env steps between meta-steps), got {cfg.meta_every}")
    need(math.isfinite(cfg.outer_weight) and cfg.outer_weight >= 0,
         f"--outer-weight must be a finite number >= 0 (0: train like pebble), got {cfg.outer_weight}")
    need(math.isfinite(cfg.meta_lr) and cfg.meta_lr > 0,
         f"--meta-lr must be a positive finite number (the inner SGD step size), got {cfg.meta_lr}")


def validate_bilevel(cfg: TrainConfig, need) -> None:
    """The settings of agent B and the penalty update."""
    from pref_brl.envs import episode_length

    need(cfg.b_updates >= 0, f"--b-updates must be >= 0, got {cfg.b_updates}")
    need(0 < cfg.kl_target < float("inf"), f"--kl-target must be a positive number, got {cfg.kl_target}")
    need(0 < cfg.psi_clip < 1, f"--psi-clip must be in (0, 1), got {cfg.psi_clip}")
    need(cfg.penalty_steps >= 1, f"--penalty-steps must be >= 1, got {cfg.penalty_steps}")
    need(0 <= cfg.snr_min < float("inf"),
         f"--snr-min must be a finite number >= 0 (0: never skip; --no-penalty: always), got {cfg.snr_min}")
    need(0 <= cfg.heldout_pairs < cfg.paired_episodes,
         f"--heldout-pairs must be in [0, --paired-episodes), got {cfg.heldout_pairs} of {cfg.paired_episodes}")
    length = cfg.max_episode_steps or episode_length(cfg.env)
    need(1 <= cfg.pair_horizon <= length,
         f"--pair-horizon must be in [1, {length}] (the episode length), got {cfg.pair_horizon}")
    need(cfg.lr_episodes >= 1, f"--lr-episodes must be >= 1, got {cfg.lr_episodes}")
    need(cfg.lr_window >= 0, f"--lr-window must be >= 0 (0: the whole episode), got {cfg.lr_window}")
    need(cfg.lr_clip == 0 or 1 <= cfg.lr_clip < float("inf"),
         f"--lr-clip must be 0 (no cap) or a finite number >= 1, got {cfg.lr_clip}")
    if cfg.snr_min > 0:  # a round with an SNR of NaN would skip the λ-term every time, silently
        need(cfg.estimator != "shared-states",
             f"--snr-min {cfg.snr_min} needs an estimator with independent units; --estimator shared-states has "
             "no SNR (use --snr-min 0, or another --estimator)")
        units, what = ((cfg.lr_episodes, "--lr-episodes") if cfg.estimator == "likelihood-ratio" else
                       (cfg.paired_episodes - cfg.heldout_pairs, "--paired-episodes minus --heldout-pairs"))
        need(units >= 2, f"--snr-min {cfg.snr_min} needs at least 2 units for an SNR, but {what} gives {units}")
    if cfg.estimator == "branch":
        need(cfg.pair_horizon + cfg.paired_episodes <= length,
             f"--estimator branch starts its {cfg.paired_episodes} branches at distinct steps t < episode length "
             f"{length} - --pair-horizon {cfg.pair_horizon}: lower --pair-horizon or --paired-episodes")
    if cfg.estimator in ("paired-rollouts", "branch"):
        block = 2 * cfg.paired_episodes * cfg.pair_horizon
        need(block + length <= cfg.num_interact,
             f"the paired rollouts of a round (2 x --paired-episodes {cfg.paired_episodes} x --pair-horizon "
             f"{cfg.pair_horizon} = {block} steps, after the running episode of up to {length}) do not fit "
             f"between two feedback rounds (--num-interact {cfg.num_interact}); lower one of them")
