"""Series of `pref-brl-reward-check` results: how a run's learned reward ordered its own agent's segments against
another policy's (the cross-pair accuracy) at each checkpoint it was checked at, for `pref-brl-plot`'s
reward-check figures.

A check is the JSON that `pref-brl-reward-check` writes (`--out FILE` gives FILE.json, `--watch DIR` gives
DIR/step<N>.json); an archived study keeps them in its `reward-checks` folder. The run a check belongs to is its
`run_dir`, known by the part of that path from the env folder on (`<env>/<method>/budget<B>/<teacher>/seed<N>` in
a study made by `pref-brl-sweep`), so that the checks of a study and its run folders meet wherever each lies.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath

from pref_brl.results import ResultsError
from pref_brl.reward_check import EXPERT, OWN, WATCH_SETTINGS

CHECKS_FOLDER = "reward-checks"
"""the folder of an archived study (beside its env folders) that holds its reward checks"""
MAX_COUNT = 2**53
"""the largest env step or label count taken from a check (beyond it a float no longer holds every integer)"""


@dataclass(frozen=True)
class CheckSeries:
    """The checks of one run against one other policy, in order of env step."""

    env: str
    run: tuple[str, ...]
    """the run folder's path below the env folder, e.g. (pebble, budget1000, oracle, seed0); for a run folder
    outside a study, its own name"""
    against: str
    """the other policy: "scripted policy" (Meta-World's), or the other run's folder path below its env folder
    (sac/seed0), by which checks that name one run by different paths (relative to other folders) meet"""
    steps: tuple[int, ...]
    labels: tuple[int, ...]
    cross_accuracy: tuple[float, ...]
    """NaN where no pair of segments had different true returns"""
    own_learned: tuple[float, ...] = ()
    """the run's own agent's mean learned return per episode at each check (NaN where a check has none)"""
    other_learned: tuple[float, ...] = ()
    """the other policy's mean learned return per episode at each check"""
    own_success: tuple[float, ...] = ()
    """the share of the own agent's check episodes with a success (NaN outside Meta-World)"""
    pair_accuracy: tuple[float, ...] = ()
    """the share of all checked segment pairs (every policy's) whose order the learned reward predicts"""
    label_coverage: tuple[float, ...] = ()
    """the share of the other policy's segments whose true return the highest labelled segment reaches (NaN where
    a check has none: checks written before it was recorded)"""

    @property
    def seed(self) -> str:
        """the run folder's name (seed0, ...)"""
        return self.run[-1]

    @property
    def folder_group(self) -> str:
        """the run's folders between the env and the seed (pebble/budget1000/oracle), or the run folder's name"""
        return "/".join(self.run[:-1]) or self.run[-1]

    @property
    def budget(self) -> int | None:
        """the label budget that the run's path names (budget<B>), if it names one"""
        found = [int(m.group(1)) for part in self.run[:-1] if (m := re.fullmatch(r"budget(\d+)", part))]
        return found[0] if len(found) == 1 else None


def run_key(path: str | Path, env: str) -> tuple[str, ...]:
    """A run folder's path from below its env folder on (the last folder named after the env), or its own name."""
    parts = PurePath(path).parts
    below = [i for i, part in enumerate(parts[:-1]) if part == env]
    return parts[below[-1] + 1:] if below else parts[-1:]


def check_files(folders: Iterable[str | Path]) -> list[Path]:
    """The check JSONs of the given folders (each folder once; a --watch folder's settings file and hidden files,
    such as a half-written check, left out), in name order. An unreadable folder is a ResultsError."""
    files, seen = [], set()
    for folder in map(Path, folders):
        if folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        if not os.access(folder, os.R_OK | os.X_OK):
            raise ResultsError(f"cannot read the reward checks in {folder} (permission denied)")
        try:
            files += sorted(p for p in folder.glob("*.json")
                            if p.name != WATCH_SETTINGS and not p.name.startswith(".") and p.is_file())
        except OSError as exc:
            raise ResultsError(f"cannot read the reward checks in {folder} ({exc})") from None
    return files


def default_check_folders(study_folders: Iterable[str | Path]) -> list[Path]:
    """The `reward-checks` folder of each study folder that has one."""
    return [Path(f) / CHECKS_FOLDER for f in study_folders if (Path(f) / CHECKS_FOLDER).is_dir()]


def load_series(files: Iterable[Path]) -> list[CheckSeries]:
    """One series per (run, other policy), sorted by env, run (seeds in number order) and policy. A file that is
    not a check, a check that names one policy twice, or two checks of one run at one step, is a ResultsError
    naming the file(s)."""
    points: dict[tuple[str, tuple[str, ...], str], dict[int, tuple]] = {}
    for path in files:
        check = _read(path)
        env, run = check["env"], run_key(check["run_dir"], check["env"])
        names = [p["name"] for p in check["policies"]]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ResultsError(f"{path} names the policy {twice[0]!r} twice; move it out of {path.parent}")
        own = next((p for p in check["policies"] if p["name"] == OWN), {})
        for policy in check["policies"]:
            if policy["name"] == OWN:
                continue
            series = points.setdefault((env, run, _policy_key(policy["name"], env)), {})
            if check["step"] in series:
                raise ResultsError(f"two checks of {'/'.join((env,) + run)} at step {check['step']}: "
                                   f"{series[check['step']][0]} and {path}; keep one")
            series[check["step"]] = (path, check["labels"], _number(policy["cross_accuracy"]),
                                     _number(own.get("learned_return")), _number(policy.get("learned_return")),
                                     _number(own.get("success")), _number(check.get("pair_accuracy")),
                                     _number(policy.get("label_coverage")))
    result = []
    for (env, run, against), by_step in sorted(points.items(), key=lambda item: _order(item[0])):
        steps = sorted(by_step)
        labels, cross, own_learned, other_learned, own_success, pairs, coverage = zip(
            *(by_step[s][1:] for s in steps))
        result.append(CheckSeries(env, run, against, tuple(steps), labels, cross, own_learned, other_learned,
                                  own_success, pairs, coverage))
    return result


def _policy_key(name: str, env: str) -> str:
    if name == EXPERT:
        return "scripted policy"
    return "/".join(run_key(name, env)) if env in PurePath(name).parts[:-1] else name


def _order(key: tuple[str, tuple[str, ...], str]) -> tuple:
    """Sort runs with the numbers in their folder names as numbers (seed2 before seed10)."""
    env, run, against = key
    natural = tuple(tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", part)) for part in run)
    return env, natural, against


def _number(value: float | None) -> float:
    """A checked number as a float: NaN for null or a missing field."""
    return math.nan if value is None else float(value)


def _read(path: Path) -> dict:
    from pref_brl.envs import KNOWN_ENVS

    def bad(reason: str) -> ResultsError:
        return ResultsError(f"{path} is not a pref-brl-reward-check result ({reason}); move it out of {path.parent}")

    try:
        check = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"unreadable: {type(exc).__name__}") from None
    if not isinstance(check, dict):
        raise bad("not a JSON object")
    if not isinstance(check.get("run_dir"), str) or not check["run_dir"]:
        raise bad("no run_dir")
    if check.get("env") not in KNOWN_ENVS:
        raise bad(f"env {check.get('env')!r} is not a known environment")
    for key in ("step", "labels"):
        value = check.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
            raise bad(f"no {key} that is a count")
    policies = check.get("policies")
    if not isinstance(policies, list):
        raise bad("no list of policies")
    for policy in policies:
        if not isinstance(policy, dict) or not isinstance(policy.get("name"), str) or not _is_number(
                policy.get("cross_accuracy", "missing"), share=True):
            raise bad("a policy without a name and a cross_accuracy in [0, 1] (or null, NaN)")
        if not _is_number(policy.get("success"), share=True):
            raise bad(f"policy {policy['name']!r}: a success that is not a share in [0, 1] (or null, NaN)")
        if not _is_number(policy.get("learned_return")):
            raise bad(f"policy {policy['name']!r}: a learned_return that is not a finite number (or null, NaN)")
        if not _is_number(policy.get("label_coverage"), share=True):
            raise bad(f"policy {policy['name']!r}: a label_coverage that is not a share in [0, 1] (or null, NaN)")
    if not _is_number(check.get("pair_accuracy"), share=True):
        raise bad("a pair_accuracy that is not a share in [0, 1] (or null, NaN)")
    return check


def _is_number(value: object, share: bool = False) -> bool:
    """None (also a missing field), NaN, or a finite number (with `share`, one in [0, 1])."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        value = float(value)
    except OverflowError:
        return False
    return math.isnan(value) or (0.0 <= value <= 1.0 if share else math.isfinite(value))
