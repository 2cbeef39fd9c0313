"""The labelling server: one page, its clips and a small JSON API over the run's label database.

Built on the standard library's `http.server.ThreadingHTTPServer` (docs/human.md says why): it runs in a
daemon thread of the training process, or alone under `pref-brl-label RUN_DIR`. Every request must carry the
server's random access token (`?token=...` or an `X-Token` header), compared in constant time; anything else
is answered 403. It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import hmac
import json
import mimetypes
import re
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pref_brl.human.db import LabelConflict, LabelDB

INSTRUCTION = "Which clip shows the better behaviour for the task? Both loop in sync."
GOALS = {
    "dmc": "Good behaviour: the body moves forward, fast, and stays upright; falling, lying still or going backwards "
           "is worse.",
    "metaworld": "Good behaviour: the arm gets further with the task, {task}: it reaches the object, grasps or "
                 "pushes it and brings it to the goal; further, and sooner, is better.",
}
"""What good behaviour looks like, one line per env family (the page shows it under the task)."""


def goal_line(env: str) -> str:
    """The good-behaviour line of `env`'s family; empty for an env the page does not know."""
    if env.startswith("metaworld_"):
        return GOALS["metaworld"].format(task=env.removeprefix("metaworld_").rsplit("-v", 1)[0].replace("-", " "))
    from pref_brl.envs import DMC_ENVS

    return GOALS["dmc"] if env in DMC_ENVS else ""
MAX_BODY = 4096
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class LabelServer(ThreadingHTTPServer):
    """Serves the page of the run folder `run_dir` (its label database must exist)."""

    daemon_threads = True

    def __init__(self, run_dir: Path | str, host: str = "127.0.0.1", port: int = 0, token: str = "") -> None:
        self.run_dir = Path(run_dir)
        self.human_dir = self.run_dir / "human"
        self.db = LabelDB(self.human_dir / "labels.sqlite")
        self.token = token or secrets.token_urlsafe(24)
        self.page = files("pref_brl.human").joinpath("page.html").read_text(encoding="utf-8")
        super().__init__((host, port), Handler)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("localhost" if host == "::" else host)
        return f"http://{shown}:{port}/?token={self.token}"

    def start(self) -> LabelServer:
        """Serve from a daemon thread."""
        self.thread = threading.Thread(target=self.serve_forever, name="label-server", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.shutdown()
            self.thread.join()
        self.server_close()

    def state(self, prefer: str = "") -> dict[str, Any]:
        """What the page shows: the task, progress, and the next query (None when nothing is open)."""
        meta, progress = self.db.meta(), self.db.progress()
        row = self.db.next_open(prefer)
        query = None if row is None else {"qid": row.qid, "round": row.round, "idx": row.idx,
                                          "left": f"/clips/{row.clip0}", "right": f"/clips/{row.clip1}"}
        return {"task": meta.get("env", "?"), "goal": goal_line(meta.get("env", "")), "instruction": INSTRUCTION,
                "budget": int(meta.get("max_feedback", 0)),
                "waiting": meta.get("waiting", ""), **progress, "query": query}


class Handler(BaseHTTPRequestHandler):
    server: LabelServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # the training's progress lines are the log

    def authorised(self) -> bool:
        given = parse_qs(urlsplit(self.path).query).get("token", [""])[0] or self.headers.get("X-Token", "")
        if hmac.compare_digest(given.encode(), self.server.token.encode()):
            return True
        self.reply(HTTPStatus.FORBIDDEN, b"forbidden: open the URL with its token, as printed by the run\n",
                   "text/plain; charset=utf-8")
        return False

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if not self.authorised():
            return
        parts = urlsplit(self.path)
        if parts.path in ("/", "/index.html"):
            self.reply(HTTPStatus.OK, self.server.page.encode(), "text/html; charset=utf-8")
        elif parts.path == "/api/state":
            prefer = parse_qs(parts.query).get("qid", [""])[0]
            self.json(HTTPStatus.OK, self.server.state(prefer))
        elif parts.path.startswith("/clips/"):
            self.clip(parts.path.removeprefix("/clips/"))
        else:
            self.reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        if not self.authorised():
            return
        path = urlsplit(self.path).path
        try:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(min(length, MAX_BODY)) or b"{}")
            labeller = str(body.get("labeller", "anonymous"))[:64]
            if path == "/api/label":
                self.server.db.give(str(body["qid"]), str(body["choice"]), labeller)
                self.json(HTTPStatus.OK, {"ok": True, **self.server.state()})
            elif path == "/api/undo":
                qid = self.server.db.undo(labeller)
                self.json(HTTPStatus.OK, {"ok": True, "undone": qid, **self.server.state(qid)})
            else:
                self.json(HTTPStatus.NOT_FOUND, {"error": "not found"})
        except LabelConflict as exc:
            self.json(HTTPStatus.CONFLICT, {"error": str(exc), **self.server.state()})
        except (ValueError, KeyError, TypeError) as exc:
            self.json(HTTPStatus.BAD_REQUEST, {"error": f"bad request: {exc}"})

    def clip(self, relative: str) -> None:
        """A clip file under the human folder, with byte ranges (some browsers' video players need them)."""
        root = self.server.human_dir.resolve()
        path = (root / relative).resolve()
        if root not in path.parents or not path.is_file():
            self.reply(HTTPStatus.NOT_FOUND, b"no such clip\n", "text/plain; charset=utf-8")
            return
        data = path.read_bytes()
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        match = _RANGE.match(self.headers.get("Range", ""))
        if match is None or not any(match.groups()):
            self.reply(HTTPStatus.OK, data, kind)
            return
        first, last = match.groups()
        start = int(first) if first else max(len(data) - int(last), 0)
        end = min(int(last), len(data) - 1) if first and last else len(data) - 1
        extra = {"Content-Range": f"bytes {start}-{end}/{len(data)}"}
        self.reply(HTTPStatus.PARTIAL_CONTENT, data[start: end + 1], kind, extra)

    def json(self, status: HTTPStatus, value: dict[str, Any]) -> None:
        self.reply(status, json.dumps(value).encode(), "application/json")

    def reply(self, status: HTTPStatus, body: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Accept-Ranges", "bytes")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
