"""Clips of query segments: find each segment's episode, replay it from its reset seed, render, encode.

A segment is cut from an episode of the query store (pref_brl.preferences); its frames are reproduced by
resetting a rendering copy of the environment with the episode's `reset_seed` and stepping the stored actions
(the simulators are deterministic given both). Replay is checked: each replayed state must match the stored
one, else :class:`ReplayError`. Clips are H.264 MP4 (yuv420p, every browser plays it), via imageio-ffmpeg.

A round renders fast: all clips cut from one episode come from a single replay, only the frames a clip shows
are rendered, without anti-aliasing, shadows and reflections (:func:`cheap_rendering`), and episodes are
spread over worker processes when the machine has cores to spare (the training process waits for the round).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pref_brl.preferences import Episode, EpisodeStore

CLIP_SIZE = 256
"""clip frames are CLIP_SIZE x CLIP_SIZE pixels"""
REPLAY_ATOL = 1e-4
"""largest difference allowed between a replayed and a stored state"""
MAX_WORKERS = 4
"""most worker processes a round's clips are spread over"""


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


def cheap_rendering(model) -> None:
    """Turn off what costs most in software rendering and least in a clip a person judges: multisample
    anti-aliasing, shadows and reflections (4x to 8x faster with OSMesa; bodies, floor and colours unchanged).
    Call before the first frame: the anti-aliasing setting is read when the GL buffer is made."""
    model.vis.quality.offsamples = 0
    model.light_castshadow[:] = 0
    model.mat_reflectance[:] = 0


@dataclass(frozen=True)
class ClipJob:
    """Every clip of one round cut from one episode: rendered in a single replay of that episode."""

    episode: Episode
    reset_seed: int
    clips: tuple[tuple[int, Path], ...]
    """(first step, MP4 path) of each clip"""
    length: int
    """frames per clip"""

    @property
    def cost(self) -> int:
        """Replayed steps plus rendered frames (a frame costs about as much as 50 steps)."""
        return max(start for start, _ in self.clips) + self.length + 50 * self.length * len(self.clips)


class ClipRenderer:
    """Renders segments of one environment (a rendering copy, made on first use), a round's clips grouped by
    episode and spread over worker processes where there are cores to spare (`workers`, 0: one per core)."""

    def __init__(self, env_name: str, goal_mode: str, max_episode_steps: int, size: int = CLIP_SIZE,
                 workers: int = 0) -> None:
        self.env_name, self.goal_mode, self.limit, self.size = env_name, goal_mode, max_episode_steps, size
        self.workers = workers or min(os.cpu_count() or 1, MAX_WORKERS)
        self._env = None
        self._pool: ProcessPoolExecutor | None = None

    @property
    def env(self):
        if self._env is None:
            self._env = self._make_env()
        return self._env

    def _make_env(self):
        from pref_brl.envs import make_env

        env = make_env(self.env_name, 0, goal_mode=self.goal_mode, render_mode="rgb_array",
                       max_episode_steps=self.limit or None, render_size=(self.size, self.size))
        cheap_rendering(env.unwrapped.mj_model)
        return env

    def check(self) -> None:
        """Fail at the start of a run, not at its first feedback round, when MuJoCo cannot render here (on a copy
        closed again at once: the copy that renders clips is made on the thread that renders them)."""
        from pref_brl.video import check_rendering

        check_rendering(self._make_env, 0, "--teacher human: MuJoCo cannot render clips")

    def frames(self, ref: SegmentRef, length: int) -> list[np.ndarray]:
        """The rendered frames of steps start .. start+length-1 of `ref`'s episode, replayed and checked."""
        return self.episode_frames(ref.episode, ref.reset_seed, [ref.start], length)[0]

    def episode_frames(self, episode: Episode, reset_seed: int, starts: list[int], length: int
                       ) -> list[list[np.ndarray]]:
        """The frames of every window [start, start+length) of one episode, in one replay from its reset seed;
        each replayed state is checked against the stored one (ReplayError)."""
        env = self.env
        obs, _ = env.reset(seed=reset_seed)
        out: list[list[np.ndarray]] = [[] for _ in starts]
        for t in range(max(starts) + length):
            inside = [i for i, start in enumerate(starts) if start <= t < start + length]
            if inside:
                if not np.allclose(obs, episode.obs[t], atol=REPLAY_ATOL, rtol=0):
                    raise ReplayError(f"replaying the episode of reset seed {reset_seed} diverges at step {t} "
                                      f"(max difference {np.abs(obs - episode.obs[t]).max():.3g})")
                frame = np.asarray(env.render())
                for i in inside:
                    out[i].append(frame)
            obs, *_ = env.step(episode.act[t])
        return out

    def write(self, ref: SegmentRef, length: int, path: Path) -> int:
        """Write the segment's clip to `path` (atomically); returns the number of frames."""
        return self.write_job(ClipJob(ref.episode, ref.reset_seed, ((ref.start, path),), length))

    def write_job(self, job: ClipJob) -> int:
        """Write every clip of `job` (one replay); returns the number of frames written."""
        starts = [start for start, _ in job.clips]
        fps = int(self.env.metadata.get("render_fps", 30))
        for (_, path), frames in zip(job.clips, self.episode_frames(job.episode, job.reset_seed, starts, job.length)):
            write_mp4(frames, path, fps)
        return job.length * len(job.clips)

    def write_round(self, segments: list[tuple[SegmentRef, Path]], length: int) -> int:
        """Write the clips of a round: one replay per episode, episodes spread over the worker processes
        (started on the first round that has two episodes or more, kept until close); returns frames written."""
        jobs: dict[int, ClipJob] = {}
        for ref, path in segments:
            job = jobs.get(id(ref.episode))
            clips = (job.clips if job else ()) + ((ref.start, path),)
            jobs[id(ref.episode)] = ClipJob(ref.episode, ref.reset_seed, clips, length)
        ordered = sorted(jobs.values(), key=lambda j: -j.cost)  # longest first: the workers finish together
        if self.workers < 2 or len(ordered) < 2:
            return sum(self.write_job(job) for job in ordered)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker,
                                             initargs=(self.env_name, self.goal_mode, self.limit, self.size))
        return sum(self._pool.map(_write_job, ordered))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        if self._env is not None:
            self._env.close()
            self._env = None


_WORKER: ClipRenderer | None = None
"""A worker process's own renderer (one environment copy, kept between rounds)."""


def _start_worker(env_name: str, goal_mode: str, limit: int, size: int) -> None:
    global _WORKER
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    _WORKER = ClipRenderer(env_name, goal_mode, limit, size, workers=1)


def _exit_with_parent(parent: int) -> None:
    """A worker whose run was killed (SIGKILL leaves no time to shut the pool down) would wait for jobs
    forever: it ends itself within a second of its parent's death (it is then re-parented)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _write_job(job: ClipJob) -> int:
    assert _WORKER is not None, "a clip worker renders only after its initializer ran"
    return _WORKER.write_job(job)


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
