"""The label database of a run labelled by hand: `<run_dir>/human/labels.sqlite`, SQLite in WAL mode.

Every label is committed the moment it is given, so neither a killed training process nor a killed labelling
server loses one. Labels are never deleted: undo stamps `undone_at` on the row. A query is `closed` once the
training loop has taken its label into the reward model (then it can no longer be relabelled or undone).
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DB_FILE = "labels.sqlite"
HUMAN_DIR = "human"
CHOICES: dict[str, float] = {"left": 0.0, "right": 1.0, "equal": 0.5, "skip": math.nan}
"""button -> label: the left clip is σ⁰, the right clip σ¹ (1.0: σ¹ preferred; NaN: skipped)"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queries (
    qid TEXT PRIMARY KEY, round INTEGER NOT NULL, idx INTEGER NOT NULL,
    pairs_file TEXT NOT NULL, clip0 TEXT NOT NULL, clip1 TEXT NOT NULL,
    agent0 TEXT, seed0 INTEGER, start0 INTEGER, agent1 TEXT, seed1 INTEGER, start1 INTEGER,
    audit_label REAL, offered_at REAL NOT NULL, closed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT, qid TEXT NOT NULL REFERENCES queries(qid),
    choice TEXT NOT NULL, label REAL, labeller TEXT NOT NULL, given_at REAL NOT NULL, undone_at REAL);
CREATE INDEX IF NOT EXISTS labels_qid ON labels(qid);
"""


class LabelConflict(Exception):
    """A label or undo that the database refuses (already labelled, closed, nothing to undo)."""


@dataclass(frozen=True)
class QueryRow:
    """One offered query: which round, where its pair data and clips lie, how its segments are reproduced."""

    qid: str
    """`<round>-<index>`"""
    round: int
    """the feedback round that offered it"""
    idx: int
    """its row in the round's pairs file"""
    pairs_file: str
    """the round's pair arrays, relative to the human folder"""
    clip0: str
    """the left clip (σ⁰), relative to the human folder"""
    clip1: str
    """the right clip (σ¹), relative to the human folder"""


def db_path(run_dir: Path | str) -> Path:
    return Path(run_dir) / HUMAN_DIR / DB_FILE


class LabelDB:
    """Opens one connection per call site (SQLite connections stay in the thread that made them)."""

    def __init__(self, path: Path | str, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise FileNotFoundError(f"{self.path} does not exist")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")  # kept by the file: every later connection uses it
            con.executescript(SCHEMA)
        finally:
            con.close()

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in one immediate transaction: committed on success, rolled back on an error."""
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            con.execute("PRAGMA synchronous=FULL")
            con.execute("BEGIN IMMEDIATE")
            yield con
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    # ---------------------------------------------------------------------------------------- meta
    def set_meta(self, **values: object) -> None:
        with self.connect() as con:
            con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in values.items()])

    def meta(self) -> dict[str, str]:
        with self.connect() as con:
            return dict(con.execute("SELECT key, value FROM meta").fetchall())

    # ---------------------------------------------------------------------------------------- queries
    def round_rows(self, round_: int) -> list[QueryRow]:
        with self.connect() as con:
            rows = con.execute("SELECT qid, round, idx, pairs_file, clip0, clip1 FROM queries WHERE round = ? "
                               "ORDER BY idx", (round_,)).fetchall()
        return [QueryRow(*r) for r in rows]

    def add_queries(self, rows: list[QueryRow], refs: list[tuple], audit: list[float | None]) -> None:
        """Offer a round's queries; `refs[i]` = (agent0, seed0, start0, agent1, seed1, start1)."""
        now = time.time()
        with self.connect() as con:
            con.executemany(
                "INSERT OR IGNORE INTO queries (qid, round, idx, pairs_file, clip0, clip1, agent0, seed0, start0, "
                "agent1, seed1, start1, audit_label, offered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.qid, r.round, r.idx, r.pairs_file, r.clip0, r.clip1, *ref, a, now)
                 for r, ref, a in zip(rows, refs, audit, strict=True)])

    def reopen_except(self, folded: set[str]) -> None:
        """Open every query not in `folded` (a resumed run has not used labels taken after its checkpoint)."""
        with self.connect() as con:
            closed = [q for (q,) in con.execute("SELECT qid FROM queries WHERE closed = 1") if q not in folded]
            con.executemany("UPDATE queries SET closed = 0 WHERE qid = ?", [(q,) for q in closed])

    # ---------------------------------------------------------------------------------------- labels
    def give(self, qid: str, choice: str, labeller: str) -> None:
        """Record a label; LabelConflict if the query is unknown, closed or already labelled."""
        if choice not in CHOICES:
            raise ValueError(f"unknown choice {choice!r}; known: {', '.join(CHOICES)}")
        label = CHOICES[choice]
        with self.connect() as con:
            row = con.execute("SELECT closed FROM queries WHERE qid = ?", (qid,)).fetchone()
            if row is None:
                raise LabelConflict(f"no query {qid!r}")
            if row[0]:
                raise LabelConflict(f"query {qid} is closed: training has used its label")
            if _active(con, qid) is not None:
                raise LabelConflict(f"query {qid} is already labelled")
            con.execute("INSERT INTO labels (qid, choice, label, labeller, given_at) VALUES (?, ?, ?, ?, ?)",
                        (qid, choice, None if math.isnan(label) else label, labeller, time.time()))

    def undo(self, labeller: str) -> str:
        """Undo `labeller`'s last label on an open query; returns its qid (LabelConflict: nothing to undo)."""
        with self.connect() as con:
            row = con.execute(
                "SELECT l.id, l.qid FROM labels l JOIN queries q ON q.qid = l.qid WHERE l.labeller = ? AND "
                "l.undone_at IS NULL AND q.closed = 0 ORDER BY l.id DESC LIMIT 1", (labeller,)).fetchone()
            if row is None:
                raise LabelConflict("nothing to undo")
            con.execute("UPDATE labels SET undone_at = ? WHERE id = ?", (time.time(), row[0]))
            return str(row[1])

    def labels(self) -> dict[str, float]:
        """qid -> the active label of every labelled query (NaN: skipped)."""
        with self.connect() as con:
            rows = con.execute("SELECT qid, label FROM labels WHERE undone_at IS NULL").fetchall()
        return {q: math.nan if v is None else float(v) for q, v in rows}

    def take(self, exclude: set[str]) -> list[tuple[str, str, int, float]]:
        """(qid, pairs file, row, label) of every labelled query not in `exclude`, oldest first; closes them in
        the same transaction (a label cannot be undone once taken)."""
        with self.connect() as con:
            rows = con.execute("SELECT q.qid, q.pairs_file, q.idx, l.label FROM queries q JOIN labels l ON "
                               "l.qid = q.qid AND l.undone_at IS NULL ORDER BY q.round, q.idx").fetchall()
            rows = [r for r in rows if r[0] not in exclude]
            con.executemany("UPDATE queries SET closed = 1 WHERE qid = ?", [(r[0],) for r in rows])
        return [(q, f, int(i), math.nan if v is None else float(v)) for q, f, i, v in rows]

    def audit_pairs(self, qids: list[str]) -> list[tuple[float, float]]:
        """(human label, audit label) of the given labelled, unskipped queries that have an audit label."""
        with self.connect() as con:
            rows = con.execute("SELECT q.qid, l.label, q.audit_label FROM labels l JOIN queries q ON q.qid = l.qid "
                               "WHERE l.undone_at IS NULL AND l.label IS NOT NULL AND q.audit_label IS NOT NULL"
                               ).fetchall()
        wanted = set(qids)
        return [(float(h), float(a)) for q, h, a in rows if q in wanted]

    # ---------------------------------------------------------------------------------------- the page
    def next_open(self, prefer: str = "") -> QueryRow | None:
        """The query to show: `prefer` if open and unlabelled, else the oldest open unlabelled one."""
        sql = ("SELECT qid, round, idx, pairs_file, clip0, clip1 FROM queries q WHERE closed = 0 AND NOT EXISTS "
               "(SELECT 1 FROM labels l WHERE l.qid = q.qid AND l.undone_at IS NULL)")
        with self.connect() as con:
            row = con.execute(sql + " AND qid = ?", (prefer,)).fetchone() if prefer else None
            row = row or con.execute(sql + " ORDER BY round, idx LIMIT 1").fetchone()
        return QueryRow(*row) if row else None

    def progress(self) -> dict[str, int]:
        """Counts for the page: the newest round's size and labels, labels given over all rounds."""
        with self.connect() as con:
            last = con.execute("SELECT MAX(round) FROM queries").fetchone()[0]
            size, done = con.execute(
                "SELECT COUNT(*), SUM(EXISTS (SELECT 1 FROM labels l WHERE l.qid = q.qid AND l.undone_at IS NULL)) "
                "FROM queries q WHERE round = ?", (last,)).fetchone()
            total = con.execute("SELECT COUNT(DISTINCT qid) FROM labels WHERE undone_at IS NULL").fetchone()[0]
        return {"round": -1 if last is None else int(last), "round_size": int(size), "round_done": int(done or 0),
                "given": int(total)}


def _active(con: sqlite3.Connection, qid: str) -> tuple | None:
    return con.execute("SELECT id FROM labels WHERE qid = ? AND undone_at IS NULL", (qid,)).fetchone()
