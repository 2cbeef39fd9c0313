"""Up-front checks of a TrainConfig, so bad input fails in one clear line before anything is created."""

from __future__ import annotations

import math
import re

from pref_brl.config import CUSTOM_PRESET, PRESETS, TrainConfig, carried_preset


class ConfigError(ValueError):
    """A configuration value is unusable; the message names it and says what to do."""


def validate(cfg: TrainConfig) -> None:
    """Raise ConfigError for the first problem found."""
    from envs import KNOWN_ENVS
    from pref_brl.queries import QUERY_STRATEGIES

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(cfg.env in KNOWN_ENVS, f"unknown env {cfg.env!r}; known: {', '.join(KNOWN_ENVS)}")
    need(cfg.steps > 0, f"--steps must be positive, got {cfg.steps}")
    need(cfg.batch_size > 0 and cfg.hidden_dim > 0 and cfg.hidden_depth >= 1,
         "--batch-size, --hidden-dim must be positive and --hidden-depth >= 1")
    need(cfg.eval_frequency > 0 and cfg.log_frequency > 0 and cfg.checkpoint_frequency > 0,
         "--eval-frequency, --log-frequency and --checkpoint-frequency must be positive")
    need(cfg.num_seed_steps >= 0 and cfg.num_unsup_steps >= 0, "seed and exploration steps must be >= 0")
    need(cfg.replay_capacity >= 0, "--replay-capacity must be >= 0 (0: as many as --steps)")
    need(cfg.video_every >= 0, f"--video-every must be >= 0 (0: no videos), got {cfg.video_every}")
    validate_preset(cfg, need)
    validate_agent(cfg, need)
    if not cfg.uses_preferences:
        return
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
    need(cfg.steps > cfg.feedback_starts,
         f"--steps {cfg.steps} ends before the first feedback round at step {cfg.feedback_starts} "
         "(--num-seed-steps + --num-unsup-steps); raise --steps or shorten those phases")
    need(0 <= cfg.penalty_weight < float("inf"),
         f"--penalty-weight must be a finite number >= 0, got {cfg.penalty_weight}")
    need(cfg.paired_episodes >= 1, f"--paired-episodes must be >= 1, got {cfg.paired_episodes}")
    validate_human(cfg, need)
    if cfg.method == "bilevel":
        validate_bilevel(cfg, need)
    if cfg.method == "mrn":
        validate_mrn(cfg, need)


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
        from pref_brl.datasets import load_preferences

        try:
            data = load_preferences(cfg.preferences)
        except ValueError as exc:
            need(False, f"--preferences: {exc}")
        need(data.obs0.shape[1] == cfg.segment, f"--preferences: the file's segments are {data.obs0.shape[1]} steps "
                                                f"long and --segment is {cfg.segment}; set --segment "
                                                f"{data.obs0.shape[1]}")


def validate_human(cfg: TrainConfig, need) -> None:
    """Labelling by hand: where the page is served, the audit teacher, and what it needs installed."""
    from importlib.util import find_spec

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
    need(find_spec("imageio_ffmpeg") is not None,
         f"--teacher {HUMAN} renders clips with imageio-ffmpeg: install the [human] extra (pip install -e '.[human]')")


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
    from envs import episode_length

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
