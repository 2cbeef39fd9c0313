"""Clips of query segments: find each segment's episode, replay it from its reset seed, render, encode.

A segment is cut from an episode of the query store (pref_brl.preferences); its frames are reproduced by
resetting a rendering copy of the environment with the episode's `reset_seed` and stepping the stored actions
(the simulators are deterministic given both). Replay is checked: each replayed state must match the stored
one, else :class:`ReplayError`. Clips are H.264 MP4 (yuv420p, every browser plays it), via imageio-ffmpeg.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pref_brl.preferences import Episode, EpisodeStore

CLIP_SIZE = 256
"""clip frames are CLIP_SIZE x CLIP_SIZE pixels"""
REPLAY_ATOL = 1e-4
"""largest difference allowed between a replayed and a stored state"""


class ReplayError(RuntimeError):
    """Replaying an episode from its reset seed and actions did not reproduce its stored states."""


@dataclass(frozen=True)
class SegmentRef:
    """Where a segment came from: enough to reproduce its frames."""

    agent: str
    """the agent that played the episode"""
    reset_seed: int
    """the seed of the episode's env.reset"""
    start: int
    """the segment's first step in the episode"""
    episode: Episode
    """the episode itself (its actions are replayed)"""


def locate(store: EpisodeStore, obs: np.ndarray) -> SegmentRef:
    """The episode and start step of the segment whose states are `obs` [H, O] (newest episode first)."""
    h = len(obs)
    for episode in reversed(store.episodes()):
        if len(episode) < h:
            continue
        for start in np.flatnonzero((episode.obs[: len(episode) - h + 1] == obs[0]).all(axis=1)):
            if np.array_equal(episode.obs[start: start + h], obs):
                return SegmentRef(episode.agent, int(episode.reset_seed), int(start), episode)
    raise LookupError("a query segment is in no stored episode")


class ClipRenderer:
    """Renders segments of one environment (a rendering copy, made on first use)."""

    def __init__(self, env_name: str, goal_mode: str, max_episode_steps: int, size: int = CLIP_SIZE) -> None:
        self.env_name, self.goal_mode, self.limit, self.size = env_name, goal_mode, max_episode_steps, size
        self._env = None

    @property
    def env(self):
        if self._env is None:
            from envs import make_env

            self._env = make_env(self.env_name, 0, goal_mode=self.goal_mode, render_mode="rgb_array",
                                 max_episode_steps=self.limit or None, render_size=(self.size, self.size))
        return self._env

    def check(self) -> None:
        """Fail at the start of a run, not at its first feedback round, when MuJoCo cannot render here."""
        from pref_brl.video import INSTALL_HINT, VideoError

        try:
            self.env.reset(seed=0)
            self.env.render()
        except Exception as exc:  # noqa: BLE001 - GL errors come in many types
            self.close()
            backend = os.environ.get("MUJOCO_GL", "default")
            raise VideoError(f"--teacher human: MuJoCo cannot render clips (MUJOCO_GL={backend}: {exc}); "
                             f"{INSTALL_HINT}") from None

    def frames(self, ref: SegmentRef, length: int) -> list[np.ndarray]:
        """The rendered frames of steps start .. start+length-1 of `ref`'s episode, replayed and checked."""
        env, episode = self.env, ref.episode
        obs, _ = env.reset(seed=ref.reset_seed)
        out = []
        for t in range(ref.start + length):
            if t >= ref.start:
                if not np.allclose(obs, episode.obs[t], atol=REPLAY_ATOL, rtol=0):
                    raise ReplayError(f"replaying the episode of reset seed {ref.reset_seed} diverges at step {t} "
                                      f"(max difference {np.abs(obs - episode.obs[t]).max():.3g})")
                out.append(np.asarray(env.render()))
            obs, *_ = env.step(episode.act[t])
        return out

    def write(self, ref: SegmentRef, length: int, path: Path) -> int:
        """Write the segment's clip to `path` (atomically); returns the number of frames."""
        frames = self.frames(ref, length)
        write_mp4(frames, path, int(self.env.metadata.get("render_fps", 30)))
        return len(frames)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def write_mp4(frames: list[np.ndarray], path: Path, fps: int) -> None:
    """H.264 MP4 (yuv420p, moov atom first so playback starts at once), written to a temporary file first."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=16, pixelformat="yuv420p",
                            ffmpeg_params=["-movflags", "+faststart"], ffmpeg_log_level="error") as writer:
        for frame in frames:
            writer.append_data(frame)
    os.replace(tmp, path)
