"""Preference datasets: a run's labelled segment pairs as a portable `.npz` file, and back (docs/library.md).

File format (NumPy `.npz`, readable with ``np.load(path, allow_pickle=False)``), N labelled pairs of H steps:

| key | dtype, shape | content |
| --- | --- | --- |
| ``format`` | str | ``"pref-brl-preferences"`` |
| ``version`` | int | 1 |
| ``obs0``, ``obs1`` | float32 [N, H, O] | states of σ⁰ and σ¹ |
| ``act0``, ``act1`` | float32 [N, H, A] | actions (in the environment's [-1, 1] units) |
| ``rew0``, ``rew1`` | float32 [N, H] | true rewards (what a scripted teacher read) |
| ``labels`` | float32 [N] | 1 ⇒ σ¹ preferred, 0 ⇒ σ⁰, 0.5 ⇒ equal (skipped queries are not in the file) |
| ``teacher`` | str [N] | who labelled each pair (a preset name or a ``module:function`` path) |
| ``env`` | str | the environment the segments come from |
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pref_brl.runs import CONFIG_FILE

__all__ = ["FORMAT", "PreferenceData", "export_preferences", "load_preferences", "save_preferences"]

FORMAT = "pref-brl-preferences"
VERSION = 1
ARRAYS = ("obs0", "act0", "rew0", "obs1", "act1", "rew1", "labels")


@dataclass(frozen=True)
class PreferenceData:
    """Labelled segment pairs with who labelled them (the content of one preference file)."""

    obs0: np.ndarray
    """[N, H, O] states of σ⁰"""
    act0: np.ndarray
    """[N, H, A] actions of σ⁰"""
    rew0: np.ndarray
    """[N, H] true rewards of σ⁰"""
    obs1: np.ndarray
    """[N, H, O] states of σ¹"""
    act1: np.ndarray
    """[N, H, A] actions of σ¹"""
    rew1: np.ndarray
    """[N, H] true rewards of σ¹"""
    labels: np.ndarray
    """[N] 1 ⇒ σ¹ preferred, 0 ⇒ σ⁰, 0.5 ⇒ equal"""
    teacher: np.ndarray
    """[N] str: who labelled each pair"""
    env: str
    """the environment of the segments"""

    def __len__(self) -> int:
        return len(self.labels)

    def check_shape(self, obs_dim: int, act_dim: int, segment: int) -> None:
        """A one-line ValueError unless the pairs fit an environment of these sizes and segments of this length."""
        n, h, o = self.obs0.shape
        if (o, self.act0.shape[-1]) != (obs_dim, act_dim):
            raise ValueError(f"the preference file's pairs have {o}-dim states and {self.act0.shape[-1]}-dim actions; "
                             f"this env has {obs_dim} and {act_dim}")
        if h != segment:
            raise ValueError(f"the preference file's segments are {h} steps long and --segment is {segment}; set "
                             f"--segment {h}")

    def pairs(self):
        """As :class:`pref_brl.preferences.SegmentPairs` (float32 CPU tensors)."""
        import torch

        from pref_brl.preferences import SegmentPairs

        return SegmentPairs(*(torch.from_numpy(np.ascontiguousarray(getattr(self, k), dtype=np.float32))
                              for k in ARRAYS[:-1]))


def save_preferences(data: PreferenceData, path: str | Path) -> Path:
    """Write `data` as a preference file (compressed `.npz`); returns the path written."""
    path = Path(path)
    arrays = {k: np.asarray(getattr(data, k), dtype=np.float32) for k in ARRAYS}
    np.savez_compressed(path, format=np.array(FORMAT), version=np.array(VERSION), env=np.array(data.env),
                        teacher=np.asarray(data.teacher, dtype=str), **arrays)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def load_preferences(path: str | Path) -> PreferenceData:
    """Read a preference file; a one-line ValueError says what is wrong with it."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            content = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the preference file {path} ({type(exc).__name__}: {exc})") from None
    if str(content.get("format", "")) != FORMAT:
        raise ValueError(f"{path} is not a pref-brl preference file (no format={FORMAT!r} entry)")
    if int(content["version"]) != VERSION:
        raise ValueError(f"{path} has preference file version {int(content['version'])}; this pref-brl reads {VERSION}")
    missing = [k for k in (*ARRAYS, "teacher", "env") if k not in content]
    if missing:
        raise ValueError(f"the preference file {path} lacks {', '.join(missing)}")
    data = PreferenceData(**{k: content[k] for k in ARRAYS}, teacher=content["teacher"], env=str(content["env"]))
    _check_consistent(data, path)
    return data


def _check_consistent(data: PreferenceData, path: str | Path) -> None:
    n = len(data.labels)
    shapes_ok = (data.obs0.ndim == 3 and data.obs0.shape == data.obs1.shape and data.act0.shape == data.act1.shape
                 and data.act0.shape[:2] == data.obs0.shape[:2] and data.rew0.shape == data.obs0.shape[:2]
                 and data.rew1.shape == data.rew0.shape and data.obs0.shape[0] == n and data.teacher.shape == (n,))
    if not shapes_ok:
        raise ValueError(f"the arrays of the preference file {path} disagree in shape")
    if not (np.isfinite(data.labels).all() and ((data.labels >= 0) & (data.labels <= 1)).all()):
        raise ValueError(f"the preference file {path} has labels outside [0, 1]")


def export_preferences(run_dir: str | Path, path: str | Path) -> Path:
    """Write the labelled pairs of the run in `run_dir` (as of its last checkpoint) to the preference file `path`."""
    from pref_brl.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    if not config_path.exists():
        raise ValueError(f"{run_dir} is not a pref-brl run folder (no config.json)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    state = load_checkpoint(run_dir)
    learner = None if state is None else state.get("learner")
    if learner is None:
        raise ValueError(f"{run_dir} has no labelled pairs (no checkpoint yet, or method sac)")
    prefs = learner["prefs"]
    n = int(prefs["n"])
    if n == 0:
        raise ValueError(f"{run_dir} has no labelled pairs yet (its last checkpoint precedes the first feedback round)")
    obs_dim = int(state.get("obs_dim") or _actor_obs_dim(state))
    sa0, sa1 = prefs["sa0"].numpy(), prefs["sa1"].numpy()
    seeded = [str(t) for t in learner.get("seeded_teachers", [])]
    teacher = np.array(seeded + [config.get("teacher", "oracle")] * (n - len(seeded)), dtype=str)
    data = PreferenceData(obs0=sa0[..., :obs_dim], act0=sa0[..., obs_dim:], rew0=prefs["rew0"].numpy(),
                          obs1=sa1[..., :obs_dim], act1=sa1[..., obs_dim:], rew1=prefs["rew1"].numpy(),
                          labels=prefs["labels"].numpy(), teacher=teacher, env=config["env"])
    return save_preferences(data, path)


def _actor_obs_dim(state: dict) -> int:
    """The state size of our SAC agent A, read off its actor's first layer [hidden, obs_dim]."""
    weights = [v for k, v in state["agents"]["A"]["actor"].items() if k.endswith("weight")]
    return int(weights[0].shape[1])
