"""Series of `pref-brl-reward-check` results: how a run's learned reward ordered its own agent's segments against
another policy's (the cross-pair accuracy) at each checkpoint it was checked at, for `pref-brl-plot`'s
reward-check figures.

A check is the JSON that `pref-brl-reward-check` writes (`--out FILE` gives FILE.json, `--watch DIR` gives
DIR/step<N>.json); an archived study keeps them in its `reward-checks` folder. The run a check belongs to is its
`run_dir`; in a study made by `pref-brl-sweep` that is `<study>/<env>/<group>/.../seed<N>`, from which the group
(the method, or a method variant as the sweep names it) and the seed are read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath

from pref_brl.results import ResultsError
from pref_brl.reward_check import EXPERT, OWN, WATCH_SETTINGS

CHECKS_FOLDER = "reward-checks"
"""the folder of an archived study (beside its env folders) that holds its reward checks"""
REQUIRED = {"run_dir": str, "env": str, "step": int, "labels": int, "policies": list}
"""the keys of a check that a series is made from, with their JSON types"""


@dataclass(frozen=True)
class CheckSeries:
    """The checks of one run against one other policy, in order of env step."""

    env: str
    group: str
    """the run's group: its folder under the env folder (pebble, bilevel+penalty=false, ...), or, for a run folder
    outside a study, the run folder's own name"""
    seed: str
    """the run folder's name (seed0, ...)"""
    against: str
    """the other policy: Meta-World's scripted policy, or the other run's folder below the env folder"""
    steps: tuple[int, ...]
    labels: tuple[int, ...]
    cross_accuracy: tuple[float, ...]
    """NaN where no pair of segments had different true returns"""


def check_files(folders: Iterable[str | Path]) -> list[Path]:
    """The check JSONs of the given folders (a --watch folder's settings file left out), in name order."""
    files = []
    for folder in map(Path, folders):
        files += sorted(p for p in folder.glob("*.json") if p.name != WATCH_SETTINGS and p.is_file())
    return files


def default_check_folders(study_folders: Iterable[str | Path]) -> list[Path]:
    """The `reward-checks` folder of each study folder that has one."""
    return [Path(f) / CHECKS_FOLDER for f in study_folders if (Path(f) / CHECKS_FOLDER).is_dir()]


def load_series(files: Iterable[Path]) -> list[CheckSeries]:
    """One series per (run, other policy), sorted by env, group, seed and policy. A file that is not a check, or
    two checks of one run at one step, is a ResultsError naming the file(s)."""
    points: dict[tuple[str, str, str, str], dict[int, tuple[int, float, Path]]] = {}
    for path in files:
        check = _read(path)
        env, group, seed = _run_identity(check["run_dir"], check["env"])
        for policy in check["policies"]:
            if policy["name"] == OWN:
                continue
            key = (env, group, seed, _short_name(policy["name"], env))
            series = points.setdefault(key, {})
            if check["step"] in series:
                raise ResultsError(f"two checks of {check['run_dir']} at step {check['step']}: "
                                   f"{series[check['step']][2]} and {path}; keep one")
            accuracy = policy["cross_accuracy"]
            series[check["step"]] = (check["labels"], math.nan if accuracy is None else float(accuracy), path)
    result = []
    for (env, group, seed, against), by_step in sorted(points.items()):
        steps = sorted(by_step)
        result.append(CheckSeries(env, group, seed, against, tuple(steps), tuple(by_step[s][0] for s in steps),
                                  tuple(by_step[s][1] for s in steps)))
    return result


def _read(path: Path) -> dict:
    def bad(reason: str) -> ResultsError:
        return ResultsError(f"{path} is not a pref-brl-reward-check result ({reason}); move it out of {path.parent}")

    try:
        check = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise bad(f"unreadable: {exc}") from None
    if not isinstance(check, dict):
        raise bad("not a JSON object")
    for key, kind in REQUIRED.items():
        value = check.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad(f"no {key} of type {kind.__name__}")
    for policy in check["policies"]:
        accuracy = policy.get("cross_accuracy", "missing") if isinstance(policy, dict) else "missing"
        if not isinstance(policy, dict) or not isinstance(policy.get("name"), str) or not (
                accuracy is None or isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool)):
            raise bad("a policy without a name and a cross_accuracy")
    return check


def _run_identity(run_dir: str, env: str) -> tuple[str, str, str]:
    """(env, group, seed) of a run folder's path: the part after the env folder is the group."""
    parts = PurePath(run_dir).parts
    if env in parts[:-1]:
        return env, parts[parts.index(env) + 1], parts[-1]
    return env, parts[-1] if parts else run_dir, ""


def _short_name(name: str, env: str) -> str:
    if name == EXPERT:
        return "scripted policy"
    parts = PurePath(name).parts
    return "/".join(parts[parts.index(env) + 1:]) if env in parts[:-1] else name
