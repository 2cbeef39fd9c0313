"""Run folders to aligned learning curves and final-performance tables (the data side of pref-brl-plot).

Reads each run's `config.json` and `scalars.jsonl` (never TensorBoard files). Runs are grouped by env,
method, label budget and every other config field that differs between the runs (seed, run folder, device
and threads aside); seeds of a group are aggregated. Runs evaluated at different steps are aligned by linear
interpolation onto a common grid, each run only inside its own evaluated range.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pref_brl import stats
from pref_brl.config import IGNORED_FIELDS
from pref_brl.runs import CONFIG_FILE, DONE_FILE, SCALARS_FILE
from pref_brl.study import value_text

LABELS_TAG = "feedback/total"
NOT_GROUPING = frozenset({"seed", "run_dir", "device", "threads", "env", "method", "max_feedback"})
MAX_GRID_POINTS = 300


class ResultsError(ValueError):
    """The run folders cannot be plotted or tabulated as asked; the message says why and what to do."""


MIN_SEEDS_FOR_CI = 3
"""Groups with fewer runs get no confidence interval and no probability of improvement."""


def default_metric(env: str) -> str:
    """eval/success_rate for Meta-World, eval/mean_reward otherwise."""
    return "eval/success_rate" if env.startswith("metaworld_") else "eval/mean_reward"


def uses_labels(config: dict[str, Any]) -> bool:
    return config["method"] != "sac"


@dataclass(frozen=True)
class Group:
    """Runs that differ only in their seed."""

    env: str
    method: str
    budget: int | None
    extras: tuple[tuple[str, Any], ...] = ()
    """the settings that vary between the plotted runs, as this group has them"""
    variant: tuple[tuple[str, Any], ...] = ()
    """those of `extras` whose value is not the preset's: what the group's name shows"""
    display: str = field(default="", compare=False)
    """a name given to the group for figures and tables (pref-brl-plot --label); not part of its identity"""

    @property
    def name(self) -> str:
        """The method, and the settings that differ from its preset, as pref-brl-sweep names a method
        variant: `bilevel`, `bilevel+penalty=false`; what `--compare` and `--label` refer to."""
        return self.method + "".join(f"+{k}={value_text(v)}" for k, v in self.variant)

    @property
    def label(self) -> str:
        """What figures and tables call the group: its given name, else its name; `(true reward)` marks sac."""
        shown = self.display or self.name
        return shown if self.budget is not None else f"{shown} (true reward)"


def preset_values(config: dict[str, Any]) -> dict[str, Any]:
    """Every field's value in the preset a run's config names (TrainConfig's defaults for a custom one), as JSON
    would hold it."""
    from pref_brl.config import PRESETS, TrainConfig, preset_config

    preset = config.get("preset", "cpu")
    cfg = preset_config(preset, config["env"]) if preset in PRESETS else TrainConfig(env=config["env"])
    return json.loads(cfg.to_json())


@dataclass
class RunData:
    path: Path
    config: dict[str, Any]
    finished: bool
    records: list[dict[str, float]] = field(repr=False)
    group: Group | None = None

    def series(self, tag: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one scalar, sorted by step (the last record wins at a repeated step)."""
        points = {int(r["step"]): float(r[tag]) for r in self.records if tag in r}
        steps = np.array(sorted(points), dtype=float)
        return steps, np.array([points[int(s)] for s in steps], dtype=float)

    def labels_at(self, steps: np.ndarray) -> np.ndarray:
        """Labels used (feedback/total) by each of `steps`: the last logged total at or before it, else 0."""
        at, totals = self.series(LABELS_TAG)
        index = np.searchsorted(at, steps, side="right") - 1
        return np.where(index >= 0, totals[np.clip(index, 0, None)] if len(totals) else 0.0, 0.0)


# ------------------------------------------------------------------------------------------ loading
def find_runs(paths: list[str | Path]) -> list[Path]:
    """Every run folder (one holding config.json) at or below the given folders."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise ResultsError(f"{path} is not a folder; pass a study folder or run folders")
        for folder, subfolders, files in os.walk(path):
            if CONFIG_FILE in files:
                found.append(Path(folder))
                subfolders.clear()
            subfolders.sort()
    if not found:
        raise ResultsError(f"no run folders (with {CONFIG_FILE}) under {', '.join(map(str, paths))}; pass a study "
                           "folder made by pref-brl-sweep or run folders made by pref-brl-train")
    return sorted(set(found))


REQUIRED_KEYS: dict[str, type] = {"env": str, "method": str, "seed": int, "max_feedback": int}
"""The config keys the plotter reads, and their types."""


def read_run_config(path: Path) -> dict[str, Any]:
    """A run folder's config.json; ResultsError when it is unreadable, not a JSON object or lacks a key."""
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not valid JSON"
        raise ResultsError(f"{path / CONFIG_FILE} is unreadable ({reason})") from None
    missing = [k for k in REQUIRED_KEYS if k not in config] if isinstance(config, dict) else ["(not an object)"]
    if missing:
        raise ResultsError(f"{path / CONFIG_FILE} is not a run config (missing {', '.join(missing)})")
    wrong = [f"{k}={config[k]!r}" for k, kind in REQUIRED_KEYS.items()
             if not isinstance(config[k], kind) or isinstance(config[k], bool)]
    if wrong:
        raise ResultsError(f"{path / CONFIG_FILE} is not a run config (wrong type: {', '.join(wrong)})")
    return config


def _record_problem(record: object) -> str | None:
    """Why a parsed scalars line is not a record: {"step": int, tag: finite number, ...}; None if it is one."""
    if not isinstance(record, dict) or not isinstance(record.get("step"), int) or isinstance(record["step"], bool):
        return "is not a record with an integer step"
    for key, value in record.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"has a value that is not a number ({key}={value!r})"
        if not np.isfinite(value):
            return f"has a non-finite value ({key}={value}; training stops before it logs one)"
    return None


def load_run(path: Path) -> RunData:
    config = read_run_config(path)
    scalars = path / SCALARS_FILE
    try:
        lines = scalars.read_text(encoding="utf-8").splitlines() if scalars.exists() else []
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{scalars} is unreadable ({getattr(exc, 'strerror', None) or exc})") from None
    records = []
    for number, line in enumerate(lines, 1):
        try:
            if line.strip():
                records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):  # a torn last line of a running job is expected, anything else is not
                raise ResultsError(f"{scalars}:{number} is not a JSON record") from None
            continue
        problem = _record_problem(records[-1]) if line.strip() else None
        if problem:
            raise ResultsError(f"{scalars}:{number} {problem}")
    return RunData(path, config, (path / DONE_FILE).exists(), records)


def assign_groups(runs: list[RunData]) -> None:
    """Set each run's Group; two runs of one group with the same seed are an error."""
    relevant = [{k: v for k, v in r.config.items() if k not in IGNORED_FIELDS.get(r.config["method"], ())}
                for r in runs]
    keys = sorted(set().union(*relevant) - NOT_GROUPING)
    varying = [k for k in keys if len({json.dumps(c[k]) for c in relevant if k in c}) > 1]
    seen: dict[tuple[Group, int], Path] = {}
    for run, config in zip(runs, relevant):
        budget = run.config["max_feedback"] if uses_labels(run.config) else None
        extras = tuple((k, config[k]) for k in varying if k in config)
        preset = preset_values(run.config)
        variant = tuple((k, v) for k, v in extras if v != preset.get(k))
        run.group = Group(run.config["env"], run.config["method"], budget, extras, variant)
        key = (run.group, run.config["seed"])
        if key in seen:
            raise ResultsError(f"{seen[key]} and {run.path} are the same config and seed; they would count as "
                               "two seeds. Plot them separately, or remove one of them")
        seen[key] = run.path


def parse_labels(specs: tuple[str, ...]) -> dict[str, str]:
    """`--label NAME=TEXT` options as {NAME: TEXT}, split at the last `=` (a name holds `=`, as in
    `pebble+uncertainty_bonus=1.0`); a text must be printable, non-empty and without `:` (which `--compare` splits
    at) or `|` (a Markdown table's column bar)."""
    labels: dict[str, str] = {}
    for spec in specs:
        name, sep, text = spec.rpartition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name or not text:
            raise ResultsError(f"--label takes NAME=TEXT, a group's name as the table names it and what to call it "
                               f"(e.g. pebble+uncertainty_bonus=1.0=pebble with bonus); got {spec!r}")
        if ":" in text or "|" in text or not text.isprintable():
            raise ResultsError(f"--label {spec!r}: the text may not hold ':' (--compare splits at it), '|' (a table's "
                               "column bar) or control or invisible characters")
        if name in labels:
            raise ResultsError(f"--label names {name!r} twice")
        if text in labels.values():
            raise ResultsError(f"--label gives two groups the text {text!r}; their lines and rows could not be told "
                               "apart")
        labels[name] = text
    return labels


def apply_labels(runs: list[RunData], labels: dict[str, str]) -> None:
    """Give each group that `labels` names its text (`Group.display`). An error: a name no group has; a text that
    is a group's name or a method's (`--compare` would not know which is meant); two groups shown alike."""
    from typing import get_args

    from pref_brl.config import Method

    names = sorted({r.group.name for r in runs if r.group is not None})
    missing = [n for n in labels if n not in names]
    if missing:
        raise ResultsError(f"--label: no group is named {', '.join(map(repr, missing))} (NAME=TEXT splits at the "
                           f"last '=', so TEXT holds none); the groups here are {', '.join(names)}")
    taken = set(names) | set(get_args(Method))
    clash = [t for t in labels.values() if t in taken]
    if clash:
        raise ResultsError(f"--label: {', '.join(map(repr, clash))} is already the name of a group or a method, so "
                           "--compare could not tell them apart; choose another text")
    named = [(r, replace(r.group, display=labels.get(r.group.name, ""))) for r in runs if r.group is not None]
    shown: dict[str, Group] = {}
    for _, group in named:
        other = shown.setdefault(group.label, group)
        if other != group:
            raise ResultsError(f"--label: two groups would both be shown as {group.label!r} ({other.name} and "
                               f"{group.name}); choose another text")
    for run, group in named:
        run.group = group


def select_metric(runs: list[RunData], metric: str | None) -> tuple[list[RunData], dict[str, str]]:
    """Runs that have evaluations, and the metric of each env; explains mixed folders."""
    envs = sorted({r.config["env"] for r in runs})
    logged = sorted({k for run in runs for r in run.records for k in r} - {"step"})
    if metric and metric not in logged:
        evals = [k for k in logged if k.startswith("eval")] or logged
        raise ResultsError(f"--metric {metric} is logged by no run; logged: {', '.join(evals[:20])}"
                           + (" (and other scalars; see a run's scalars.jsonl)" if len(evals) < len(logged) else ""))
    metrics = {env: metric or default_metric(env) for env in envs}
    kept = []
    for run in runs:
        env = run.config["env"]
        if not any(k.startswith("eval/") for r in run.records for k in r):
            continue  # not evaluated yet
        if not any(metrics[env] in r for r in run.records):
            mixed = f"; the folders mix envs {', '.join(envs)}" if len(envs) > 1 else ""
            raise ResultsError(
                f"{metrics[env]} is not logged by the {env} run {run.path}{mixed}. Plot one env at a time "
                f"(--env NAME), or leave out --metric to use each env's default (eval/success_rate for "
                "Meta-World, eval/mean_reward otherwise)")
        kept.append(run)
    if not kept:
        raise ResultsError("no run has an evaluation yet; plot again after the first eval_frequency steps")
    return kept, metrics


def warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def load_readable(paths: list[Path], warn: Callable[[str], None]) -> list[RunData]:
    """The runs that can be read; each broken one (bad config.json, unreadable scalars) is named to `warn`, unless
    none can be read: then the one error names them."""
    runs, broken = [], []
    for path in paths:
        try:
            runs.append(load_run(path))
        except ResultsError as exc:
            broken.append((path, str(exc)))
    if not runs:
        shown = "; ".join(reason for _, reason in broken[:3])
        more = f"; and {len(broken) - 3} more" if len(broken) > 3 else ""
        raise ResultsError(f"none of the {len(paths)} run folders can be read: {shown}{more}")
    for path, reason in broken:
        warn(f"skipping the broken run {path}: {reason}")
    return runs


def load(paths: list[str | Path], metric: str | None = None, envs: tuple[str, ...] = (),
         warn: Callable[[str], None] = warn_stderr) -> tuple[list[RunData], dict[str, str]]:
    """Runs under `paths` (optionally of the given envs), grouped, with the metric of each env; a broken run
    is left out and named to `warn` (a `warning:` line on stderr by default)."""
    runs = load_readable(find_runs(paths), warn)
    if envs:
        found = sorted({r.config["env"] for r in runs})
        runs = [r for r in runs if r.config["env"] in envs]
        if not runs:
            raise ResultsError(f"no runs of env {', '.join(envs)} under {', '.join(map(str, paths))}; envs found: "
                               f"{', '.join(found)}")
    assign_groups(runs)
    return select_metric(runs, metric)


# ------------------------------------------------------------------------------------------ curves
@dataclass
class Curve:
    group: Group
    x: np.ndarray
    point: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    runs: int


def run_points(run: RunData, metric: str, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """A run's curve against env steps, or against labels used (the last evaluation at each label count)."""
    steps, values = run.series(metric)
    if axis == "steps":
        return steps, values
    labels = run.labels_at(steps)
    last = np.r_[labels[1:] != labels[:-1], True] if len(labels) else np.zeros(0, bool)
    return labels[last], values[last]


def common_grid(xs: list[np.ndarray]) -> np.ndarray:
    grid = np.unique(np.concatenate(xs))
    if len(grid) > MAX_GRID_POINTS:
        grid = np.linspace(grid[0], grid[-1], MAX_GRID_POINTS)
    return grid


def align(points: list[tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> np.ndarray:
    """(runs, grid points): each run interpolated onto the grid inside its own range, NaN outside."""
    out = np.full((len(points), len(grid)), np.nan)
    for i, (x, y) in enumerate(points):
        if len(x):
            inside = (grid >= x[0]) & (grid <= x[-1])
            out[i, inside] = np.interp(grid[inside], x, y)
    return out


def curves(runs: list[RunData], metric: str, axis: str = "steps", aggregate: str = "mean", min_runs: int = 0,
           reps: int = 2000, seed: int = 0) -> list[Curve]:
    """One curve per group (runs of one env); a point needs `min_runs` runs there (0: all of the group)."""
    if axis == "labels":
        runs = [r for r in runs if uses_labels(r.config)]
    groups = sorted({r.group for r in runs}, key=sort_key)
    per_run = {id(r): run_points(r, metric, axis) for r in runs}
    if not per_run:
        return []
    grid = common_grid([x for x, _ in per_run.values()])
    out = []
    for group in groups:
        members = [r for r in runs if r.group == group]
        values = align([per_run[id(r)] for r in members], grid)
        point, lo, hi = stats.curve_estimates(values, stats.AGGREGATES[aggregate], reps,
                                              rng=np.random.default_rng(seed))
        present = (~np.isnan(values)).sum(axis=0)
        too_few = present < (min_runs or len(members))
        for array in (point, lo, hi):
            array[too_few] = np.nan
        for array in (lo, hi):  # no interval from fewer than MIN_SEEDS_FOR_CI runs
            array[present < MIN_SEEDS_FOR_CI] = np.nan
        out.append(Curve(group, grid, point, lo, hi, len(members)))
    return out


def sort_key(group: Group) -> tuple:
    order = {"sac": 0, "pebble": 1, "mrn": 2, "bilevel": 3, "sobirl": 4}
    return (group.env, group.budget or 0, order.get(group.method, 9), group.method, len(group.variant),
            str(group.extras))


# ------------------------------------------------------------------------------------------ final table
@dataclass
class Row:
    """Final performance of one group: each run's mean over its last `window` evaluations."""

    group: Group
    metric: str
    scores: np.ndarray
    finished: int
    final_steps: tuple[int, int]
    point: float = np.nan
    lo: float = np.nan
    hi: float = np.nan
    poi: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    """"method > baseline" -> (probability of improvement, CI low, CI high)"""


def final_score(run: RunData, metric: str, window: int) -> tuple[float, int]:
    steps, values = run.series(metric)
    return float(values[-window:].mean()), int(steps[-1])


def final_table(runs: list[RunData], metrics: dict[str, str], aggregate: str = "iqm",
                compare: tuple[tuple[str, str], ...] = (("bilevel", "pebble"),), window: int = 1,
                reps: int = 10_000, seed: int = 0) -> list[Row]:
    """One row per group, with a bootstrap CI of the aggregate and the probability of improvement of each
    (method, baseline) pair in `compare` at the same env, budget and other settings."""
    rows = []
    for group in sorted({r.group for r in runs}, key=sort_key):
        members = [r for r in runs if r.group == group]
        finals = [final_score(r, metrics[group.env], window) for r in members]
        steps = [s for _, s in finals]
        row = Row(group, metrics[group.env], np.array([[v] for v, _ in finals]),
                  sum(r.finished for r in members), (min(steps), max(steps)))
        row.point = float(stats.AGGREGATES[aggregate](row.scores))
        if len(members) >= MIN_SEEDS_FOR_CI and not np.isnan(row.scores).any():
            row.lo, row.hi = stats.stratified_bootstrap_ci(row.scores, stats.AGGREGATES[aggregate], reps,
                                                           rng=np.random.default_rng(seed))
        rows.append(row)
    for method, baseline in compare:
        for row in named_rows(rows, method):
            other = matching_row(rows, row.group, baseline)
            if other is row:
                continue
            if other is not None and min(len(row.scores), len(other.scores)) < MIN_SEEDS_FOR_CI:
                row.poi[f"{method} > {baseline}"] = (np.nan, np.nan, np.nan)
            elif other is not None:
                p = float(stats.probability_of_improvement(row.scores, other.scores))
                lo, hi = stats.probability_of_improvement_ci(row.scores, other.scores, reps,
                                                             rng=np.random.default_rng(seed))
                row.poi[f"{method} > {baseline}"] = (p, lo, hi)
    return rows


def named_rows(rows: list[Row], name: str) -> list[Row]:
    """The rows a `--compare` side names: the groups of that name (`bilevel`, `bilevel+penalty=false`) or given
    that name by `--label`; a plain method name that no group has as its name (every one of its groups differs
    from the preset, as in a `penalty_weight` sweep) names all of that method's groups."""
    exact = [r for r in rows if name in (r.group.name, r.group.display)]
    return exact or [r for r in rows if r.group.method == name]


def matching_row(rows: list[Row], group: Group, name: str) -> Row | None:
    """The row called `name` at the same env and budget: the one with the same settings if there is one, else
    the only one."""
    candidates = [r for r in named_rows(rows, name) if r.group.env == group.env and r.group.budget == group.budget]
    exact = [r for r in candidates if r.group.extras == group.extras]
    if exact:
        return exact[0]
    return candidates[0] if len(candidates) == 1 else None


def short_number(x: float) -> str:
    """Three significant digits, and whole numbers from 999.5 on (where .3g would round up to 1e+03)."""
    return f"{x:.3g}" if abs(x) < 999.5 else f"{x:.0f}"


def _fmt(x: float) -> str:
    if np.isnan(x):
        return "NaN (flagged)"
    return short_number(x)


def _interval(row: Row) -> str:
    if np.isnan(row.lo):
        return "n/a (n < 3)" if len(row.scores) < MIN_SEEDS_FOR_CI else "n/a (NaN scores)"
    return f"[{_fmt(row.lo)}, {_fmt(row.hi)}]"


def _poi(value: tuple[float, float, float] | None) -> str:
    if value is None:
        return ""
    if np.isnan(value[0]):
        return "n/a (n < 3)"
    return f"{value[0]:.2f} [{value[1]:.2f}, {value[2]:.2f}]"


def thin_groups(rows: list[Row]) -> list[str]:
    """Labels of groups with fewer than MIN_SEEDS_FOR_CI runs (no interval or probability of improvement)."""
    return [f"{r.group.env} {r.group.label} budget {r.group.budget}" for r in rows
            if len(r.scores) < MIN_SEEDS_FOR_CI]


def to_markdown(rows: list[Row], aggregate: str) -> str:
    """The final-performance table as Markdown."""
    pairs = sorted({b for r in rows for b in r.poi})
    head = ["env", "method", "budget", "seeds (finished)", "final step", "metric", f"{aggregate.upper()} [95% CI]",
            "mean"] + [f"P({b}) [95% CI]" for b in pairs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        steps = str(r.final_steps[0]) if r.final_steps[0] == r.final_steps[1] else "{}-{}".format(*r.final_steps)
        cells = [r.group.env, r.group.label, "-" if r.group.budget is None else str(r.group.budget),
                 f"{len(r.scores)} ({r.finished})", steps, r.metric,
                 f"{_fmt(r.point)} {_interval(r)}", _fmt(float(r.scores.mean()))]
        cells += [_poi(r.poi.get(b)) for b in pairs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[Row], aggregate: str) -> str:
    """The final-performance table as CSV (one row per group, full precision)."""
    import csv
    import io

    pairs = sorted({b for r in rows for b in r.poi})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["env", "method", "settings", "budget", "seeds", "finished", "first_final_step",
                     "last_final_step", "metric", "aggregate", "value", "ci_low", "ci_high", "mean", "iqm"]
                    + [f"{c}({b.replace(' ', '')})" for b in pairs for c in ("poi", "poi_ci_low", "poi_ci_high")])
    for r in rows:
        settings = ";".join(f"{k}={v}" for k, v in r.group.extras)
        writer.writerow([r.group.env, r.group.method, settings, r.group.budget if r.group.budget else "",
                         len(r.scores), r.finished, *r.final_steps, r.metric, aggregate, r.point, r.lo, r.hi,
                         float(r.scores.mean()), float(stats.iqm(r.scores))]
                        + [x for b in pairs for x in (r.poi.get(b) or ("", "", ""))])
    return buffer.getvalue()
