"""Label-budget studies as data: a grid expands to runs with stable, readable folder names.

A study folder holds one run folder per grid point:

    <root>/<study>/<env>/<method>[+<key>=<value>...]/budget<B>/<teacher>/seed<S>

Methods that learn from the true reward (`sac`) use no labels, so the budget and teacher axes collapse for
them: `<root>/<study>/<env>/sac/seed<S>`. An override given with several values (`--set segment=25,50`) is
one more grid axis and its value is appended to the method part of the name (only for methods that read the
field: `penalty_weight` splits `bilevel` runs, not `pebble` ones); single-valued overrides are study-wide
settings and do not appear in names (changing one later is refused on the existing folders).

A method can also be given as a variant, `<method>+<key>=<value>[+<key>=<value>...]`, e.g.
`bilevel+penalty=false` (the control with B on and the λ-term off): those fields are set for that method
alone, and the variant is its own folder, `<env>/bilevel+penalty=false/budget<B>/<teacher>/seed<S>`, beside
the plain `bilevel` runs of the same study.

The same folder names make TensorBoard show one run per (env, method, budget, teacher, seed), grouped by
path, when it is pointed at the study folder.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pref_brl.config import IGNORED_FIELDS, PRESETS, TrainConfig, preset_config
from pref_brl.runs import (
    CONFIG_FILE,
    DONE_FILE,
    NOT_RUN_STATE,
    RunFolderError,
    changed_fields,
    check_continuation,
    config_differences,
    is_finished,
    read_config,
)

RunState = Literal["new", "partial", "done"]

AXIS_FIELDS = ("env", "method", "max_feedback", "teacher", "seed", "preset")
"""Config fields set by the grid's own axes (not through --set)."""
OWNED_FIELDS = AXIS_FIELDS + ("run_dir",)


class StudyError(ValueError):
    """The study cannot be expanded or started as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Grid:
    """A label-budget study: the cartesian product of its axes, plus config overrides."""

    name: str
    root: str
    preset: str
    envs: tuple[str, ...]
    methods: tuple[str, ...]
    budgets: tuple[int, ...]
    """label budgets (max_feedback); empty: the preset's budget for each env"""
    teachers: tuple[str, ...]
    seeds: tuple[int, ...]
    overrides: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    """(field, values) pairs; a field with several values is a grid axis"""

    @property
    def folder(self) -> Path:
        return Path(self.root) / self.name


@dataclass(frozen=True)
class Run:
    """One grid point: its folder name inside the study folder and its full config."""

    label: str
    config: TrainConfig

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run_dir)


# ------------------------------------------------------------------------------------------ overrides
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def coerce(key: str, value: Any) -> Any:
    """`value` (a string from the command line, or a TOML value) as the type of TrainConfig field `key`."""
    types = _field_types()
    if key not in types:
        raise StudyError(f"unknown config field {key!r} in an override; see pref-brl-train --help for the fields")
    kind = types[key]
    try:
        if typing.get_origin(kind) is Literal:
            allowed = typing.get_args(kind)
            if value not in allowed:
                raise ValueError(f"must be one of {', '.join(map(str, allowed))}")
            return value
        if kind is bool:
            if isinstance(value, str):
                text = value.strip().lower()
                if text not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError("must be true or false")
                return text in ("true", "1", "yes")
            return bool(value)
        if kind is int:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, bool) or float(number) != int(number):
                raise ValueError("must be an integer")
            return int(number)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise StudyError(f"bad value {value!r} for {key}: {exc}") from None


def parse_override(text: str) -> tuple[str, tuple[Any, ...]]:
    """`key=value` or `key=v1,v2,...` (several values make the field a grid axis)."""
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key or not raw.strip():
        raise StudyError(f"override {text!r} is not key=value (e.g. --set steps=20000 or --set segment=25,50)")
    return key, tuple(coerce(key, v.strip()) for v in raw.split(","))


def normalise_overrides(items: dict[str, Any]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """TOML-style {field: value or [values]} as checked (field, values) pairs."""
    out = []
    for key, raw in items.items():
        key = key.replace("-", "_")
        if key in OWNED_FIELDS:
            axis = {"env": "envs", "method": "methods", "max_feedback": "budgets", "teacher": "teachers",
                    "seed": "seeds", "preset": "preset", "run_dir": "root and name"}[key]
            raise StudyError(f"{key} is set by the study itself; use --{axis.replace('_', '-')} instead of --set")
        values = raw if isinstance(raw, list | tuple) else [raw]
        if not values:
            raise StudyError(f"override {key} has no values")
        out.append((key, tuple(coerce(key, v) for v in values)))
    return tuple(out)


# ------------------------------------------------------------------------------------------ expansion
def value_text(value: Any) -> str:
    """A setting's value as a folder or group name shows it (booleans lower-case, as on the command line)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """`bilevel+penalty=false+b_in_replay=false` as ("bilevel", {"penalty": False, "b_in_replay": False}).

    Each field must be one the method reads, set once, and not one the grid's own axes set.
    """
    base, *parts = spec.split("+")
    _check_methods((base,))
    variant: dict[str, Any] = {}
    for part in parts:
        key, sep, raw = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not raw.strip():
            raise StudyError(f"method variant {spec!r}: {part!r} is not key=value (e.g. bilevel+penalty=false)")
        if key in OWNED_FIELDS:
            raise StudyError(f"method variant {spec!r}: {key} is set by the study's own axes, not by a variant")
        if key in variant:
            raise StudyError(f"method variant {spec!r} sets {key} twice")
        if key in IGNORED_FIELDS.get(base, frozenset()):
            raise StudyError(f"method variant {spec!r}: method {base} does not read {key}, so the variant would "
                             f"train exactly like {base}")
        variant[key] = coerce(key, raw.strip())
    return base, variant


def run_label(cfg: TrainConfig, axis_overrides: dict[str, Any]) -> str:
    """The run's folder name inside the study folder (see the module docstring)."""
    method = cfg.method + "".join(f"+{k}={value_text(v)}" for k, v in axis_overrides.items())
    if not cfg.uses_preferences:
        return f"{cfg.env}/{method}/seed{cfg.seed}"
    return f"{cfg.env}/{method}/budget{cfg.max_feedback}/{cfg.teacher}/seed{cfg.seed}"


def expand(grid: Grid) -> list[Run]:
    """Every run of the grid, seed-major (all first seeds come first), without duplicates.

    Each job uses one torch thread unless `threads` is overridden.
    """
    axes = {"envs": grid.envs, "methods": grid.methods, "teachers": grid.teachers, "seeds": grid.seeds}
    empty = [name for name, values in axes.items() if not values]
    if empty:
        raise StudyError(f"empty grid: no values for {', '.join('--' + n for n in empty)}")
    if grid.preset not in PRESETS:
        raise StudyError(f"unknown preset {grid.preset!r}; known presets: {', '.join(PRESETS)}")
    methods = {spec: parse_method(spec) for spec in grid.methods}
    fixed = {k: v[0] for k, v in grid.overrides if len(v) == 1}
    fixed.setdefault("threads", 1)
    swept = [(k, v) for k, v in grid.overrides if len(v) > 1]
    for spec, (_, variant) in methods.items():
        both = sorted(set(variant) & {k for k, _ in swept})
        if both:
            raise StudyError(f"method variant {spec!r} sets {both[0]}, which --set also sweeps; drop one of them")
    runs: dict[str, Run] = {}
    for seed, env, budget, teacher, spec, *values in itertools.product(
            grid.seeds, grid.envs, grid.budgets or (None,), grid.teachers, grid.methods, *(v for _, v in swept)):
        method, variant = methods[spec]
        ignored = IGNORED_FIELDS.get(method, frozenset())
        axis = {k: v for k, v in zip((k for k, _ in swept), values) if k not in ignored}
        point = dict(fixed, teacher=teacher, **({} if budget is None else {"max_feedback": budget}))
        point = {k: v for k, v in point.items() if k not in ignored and k not in axis and k not in variant}
        cfg = preset_config(grid.preset, env, method=method, seed=seed, **point, **variant, **axis)
        label = run_label(cfg, {**variant, **axis})
        if label not in runs:
            runs[label] = Run(label, dataclasses.replace(cfg, run_dir=str(grid.folder / label)))
    return list(runs.values())


def _check_methods(methods: tuple[str, ...]) -> None:
    known = typing.get_args(_field_types()["method"])
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise StudyError(f"unknown method {unknown[0]!r}; known: {', '.join(known)}")


# ------------------------------------------------------------------------------------------ folder state
def run_state(run: Run) -> RunState:
    """done (done.json at the run's steps), partial (a run folder without done.json, or one finished short of a
    larger `steps` it is continued to: re-running resumes it) or new."""
    if is_finished(run.run_dir, run.config.steps):
        return "done"
    return "partial" if (run.run_dir / CONFIG_FILE).exists() else "new"


def check_runs(grid: Grid, runs: list[Run], extend: bool = False, running_ok: bool = False) -> None:
    """Everything that can be checked before any folder is created: the study folder, unattended teachers, each
    run's folder and config (validated as pref-brl-train would). `extend`: a run folder whose config differs
    only by a smaller `steps` is continued to the grid's (see :func:`runs_to_extend`). `running_ok` (a dry
    run, which only looks): a run that another process is training is no error (its config is still compared)."""
    from pref_brl.protocols import HUMAN
    from pref_brl.runs import folder_holder
    from pref_brl.validate import ConfigError, validate

    _check_writable(grid.folder)
    if HUMAN in grid.teachers:
        raise StudyError(f"--teachers {HUMAN}: a sweep runs unattended, and each run taught by hand waits for a "
                         f"person at its own labelling page; train such a run with pref-brl-train --teacher {HUMAN}")
    for run in runs:
        _check_folder(run, extend)
        if running_ok and folder_holder(run.run_dir) is not None:
            continue  # validated when it started, with the config just compared
        try:
            validate(run.config)
        except ConfigError as exc:
            raise StudyError(f"{run.label}: {exc}") from None


def _check_folder(run: Run, extend: bool = False) -> None:
    path = run.run_dir
    if path.exists() and not path.is_dir():
        raise StudyError(f"{path} exists and is not a folder; remove it or choose another --root/--name")
    config_path = path / CONFIG_FILE
    if config_path.exists():
        try:
            old = read_config(config_path)
            new = json.loads(run.config.to_json())
            diffs, fields = config_differences(old, new), changed_fields(old, new)
            old_steps = old.get("steps")
            longer = fields == ["steps"] and isinstance(old_steps, int) and run.config.steps > old_steps
            if diffs and not (extend and longer):
                more = (" (or --extend to continue its runs to the new steps)" if longer else "")
                raise StudyError(f"{path} holds a run with a different config ({'; '.join(diffs)}); use a new "
                                 f"--name for a changed study{more}, or the old settings to resume this one")
            if longer and run.config.agent != "sac":
                raise StudyError(f"{path}: --extend works for --agent sac only (a Stable-Baselines3 agent keeps the "
                                 "replay buffer size it was made with); start a new study with the new steps")
            check_continuation(path, run.config.steps, changed=longer)
        except RunFolderError as exc:
            raise StudyError(str(exc)) from None
    elif path.exists() and any(p.name not in NOT_RUN_STATE for p in path.iterdir()):
        raise StudyError(f"{path} exists and is not a pref-brl run folder; remove it or choose another --name")


def runs_to_extend(runs: list[Run]) -> list[Run]:
    """The runs whose folder holds a config of a smaller `steps` (``check_runs(extend=True)`` let only those
    differ): each one's job continues it from its checkpoint, a finished one too, to the grid's steps, and
    rewrites its config (the old one kept in config.history.json) once that checkpoint has loaded."""
    return [run for run in runs if (run.run_dir / CONFIG_FILE).exists()
            and config_differences(read_config(run.run_dir / CONFIG_FILE), json.loads(run.config.to_json()))]


def _check_writable(folder: Path) -> None:
    from pref_brl.inputs import folder_problem

    problem = folder_problem(folder, "the study folder (--root/--name)")
    if problem:
        raise StudyError(problem)


# ------------------------------------------------------------------------------------------ one job
def run_job(config: dict[str, Any], extend: bool = False) -> str:
    """Train (or resume) one run from its config dict; the entry point of sweep subprocesses. `extend`: the run
    folder may hold the run with a smaller `steps` (`pref-brl-sweep --extend` checked that nothing else differs)."""
    trainer = _trainer(config, extend)
    trainer.train()
    return str(trainer.run_dir)


def _trainer(config: dict[str, Any], extend: bool = False):
    from pref_brl.runs import config_from_dict
    from pref_brl.training import make_trainer
    from pref_brl.validate import validate

    cfg = config_from_dict(config)
    validate(cfg)
    trainer = make_trainer(cfg, progress=True, allow_config_change=extend)
    if trainer.step > 0:
        print(f"resuming {trainer.run_dir} from its checkpoint at step {trainer.step}", flush=True)
    return trainer


class RequeueLimitError(RuntimeError):
    """A run reached its job's time limit more often than the sweep's --max-requeues allows."""


def _requeue_signal() -> signal.Signals:
    """The signal submitit asks Slurm to send before a job's time limit (USR2 unless SUBMITIT_PREEMPT_SIGNAL)."""
    return signal.Signals["SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")]


class TrainJob:
    """What each task of a submitit job array runs: train (or resume) one run, and outlive the job's time limit.

    `pref-brl-sweep --signal-lead S` asks Slurm for submitit's warning signal (USR2) S seconds before the
    time limit. This callable defers it: training stops at the end of the running episode, after a
    checkpoint, and only then does submitit's own handler run, which calls `checkpoint()` for the job to
    resubmit and requeues the job; the requeued job resumes the run exactly from that checkpoint. After
    `max_requeues` requeues, `checkpoint()` raises RequeueLimitError instead (the checkpoint is kept, so
    re-running the sweep continues the run). Outside submitit (no handler of its own for the signal) the
    signal just stops the run after a checkpoint.
    """

    def __init__(self, max_requeues: int = 3, requeues: int = 0, extend: bool = False) -> None:
        self.max_requeues = max_requeues
        self.requeues = requeues
        """how many times the run's job was requeued so far"""
        self.extend = extend
        """the run folder may hold the run with a smaller steps (`pref-brl-sweep --extend`)"""
        self.step = 0
        """the run's step when it last stopped"""

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        """Train; returns {"run_dir", "step", "done", "requeues"} (a requeued job does not return)."""
        sig = _requeue_signal()
        trainer = None
        stop = ""

        def defer(signum: int, _frame: Any) -> None:
            nonlocal stop
            stop = signal.Signals(signum).name
            print(f"{stop}: the job's time limit is near; saving a checkpoint at the end of this episode, then "
                  "requeueing the job", flush=True)
            if trainer is not None:
                trainer.interrupted = stop

        submitit_handler = signal.signal(sig, defer)
        try:
            trainer = _trainer(config, self.extend)
            trainer.interrupted = trainer.interrupted or stop
            trainer.train()
        finally:
            signal.signal(sig, submitit_handler)
        self.step = trainer.step
        done = (trainer.run_dir / DONE_FILE).exists()
        if stop and not done and callable(submitit_handler):
            submitit_handler(sig, None)  # submitit: checkpoint() below, then requeue and exit
        return {"run_dir": str(trainer.run_dir), "step": trainer.step, "done": done, "requeues": self.requeues}

    def checkpoint(self, config: dict[str, Any]) -> Any:
        """submitit's hook: the submission that continues this run in the requeued job."""
        from submitit.helpers import DelayedSubmission

        if self.requeues >= self.max_requeues:
            raise RequeueLimitError(
                f"stopped at step {self.step} at the job's time limit after {self.requeues} requeue(s) "
                f"(--max-requeues {self.max_requeues}); its checkpoint is kept: re-run the same command to "
                "continue, with a longer --timeout-min or a higher --max-requeues")
        print(f"requeueing: the run continues from step {self.step} in the requeued job (requeue "
              f"{self.requeues + 1} of at most {self.max_requeues})", flush=True)
        return DelayedSubmission(TrainJob(self.max_requeues, self.requeues + 1, self.extend), config)


def main(argv: list[str] | None = None) -> int:
    """`python -m pref_brl.study '<config json>' [--extend]`: one sweep job; an error is one line on stderr."""
    from pref_brl.checkpoint import CheckpointError
    from pref_brl.runs import RunFolderError
    from pref_brl.validate import ConfigError

    args = sys.argv[1:] if argv is None else argv
    try:
        print(f"run folder: {run_job(json.loads(args[0]), extend='--extend' in args[1:])}", flush=True)
    except (ConfigError, RunFolderError, CheckpointError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
