"""Evaluation videos: MP4 files with the right frames, their schedule, the Trainer hook, clear errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pref_brl import video
from pref_brl.config import TrainConfig
from pref_brl.trainer import Trainer
from pref_brl.validate import ConfigError

FAST = {"compile": False} if "compile" in {f.name for f in dataclasses.fields(TrainConfig)} else {}


@pytest.fixture(scope="module")
def renderable() -> None:
    """Skip (with the reason) where MuJoCo has no headless rendering backend."""
    from pref_brl.envs import make_env

    try:
        env = make_env("walker_walk", 0, render_mode="rgb_array", max_episode_steps=2)
        env.reset(seed=0)
        env.render()
        env.close()
    except Exception as exc:  # noqa: BLE001 - GL failures come in many types
        pytest.skip(f"no headless MuJoCo rendering here: {exc}")


def test_record_episode_writes_every_frame(tmp_path: Path, renderable) -> None:
    import imageio.v3 as iio

    from pref_brl.envs import make_env

    env = make_env("walker_walk", 0, render_mode="rgb_array", max_episode_steps=5)
    path = tmp_path / "videos" / "episode.mp4"
    frames = video.record_episode(env, lambda obs: np.zeros(6, np.float32), path, seed=3)
    assert frames == 6  # the reset frame and one per step
    clip = iio.imread(path)
    assert clip.shape == (6, 480, 480, 3) and clip.std() > 1.0  # decodable, and not a blank image
    assert [p.name for p in path.parent.iterdir()] == ["episode.mp4"]  # no temporary file left


def test_schedule_every_k_evaluations_and_the_last() -> None:
    cfg = TrainConfig(steps=1000, eval_frequency=100, video_every=3)
    assert [s for s in range(0, 1001, 100) if s and video.video_due(cfg, s)] == [300, 600, 900, 1000]
    assert not any(video.video_due(dataclasses.replace(cfg, video_every=0), s) for s in range(100, 1001, 100))


def test_trainer_records_eval_videos(tiny, renderable) -> None:
    import imageio.v3 as iio

    cfg = tiny(steps=200, eval_frequency=100, max_episode_steps=20, checkpoint_frequency=100, video_every=2, **FAST)
    Trainer(cfg, progress=False).train()
    videos = sorted((Path(cfg.run_dir) / "videos").iterdir())
    assert [p.name for p in videos] == ["eval_step00000200.mp4"]
    assert iio.imread(videos[0]).shape[0] == 21


def test_a_run_built_on_one_thread_records_on_the_thread_that_trains_it(tiny, renderable) -> None:
    """A rendering context is bound to the thread it was made current on: the render probe at construction
    must not leave one there for the training thread to trip over (an error, or a crash at its first video)."""
    import threading

    cfg = tiny(steps=200, eval_frequency=100, max_episode_steps=20, checkpoint_frequency=100, video_every=1, **FAST)
    trainer = Trainer(cfg, progress=False)
    errors: list[BaseException] = []

    def train() -> None:
        try:
            trainer.train()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    worker = threading.Thread(target=train)
    worker.start()
    worker.join(120)
    assert not worker.is_alive() and not errors, errors
    assert sorted(p.name for p in (Path(cfg.run_dir) / "videos").iterdir()) == [
        "eval_step00000100.mp4", "eval_step00000200.mp4"]


def test_no_renderer_is_a_clear_config_error(tiny, monkeypatch) -> None:
    class Broken:
        metadata: dict = {}

        def reset(self, seed=None):
            return np.zeros(24), {}

        def render(self):
            raise RuntimeError("gladLoadGL error")

        def close(self):
            pass

    from pref_brl import envs

    monkeypatch.setattr(envs, "make_env", lambda *args, **kwargs: Broken())
    with pytest.raises(ConfigError, match="MuJoCo cannot render .*gladLoadGL error.*libosmesa6"):
        video.EvalVideos(tiny(video_every=1), Path("unused"), seed=0)
