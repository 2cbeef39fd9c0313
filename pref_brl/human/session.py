"""Labelling by hand inside a training run (`teacher="human"`): offer a round's queries, wait, fold labels in.

The training process owns one :class:`HumanSession`: its label database, clip renderer and labelling server.
A round's pairs are written to `human/round<r>/pairs.npz` and their clips next to them before they are
offered; the labels the loop takes are read back from the database and those files, so a resumed run uses
exactly the pairs that were labelled, and re-offers only the queries still unlabelled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pref_brl.config import TrainConfig
from pref_brl.human.clips import ClipRenderer, locate
from pref_brl.human.db import HUMAN_DIR, LabelDB, QueryRow, db_path
from pref_brl.human.server import LabelServer
from pref_brl.preferences import EpisodeStore, SegmentPairs
from pref_brl.validate import ConfigError

POLL_S = 0.25
"""how often a waiting loop looks at the database"""
REMIND_S = 60.0
"""how often a waiting loop repeats its progress line"""
PAIR_KEYS = ("obs0", "act0", "rew0", "obs1", "act1", "rew1")


class LabellingInterrupted(Exception):
    """A signal asked the run to stop while it waited for labels (the labels given so far are kept)."""


class HumanSession:
    """The label database, clip renderer and labelling server of one run folder."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, folded: set[str]) -> None:
        self.cfg, self.dir, self.folded = cfg, Path(run_dir) / HUMAN_DIR, folded
        self.db = LabelDB(db_path(run_dir), create=True)
        self.db.set_meta(env=cfg.env, max_feedback=cfg.max_feedback, segment=cfg.segment, waiting="")
        self.db.reopen_except(folded)
        self.renderer = ClipRenderer(cfg.env, cfg.goal_mode, cfg.max_episode_steps)
        self.renderer.check()
        try:
            self.server = LabelServer(run_dir, cfg.label_host, cfg.label_port).start()
        except OSError as exc:
            self.renderer.close()
            reason = exc.strerror or exc
            raise ConfigError(f"cannot serve the labelling page on {cfg.label_host}:{cfg.label_port} ({reason}); "
                              "choose another --label-port (0: any free port) or --label-host") from None
        self.render_seconds, self.clips_rendered = 0.0, 0
        print(f"labelling page: {self.server.url}", flush=True)

    # -------------------------------------------------------------------------------------------- offer
    def offer(self, round_: int, pairs: SegmentPairs, store: EpisodeStore, audit: np.ndarray | None) -> list[QueryRow]:
        """Render and offer the round's pairs; a round offered before (a resumed run) is offered as it was."""
        rows = self.db.round_rows(round_)
        if rows:
            return rows
        folder = f"round{round_:04d}"
        arrays = {k: getattr(pairs, k).detach().cpu().numpy() for k in PAIR_KEYS}
        (self.dir / folder).mkdir(parents=True, exist_ok=True)
        np.savez(self.dir / folder / "pairs.npz", **arrays)
        rows, refs, segments = [], [], []
        t0 = time.time()
        for i in range(len(pairs)):
            ref = []
            for side in (0, 1):
                seg = locate(store, arrays[f"obs{side}"][i])
                segments.append((seg, self.dir / folder / f"q{i:03d}_{side}.mp4"))
                ref += [seg.agent, seg.reset_seed, seg.start]
            rows.append(QueryRow(f"{round_}-{i}", round_, i, f"{folder}/pairs.npz", f"{folder}/q{i:03d}_0.mp4",
                                 f"{folder}/q{i:03d}_1.mp4"))
            refs.append(tuple(ref))
        self.renderer.write_round(segments, pairs.segment)
        self.render_seconds += time.time() - t0
        self.clips_rendered += 2 * len(pairs)
        audit_list = [None] * len(rows) if audit is None else [None if np.isnan(a) else float(a) for a in audit]
        self.db.add_queries(rows, refs, audit_list)
        return rows

    # -------------------------------------------------------------------------------------------- take
    def wait(self, round_: int, stopping: Callable[[], bool]) -> None:
        """Block until every query of `round_` is labelled; LabellingInterrupted when `stopping()` turns true."""
        rows = self.db.round_rows(round_)
        last_line, last_done = 0.0, -1
        self.db.set_meta(waiting="training waits for this round")
        try:
            while True:
                labels = self.db.labels()
                done = sum(r.qid in labels for r in rows)
                if done == len(rows):
                    return
                if done != last_done or time.time() - last_line > REMIND_S:
                    print(f"feedback round {round_}: waiting for labels, {done} of {len(rows)} in this round, "
                          f"{len(labels)} of {self.cfg.max_feedback} in the budget; label at {self.server.url}",
                          flush=True)
                    last_line, last_done = time.time(), done
                if stopping():
                    raise LabellingInterrupted(f"stopped while waiting for the labels of round {round_}")
                time.sleep(POLL_S)
        finally:
            self.db.set_meta(waiting="")

    def take(self) -> tuple[SegmentPairs | None, np.ndarray, list[str]]:
        """Every labelled query not yet taken (pairs, labels with NaN for skipped, qids); closes them."""
        taken = self.db.take(self.folded)
        self.folded.update(q for q, *_ in taken)
        if not taken:
            return None, np.zeros(0, dtype=np.float32), []
        cache: dict[str, dict[str, np.ndarray]] = {}
        for _, file, _, _ in taken:
            if file not in cache:
                with np.load(self.dir / file) as data:
                    cache[file] = {k: data[k] for k in PAIR_KEYS}
        pairs = SegmentPairs(*(torch.from_numpy(np.stack([cache[f][k][i] for _, f, i, _ in taken]))
                               for k in PAIR_KEYS))
        labels = np.array([label for *_, label in taken], dtype=np.float32)
        return pairs, labels, [q for q, *_ in taken]

    def agreement(self) -> dict[str, float]:
        """`feedback/human_oracle_agreement`: the share of taken, unskipped human labels the audit teacher shares."""
        pairs = self.db.audit_pairs(sorted(self.folded))
        if not pairs:
            return {}
        return {"feedback/human_oracle_agreement": float(np.mean([h == a for h, a in pairs]))}

    def close(self) -> None:
        self.server.stop()
        self.renderer.close()
