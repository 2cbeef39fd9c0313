"""Labelling by hand: label database, server and token, clips by replay, the page in a browser, and the
training loop that waits for (or, async, folds in) human labels and survives a kill mid-round."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from pref_brl.human.clips import ClipRenderer, ReplayError, SegmentRef, locate, write_mp4
from pref_brl.human.db import LabelDB, QueryRow, db_path
from pref_brl.human.server import LabelServer, goal_line
from pref_brl.preferences import Episode, EpisodeStore

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "figures" / "labelling_page.png"
"""Rewritten by the browser test only with PREF_BRL_UPDATE_SCREENSHOT=1 (tests leave tracked files alone)."""


def can_render() -> bool:
    renderer = ClipRenderer("walker_walk", "fresh", 20, size=32)
    try:
        renderer.check()
    except Exception:  # noqa: BLE001 - any GL failure means no rendering here
        return False
    renderer.close()
    return True


needs_rendering = pytest.mark.skipif(not can_render(), reason="MuJoCo cannot render here (MUJOCO_GL=osmesa and "
                                                              "libosmesa6, or egl)")


class Client:
    """The page's JSON API over HTTP, as a labeller's browser uses it."""

    def __init__(self, url: str) -> None:
        self.base, self.token = url.split("/?token=")

    def get(self, path: str, token: bool = True) -> tuple[int, bytes]:
        sep = "&" if "?" in path else "?"
        try:
            with urllib.request.urlopen(f"{self.base}{path}{sep}token={self.token}" if token else self.base + path,
                                        timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(f"{self.base}{path}?token={self.token}", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def state(self) -> dict:
        return json.loads(self.get("/api/state")[1])

    def label(self, qid: str, choice: str, who: str = "tester") -> int:
        return self.post("/api/label", {"qid": qid, "choice": choice, "labeller": who})[0]


def random_episode(env_name: str = "walker_walk", steps: int = 60, seed: int = 5) -> Episode:
    from pref_brl.envs import make_env

    env = make_env(env_name, 0, max_episode_steps=steps)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows, acts = [], []
    for _ in range(steps):
        act = rng.uniform(-1, 1, env.action_space.shape[0]).astype(np.float32)
        rows.append(obs)
        acts.append(act)
        obs, *_ = env.step(act)
    return Episode(obs=np.array(rows), act=np.array(acts), true_reward=np.zeros(steps), reset_seed=seed)


def offered_run(tmp_path: Path, n: int = 3, real: bool = False) -> Path:
    """A run folder with one offered round of `n` queries (clips of a real walker episode, or noise)."""
    run = tmp_path / "run"
    db = LabelDB(db_path(run), create=True)
    db.set_meta(env="walker_walk", max_feedback=10, segment=10)
    human = run / "human"
    episode = random_episode() if real else None
    renderer = ClipRenderer("walker_walk", "fresh", 60) if real else None
    rows = []
    for i in range(n):
        for side in (0, 1):
            path = human / "round0000" / f"q{i:03d}_{side}.mp4"
            if renderer is not None:
                renderer.write(SegmentRef("A", 5, 5 * i + 15 * side, episode), 25, path)
            else:
                frames = [np.full((64, 64, 3), 40 * (i + side) + 4 * t, dtype=np.uint8) for t in range(10)]
                write_mp4(frames, path, 20)
        rows.append(QueryRow(f"0-{i}", 0, i, "round0000/pairs.npz", f"round0000/q{i:03d}_0.mp4",
                             f"round0000/q{i:03d}_1.mp4"))
    if renderer is not None:
        renderer.close()
    db.add_queries(rows, [("A", 5, 0, "A", 5, 20)] * n, [1.0] * n)
    return run


@pytest.fixture
def served(tmp_path: Path):
    run = offered_run(tmp_path)
    server = LabelServer(run).start()
    yield run, server
    server.stop()


# ------------------------------------------------------------------------------------------------ server
def test_the_page_says_what_good_behaviour_is_for_each_env_family() -> None:
    from pref_brl.envs import KNOWN_ENVS

    assert all(goal_line(env) for env in KNOWN_ENVS)
    assert "moves forward" in goal_line("cheetah_run")
    assert "door open" in goal_line("metaworld_door-open-v3") and "drawer open" in goal_line("metaworld_drawer-open-v3")
    assert goal_line("unknown") == ""


def test_token_is_required_and_the_page_and_clips_load(served) -> None:
    run, server = served
    client = Client(server.url)
    assert server.server_address[0] == "127.0.0.1"
    assert client.get("/", token=False)[0] == 403
    assert client.get("/?token=wrong", token=False)[0] == 403
    assert client.get("/api/state?token=", token=False)[0] == 403
    status, page = client.get("/")
    assert status == 200 and b"undo last" in page and b"http" not in page.replace(b"http-equiv", b"")  # no CDN
    state = client.state()
    assert state["task"] == "walker_walk" and state["round_size"] == 3 and state["query"]["qid"] == "0-0"
    assert "moves forward" in state["goal"] and "upright" in state["goal"]
    status, clip = client.get(state["query"]["left"])
    assert status == 200 and clip[4:8] == b"ftyp"
    request = urllib.request.Request(f"{client.base}{state['query']['right']}?token={client.token}",
                                     headers={"Range": "bytes=0-99"})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 206 and len(r.read()) == 100
    assert client.get("/clips/../labels.sqlite")[0] == 404


def test_labels_undo_and_closing(served) -> None:
    run, server = served
    client, db = Client(server.url), LabelDB(db_path(run))
    assert client.label("0-0", "left") == 200
    assert client.label("0-0", "right") == 409  # already labelled
    assert client.label("0-1", "sideways") == 400
    assert client.label("0-1", "skip") == 200
    assert set(db.labels()) == {"0-0", "0-1"} and np.isnan(db.labels()["0-1"]) and db.labels()["0-0"] == 0.0
    status, body = client.post("/api/undo", {"labeller": "tester"})
    assert status == 200 and body["undone"] == "0-1" and body["query"]["qid"] == "0-1"
    assert set(db.labels()) == {"0-0"}
    assert client.post("/api/undo", {"labeller": "someone else"})[0] == 409
    assert [q for q, *_ in db.take(set())] == ["0-0"]
    assert client.post("/api/undo", {"labeller": "tester"})[0] == 409  # taken by training: closed
    assert client.label("0-0", "right") == 409
    assert client.state()["given"] == 1


# ------------------------------------------------------------------------------------------------ clips
@needs_rendering
def test_replay_reproduces_a_segment_and_catches_divergence(tmp_path: Path) -> None:
    episode = random_episode(steps=40)
    store = EpisodeStore(5)
    store.add(random_episode(steps=40, seed=6))
    store.add(episode)
    ref = locate(store, episode.obs[12:22])
    assert (ref.reset_seed, ref.start) == (5, 12)
    renderer = ClipRenderer("walker_walk", "fresh", 40, size=64)
    try:
        frames = renderer.frames(ref, 10)
        assert len(frames) == 10 and frames[0].shape == (64, 64, 3)
        episode.act[3] += 0.5
        with pytest.raises(ReplayError):
            renderer.frames(ref, 10)
    finally:
        renderer.close()


@needs_rendering
def test_a_round_renders_each_episode_once_and_in_worker_processes_like_clip_by_clip(tmp_path: Path) -> None:
    import imageio.v2 as imageio

    from pref_brl.human.clips import ClipJob

    episodes = [random_episode(steps=40, seed=s) for s in (5, 6)]
    renderer = ClipRenderer("walker_walk", "fresh", 40, size=64, workers=2)
    try:
        assert renderer.env.unwrapped.mj_model.light_castshadow.sum() == 0  # cheap rendering settings
        alone = [renderer.frames(SegmentRef("A", e.reset_seed, start, e), 10) for e in episodes for start in (3, 8, 25)]
        together = [f for e in episodes for f in renderer.episode_frames(e, e.reset_seed, [3, 8, 25], 10)]
        assert all(len(f) == 10 for f in together)
        assert all(np.array_equal(a, b)
                   for x, y in zip(alone, together, strict=True) for a, b in zip(x, y, strict=True))
        segments = [(SegmentRef("A", e.reset_seed, start, e), tmp_path / f"e{e.reset_seed}_{start}.mp4")
                    for e in episodes for start in (3, 8, 25)]
        assert renderer.write_round(segments, 10) == 60  # two episodes: the worker processes render them
        for _, path in segments:
            with imageio.get_reader(path) as reader:
                assert reader.count_frames() == 10
        job = ClipJob(episodes[0], 5, ((3, tmp_path / "one.mp4"),), 10)
        assert renderer.write_job(job) == 10 and (tmp_path / "one.mp4").stat().st_size > 0
    finally:
        renderer.close()


# ------------------------------------------------------------------------------------------------ training
def oracle_choice(run: Path, qid: str) -> str:
    """What the scripted oracle would say about query `qid` (the larger true return wins)."""
    round_, idx = (int(x) for x in qid.split("-"))
    with np.load(run / "human" / f"round{round_:04d}" / "pairs.npz") as pairs:
        return "right" if pairs["rew1"][idx].sum() > pairs["rew0"][idx].sum() else "left"


def wait_for(predicate, timeout: float = 60.0, what: str = "") -> None:
    end = time.time() + timeout
    while not predicate():
        assert time.time() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def offered(run: Path, round_: int = 0, n: int = 4) -> bool:
    return db_path(run).exists() and len(LabelDB(db_path(run)).round_rows(round_)) == n


@needs_rendering
def test_training_waits_for_its_round_and_goes_on_once_labelled(tiny) -> None:
    from pref_brl.logger import read_scalars
    from pref_brl.trainer import Trainer

    cfg = tiny(method="pebble", teacher="human", audit_teacher="oracle", steps=400, max_feedback=4)
    trainer = Trainer(cfg, progress=False)
    run = trainer.run_dir
    thread = threading.Thread(target=trainer.train, daemon=True)
    thread.start()
    wait_for(lambda: offered(run), what="round 0 to be offered")
    time.sleep(0.5)
    assert thread.is_alive() and trainer.step == 300  # waiting for its labels
    server = LabelServer(run).start()  # a second page, as `pref-brl-label RUN_DIR` serves it
    try:
        client = Client(server.url)
        assert "waits" in client.state()["waiting"]
        while (query := client.state()["query"]) is not None:
            assert client.label(query["qid"], oracle_choice(run, query["qid"])) == 200
    finally:
        server.stop()
    thread.join(60)
    assert not thread.is_alive() and trainer.step == 400
    feedback = [r for r in read_scalars(run) if "feedback/total" in r]
    assert feedback[0]["feedback/total"] == 4 and feedback[0]["feedback/human_oracle_agreement"] == 1.0
    assert feedback[0]["feedback/label_wait_s"] >= 0.5  # it waited at least the half second slept above
    assert len(LabelDB(db_path(run)).labels()) == 4


def test_progress_rate_and_eta_leave_out_the_time_spent_waiting_for_labels(monkeypatch) -> None:
    from pref_brl import logger

    now = [1000.0]
    monkeypatch.setattr(logger.time, "time", lambda: now[0])
    progress = logger.Progress(total=1000, start=0, every=100, enabled=False)
    now[0] += 100.0  # 100 s, of which 50 s waiting for a person
    progress.exclude(50.0)
    assert progress.prefix(100) == "[     100/1000]    2.0 steps/s ETA 7m"  # 900 steps at 2 steps/s: 450 s


@needs_rendering
def test_async_training_takes_labels_at_the_next_round(tiny, monkeypatch) -> None:
    from pref_brl.human.session import HumanSession
    from pref_brl.logger import read_scalars
    from pref_brl.trainer import Trainer

    offer = HumanSession.offer

    def offer_then_label_round0(self, round_, *args):  # round 0 is answered while training goes on
        rows = offer(self, round_, *args)
        if round_ == 1:
            for row in self.db.round_rows(0)[:3]:
                self.db.give(row.qid, "equal", "later")
        return rows

    monkeypatch.setattr(HumanSession, "offer", offer_then_label_round0)
    cfg = tiny(method="pebble", teacher="human", human_async=True, steps=600, max_feedback=8)
    trainer = Trainer(cfg, progress=False)
    trainer.train()
    rounds = [r for r in read_scalars(trainer.run_dir) if "feedback/total" in r]
    assert [(r["feedback/total"], r["feedback/labeled"]) for r in rounds] == [(4, 0), (8, 3)]
    assert len(trainer.learner.prefs) == 3 and trainer.learner.prefs.labels.eq(0.5).all()


TINY_FLAGS = ["--env", "walker_walk", "--method", "pebble", "--teacher", "human", "--steps", "400",
              "--max-episode-steps", "100", "--num-seed-steps", "100", "--num-unsup-steps", "200",
              "--eval-frequency", "500", "--num-eval-episodes", "1", "--checkpoint-frequency", "200",
              "--log-frequency", "100", "--hidden-dim", "16", "--hidden-depth", "1", "--batch-size", "16",
              "--reward-hidden", "16", "--reward-depth", "1", "--max-feedback", "4", "--reward-batch", "4",
              "--num-interact", "200", "--reward-update", "3", "--segment", "10", "--reset-update", "5",
              "--threads", "1", "--no-compile"]


def start_training(run: Path) -> tuple[subprocess.Popen, str]:
    """`pref-brl-train --teacher human` in a child process; returns it and the URL it printed."""
    child = subprocess.Popen([sys.executable, "-m", "pref_brl.experiments.train", *TINY_FLAGS, "--run-dir", str(run)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in child.stdout:
        found = re.search(r"labelling page: (\S+)", line)
        if found:
            threading.Thread(target=child.stdout.read, daemon=True).start()  # keep the pipe drained
            return child, found.group(1)
    raise AssertionError(f"no URL printed; exit code {child.wait()}")


@needs_rendering
def alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie waiting to be reaped has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_a_killed_run_keeps_its_labels_and_offers_only_the_rest(tmp_path: Path) -> None:
    from pref_brl.logger import read_scalars

    run = tmp_path / "run"
    child, url = start_training(run)
    try:
        wait_for(lambda: offered(run), what="round 0 to be offered")
        client = Client(url)
        first = [client.state()["query"]["qid"] for _ in range(2) if client.label(client.state()["query"]["qid"],
                                                                                 "left") == 200]
        given = LabelDB(db_path(run)).labels()
    finally:
        workers = children_of(child.pid)  # the clip-rendering pool, if it has started
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert len(first) == 2 and len(given) == 2
    assert workers, "the run had started no clip workers to check"
    wait_for(lambda: not any(alive(pid) for pid in workers), what="the killed run's clip workers to end with it")
    child, url = start_training(run)
    try:
        client = Client(url)
        wait_for(lambda: client.state()["round_size"] == 4, what="the round to be offered again")
        state = client.state()
        assert (state["round_done"], state["given"]) == (2, 2)
        rest = []
        while (query := client.state()["query"]) is not None:
            rest.append(query["qid"])
            assert client.label(query["qid"], "right") == 200
        assert len(rest) == 2 and not set(rest) & set(given)
        assert child.wait(90) == 0
    finally:
        if child.poll() is None:
            child.kill()
    labels = LabelDB(db_path(run)).labels()
    assert len(labels) == 4 and all(labels[q] == 0.0 for q in given)
    rounds = [r for r in read_scalars(run) if "feedback/total" in r]
    assert [(r["feedback/total"], r["feedback/labeled"]) for r in rounds] == [(4, 4)]


# ------------------------------------------------------------------------------------------------ browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")


def _browser_missing() -> str:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the browser test needs selenium (pip install -e '.[dev]')"
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "no chromium/chromedriver found (apt-get install chromium chromium-driver)"
    return ""


@pytest.mark.skipif(bool(_browser_missing()), reason=_browser_missing() or "browser found")
def test_the_page_in_a_browser(tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    run = offered_run(tmp_path, n=4, real=can_render())
    server = LabelServer(run).start()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=720,640",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    db = LabelDB(db_path(run))
    try:
        driver.get(server.url.split("?")[0])
        assert "forbidden" in driver.find_element(By.TAG_NAME, "body").text
        driver.get(server.url)
        ready = "return [left, right].map(v => v.readyState >= 2 && v.videoWidth > 0 && !v.error)"
        wait_for(lambda: driver.execute_script(ready) == [True, True], 20, "both clips to load")
        wait_for(lambda: "0 of 4 in this round, 0 of 10 in the budget" in driver.find_element(By.ID, "progress").text,
                 10, "the progress line")
        assert driver.find_element(By.ID, "task").text == "walker_walk"
        time.sleep(0.6)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOT if os.environ.get("PREF_BRL_UPDATE_SCREENSHOT") == "1" else tmp_path / "page.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000  # a rendered page, not an empty image
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.ARROW_RIGHT)
        wait_for(lambda: db.labels().get("0-0") == 1.0, 10, "→ to label right")
        wait_for(lambda: "1 of 4 in this round" in driver.find_element(By.ID, "progress").text, 10, "progress")
        driver.find_element(By.ID, "b-left").click()
        wait_for(lambda: db.labels().get("0-1") == 0.0, 10, "the left button")
        body.send_keys(Keys.ARROW_DOWN)
        wait_for(lambda: db.labels().get("0-2") == 0.5, 10, "↓ to label equal")
        body.send_keys("u")
        wait_for(lambda: "0-2" not in db.labels(), 10, "u to undo")
        wait_for(lambda: driver.execute_script("return current && current.qid") == "0-2", 10, "the undone query")
        body.send_keys(Keys.SPACE)
        wait_for(lambda: "0-2" in db.labels() and np.isnan(db.labels()["0-2"]), 10, "space to skip")
        driver.find_element(By.ID, "b-undo").click()
        wait_for(lambda: "0-2" not in db.labels(), 10, "the undo button")
        driver.find_element(By.ID, "b-equal").click()
        wait_for(lambda: db.labels().get("0-2") == 0.5, 10, "the equal button")
        driver.find_element(By.ID, "b-skip").click()
        wait_for(lambda: "0-3" in db.labels(), 10, "the skip button")
        wait_for(lambda: "Nothing to label" in driver.find_element(By.ID, "message").text, 10, "the end")
    finally:
        driver.quit()
        server.stop()
