"""`pref-brl-bench --only clips`: how long a labelling round's clips take to render, against a plain renderer.

The round is what `--teacher human` renders on walker: `queries` pairs (both clips of each) of 50 frames at
256x256, cut uniformly from ten 1,000-step episodes of a random policy. Ours is `ClipRenderer.write_round`
(one replay per episode, cheap rendering settings, worker processes on spare cores: what a run does); the
peer renders each clip alone with the environment's own render settings in this process (replay from the
reset seed, render the clip's frames, encode), which is how the labelling page rendered before. The two
alternate, so a busy spell on a shared machine hits both.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from pref_brl.human.clips import CLIP_SIZE, ClipRenderer, SegmentRef, locate, write_mp4
from pref_brl.preferences import Episode, EpisodeStore

ENV = "walker_walk"
EPISODES, EPISODE_STEPS, SEGMENT = 10, 1000, 50


def random_store(seed: int = 0) -> EpisodeStore:
    """EPISODES random-policy walker episodes, each from its own reset seed (as a run's query pool holds)."""
    from pref_brl.envs import make_env

    env = make_env(ENV, seed)
    store, rng = EpisodeStore(EPISODES), np.random.default_rng(seed)
    for i in range(EPISODES):
        obs, _ = env.reset(seed=1000 + i)
        rows = []
        for _ in range(EPISODE_STEPS):
            act = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            nxt, reward, *_ = env.step(act)
            rows.append((obs, act, reward))
            obs = nxt
        o, a, r = map(np.array, zip(*rows))
        store.add(Episode(o, a, r, "A", 1000 + i))
    env.close()
    return store


def peer_round(segments: list[tuple[SegmentRef, Path]], length: int) -> None:
    """Each clip on its own: reset, replay to the segment, render its frames with default settings, encode."""
    from pref_brl.envs import make_env

    env = make_env(ENV, 0, render_mode="rgb_array", render_size=(CLIP_SIZE, CLIP_SIZE))
    try:
        for ref, path in segments:
            env.reset(seed=ref.reset_seed)
            frames = []
            for t in range(ref.start + length):
                if t >= ref.start:
                    frames.append(np.asarray(env.render()))
                env.step(ref.episode.act[t])
            write_mp4(frames, path, int(env.metadata.get("render_fps", 30)))
    finally:
        env.close()


def clip_times(queries: int, rounds: int) -> tuple[str, list[float], list[float]]:
    """(row label, seconds per round of ours, of the plain renderer): `rounds` alternating rounds of `queries`
    pairs each."""
    store = random_store()
    pairs = store.sample_pairs(queries, SEGMENT, np.random.default_rng(1))
    segments = [locate(store, getattr(pairs, f"obs{side}")[i].numpy()) for i in range(queries) for side in (0, 1)]
    ours_s, peer_s = [], []
    renderer = ClipRenderer(ENV, "fresh", 0)
    try:
        renderer.check()
        with tempfile.TemporaryDirectory(prefix="pref-brl-clips-") as tmp:
            for r in range(rounds):
                for name, times, render in (("ours", ours_s, renderer.write_round), ("peer", peer_s, peer_round)):
                    paths = [Path(tmp) / f"{name}{r}_{i}.mp4" for i in range(len(segments))]
                    start = time.perf_counter()
                    render(list(zip(segments, paths)), SEGMENT)
                    times.append(time.perf_counter() - start)
    finally:
        renderer.close()
    label = (f"labelling round: {queries} pairs = {2 * queries} clips of {SEGMENT} frames at {CLIP_SIZE}x{CLIP_SIZE} "
             f"from {EPISODE_STEPS}-step walker episodes ({renderer.workers} worker process(es); ours' first round "
             "includes starting them)")
    return label, ours_s, peer_s
