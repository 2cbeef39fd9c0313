"""Evaluation videos: one deterministic episode rendered off-screen and written to MP4 with imageio.

MuJoCo renders headless through EGL (GPU machines, or Mesa's software EGL) or OSMesa (CPU: Debian's
`libosmesa6`); `envs` picks a default for MUJOCO_GL before mujoco is imported, and an explicit MUJOCO_GL
wins. Frames are streamed to the encoder (a 1000-step episode at 480x480 would be ~700 MB in memory).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pref_brl.config import TrainConfig
from pref_brl.validate import ConfigError

Policy = Callable[[np.ndarray], np.ndarray]

INSTALL_HINT = ("install the [video] extra (pip install imageio imageio-ffmpeg) and a headless renderer: "
                "MUJOCO_GL=egl on a GPU machine, or apt-get install libosmesa6 and MUJOCO_GL=osmesa on a CPU")


class VideoError(ConfigError):
    """Videos were asked for but cannot be made here; the message says what to install."""


def check_rendering(make: Callable[[], object], seed: int, what: str) -> None:
    """Fail at the start of a run, not at its first video or clip, when MuJoCo cannot render here: one frame of
    a fresh env from `make`, which is closed again on this thread. A rendering context stays bound to the thread
    that made it current, so the env that renders later is made on the thread that renders (a run may train
    on a thread other than the one that built it)."""
    env = None
    try:
        env = make()
        env.reset(seed=seed)
        env.render()
    except Exception as exc:  # noqa: BLE001 - GL errors come in many types
        backend = os.environ.get("MUJOCO_GL", "default")
        raise VideoError(f"{what} (MUJOCO_GL={backend}: {exc}); {INSTALL_HINT}") from None
    finally:
        if env is not None:
            env.close()


def record_episode(env, policy: Policy, path: Path, seed: int, fps: int | None = None) -> int:
    """Run one episode of `policy` on `env` (render_mode="rgb_array") from `reset(seed=seed)` into an MP4.

    Writes to a temporary file first, so a killed run never leaves a truncated video. Returns the number of
    frames (the reset frame plus one per step).
    """
    import imageio.v2 as imageio

    fps = fps or int(env.metadata.get("render_fps", 30))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    frames = 0
    with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=16) as writer:
        obs, _ = env.reset(seed=seed)
        done = False
        while True:
            writer.append_data(np.asarray(env.render()))
            frames += 1
            if done:
                break
            obs, _, terminated, truncated, _ = env.step(policy(obs))
            done = terminated or truncated
    os.replace(tmp, path)
    return frames


class EvalVideos:
    """Records evaluation episodes of a run to <run_dir>/videos/eval_step<step>.mp4.

    Due at every `video_every`-th evaluation (evaluation n happens at step n * eval_frequency) and at the
    last step; a function of the step alone, so a resumed run records the same videos.
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path, seed: int) -> None:
        self.cfg, self.folder, self.seed = cfg, run_dir / "videos", seed
        try:
            import imageio.v2  # noqa: F401
            import imageio_ffmpeg  # noqa: F401
        except ImportError as exc:
            raise VideoError(f"--video-every needs {exc.name}: {INSTALL_HINT}") from None
        check_rendering(self._make_env, self.seed, "--video-every: MuJoCo cannot render")
        self.env = None  # made at the first video, on the thread that records it

    def _make_env(self):
        from pref_brl.envs import make_env

        return make_env(self.cfg.env, self.cfg.seed + 1, goal_mode=self.cfg.goal_mode, render_mode="rgb_array",
                        max_episode_steps=self.cfg.max_episode_steps or None)

    def due(self, step: int) -> bool:
        return video_due(self.cfg, step)

    def record(self, step: int, policy: Policy) -> Path:
        path = self.folder / f"eval_step{step:08d}.mp4"
        if self.env is None:
            self.env = self._make_env()
        record_episode(self.env, policy, path, self.seed)
        return path

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


def video_due(cfg: TrainConfig, step: int) -> bool:
    """Whether the evaluation at `step` is recorded: every `video_every`-th one, and the last."""
    return cfg.video_every > 0 and (step == cfg.steps or step % (cfg.video_every * cfg.eval_frequency) == 0)


def make_eval_videos(cfg: TrainConfig, run_dir: Path, seed: int) -> EvalVideos | None:
    """An EvalVideos for the run, or None when videos are off (`video_every == 0`)."""
    return EvalVideos(cfg, run_dir, seed) if cfg.video_every > 0 else None
