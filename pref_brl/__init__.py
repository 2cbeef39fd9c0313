"""pref-brl: preference-based RL (PEBBLE, bilevel reward updates) as a library; docs/library.md shows the API.

`import pref_brl` is light: each name below is imported (with torch and the simulators) on first use.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = metadata.version("pref-brl")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS: dict[str, str] = {
    "train": "pref_brl.api",
    "RunResult": "pref_brl.api",
    "Policy": "pref_brl.api",
    "load_policy": "pref_brl.api",
    "LearnedReward": "pref_brl.api",
    "load_reward": "pref_brl.api",
    "scripted_policy": "pref_brl.api",
    "TrainConfig": "pref_brl.config",
    "ConfigError": "pref_brl.validate",
    "validate": "pref_brl.validate",
    "preset_config": "pref_brl.config",
    "make_env": "pref_brl.envs",
    "Teacher": "pref_brl.protocols",
    "Queries": "pref_brl.protocols",
    "RewardModel": "pref_brl.protocols",
    "EQUAL": "pref_brl.protocols",
    "SKIP": "pref_brl.protocols",
    "RewardEnsemble": "pref_brl.reward_model",
    "PreferenceData": "pref_brl.datasets",
    "export_preferences": "pref_brl.datasets",
    "load_preferences": "pref_brl.datasets",
    "save_preferences": "pref_brl.datasets",
}
"""public name -> the module that defines it"""

__all__ = ["EQUAL", "SKIP", "ConfigError", "LearnedReward", "Policy", "PreferenceData", "Queries", "RewardEnsemble",
           "RewardModel", "RunResult", "Teacher", "TrainConfig", "__version__", "export_preferences", "load_policy",
           "load_preferences", "load_reward", "make_env", "preset_config", "save_preferences", "scripted_policy",
           "train", "validate"]

if TYPE_CHECKING:
    from pref_brl.api import LearnedReward, Policy, RunResult, load_policy, load_reward, scripted_policy, train
    from pref_brl.config import TrainConfig, preset_config
    from pref_brl.datasets import PreferenceData, export_preferences, load_preferences, save_preferences
    from pref_brl.envs import make_env
    from pref_brl.protocols import EQUAL, SKIP, Queries, RewardModel, Teacher
    from pref_brl.reward_model import RewardEnsemble
    from pref_brl.validate import ConfigError, validate


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pref_brl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
