"""Scalar logging: TensorBoard plus a JSONL mirror in the run folder; progress bar or plain lines; copies of a
run's TensorBoard events with the run folder they logged replaced (archives)."""

from __future__ import annotations

import json
import math
import shutil
import struct
import sys
import time
from pathlib import Path, PurePath

from torch import Tensor

from pref_brl.runs import SCALARS_FILE


def _as_float(value: float | Tensor) -> float:
    return float(value.item()) if isinstance(value, Tensor) else float(value)


CONFIG_TAG = "config"
"""TensorBoard text tag of a run's config (its summary's tag is `config/text_summary`)."""
RUN_DIR_KEY = "run_dir"
"""The config field that holds the run folder."""
PATH_KEYS = (RUN_DIR_KEY, "preferences")
"""The config fields that hold paths of the training machine (the run folder, a preference file to seed from)."""


class Logger:
    """Writes scalars (x-axis: env steps) to TensorBoard and to `scalars.jsonl`.

    On resume from step `resume_step`, records after that step (written by the killed run after its last
    checkpoint) are dropped from the JSONL mirror and purged from TensorBoard, so a resumed run's logs are
    the same as an uninterrupted run's.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.path = run_dir / SCALARS_FILE
        if resume_step is not None:
            self._truncate_after(resume_step)
        self.file = self.path.open("a", encoding="utf-8")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        try:
            lines = read_lines(self.path)
        except ValueError as exc:
            from pref_brl.runs import RunFolderError

            raise RunFolderError(f"{exc}: the run's log is damaged; restore or delete the run folder") from None
        kept = [line for line in lines if json.loads(line)["step"] <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        tmp.replace(self.path)

    def log(self, step: int, scalars: dict[str, float | Tensor]) -> dict[str, float]:
        values = {k: _as_float(v) for k, v in scalars.items()}
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
        return values

    def config(self, config_json: str, metrics: tuple[str, ...]) -> None:
        """Record a new run's config: as text (TensorBoard's Text tab) and as hyperparameters (the HParams tab,
        compared on the `metrics` tags). `copy_events` finds both by these tags."""
        if self.writer is None:
            return
        self.writer.add_text(CONFIG_TAG, f"```\n{config_json}\n```", 0)
        self.hparams(json.loads(config_json), metrics)

    def hparams(self, values: dict, metrics: tuple[str, ...]) -> None:
        """Record the run's hyperparameters for TensorBoard's HParams tab, compared on the `metrics` tags.

        Written into this run's own event folder (SummaryWriter.add_hparams would add a sub-run per call).
        """
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        plain = {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in values.items()}
        for summary in hparams(plain, dict.fromkeys(metrics, 0.0)):
            self.writer.file_writer.add_summary(summary)

    def flush(self) -> None:
        self.file.flush()
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        self.flush()
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def archived_value(key: str, value: str, run_dir: str) -> str:
    """What an archive keeps of the config field `key` (one of PATH_KEYS) that held `value` on the training
    machine: the run's place in the archive for the run folder, the file's name for a preference file."""
    return run_dir if key == RUN_DIR_KEY else PurePath(value).name


def archived_config(config: dict, run_dir: str) -> dict:
    """`config` with its paths of the training machine replaced (`archived_value`)."""
    return {k: archived_value(k, v, run_dir) if k in PATH_KEYS and isinstance(v, str) and v else v
            for k, v in config.items()}


def copy_events(source: Path, dest: Path, run_dir: str) -> int:
    """Copy the TensorBoard folder `source` to `dest` (which must not exist), with the paths of the training
    machine in the logged config (text and hyperparameters) replaced as `archived_value` says. Every other
    record is copied byte for byte, and so is what follows the last whole record of an event file (a record
    cut short by a killed run, or damage; TensorBoard skips it in either copy). Returns the number of
    records rewritten. A symbolic link in `source` is a ValueError (an archive holds plain files)."""
    dest.mkdir(parents=True)
    rewritten = 0
    for path in sorted(source.iterdir()):
        if path.is_symlink():
            raise ValueError(f"{path} is a symbolic link; an archive copies plain files only: remove it")
        if path.is_dir():
            rewritten += copy_events(path, dest / path.name, run_dir)
        elif "tfevents" in path.name:
            data = path.read_bytes()
            with (dest / path.name).open("wb") as out:
                rewritten += _copy_records(data, out, run_dir)
        else:
            shutil.copyfile(path, dest / path.name)
    return rewritten


_HEADER = 12
"""A TFRecord: length (uint64), masked CRC of the length (uint32), the data, masked CRC of the data (uint32)."""


def _copy_records(data: bytes, out, run_dir: str) -> int:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    from tensorboard.summary.writer.record_writer import RecordWriter

    writer, rewritten, pos = RecordWriter(out), 0, 0
    while pos + _HEADER <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        (length_crc,) = struct.unpack_from("<I", data, pos + 8)
        end = pos + _HEADER + length + 4
        if end > len(data) or length_crc != masked_crc32c(data[pos:pos + 8]):
            break  # torn or damaged: TensorBoard reads no further either
        relabelled = _relabel_event(data[pos + _HEADER:end - 4], run_dir)
        if relabelled is None:
            out.write(data[pos:end])
        else:
            writer.write(relabelled)
            rewritten += 1
        pos = end
    out.write(data[pos:])
    return rewritten


def _relabel_event(record: bytes, run_dir: str) -> bytes | None:
    """The event `record` with the paths its logged config holds replaced; None if it logs none."""
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    try:
        event = Event.FromString(record)
    except DecodeError:
        return None
    changed = False
    for value in event.summary.value:
        plugin = value.metadata.plugin_data
        if value.tag == f"{CONFIG_TAG}/text_summary":
            for i, body in enumerate(value.tensor.string_val):
                try:
                    text = _relabel_config_text(body.decode("utf-8"), run_dir)
                except UnicodeDecodeError:
                    continue
                if text is not None:
                    value.tensor.string_val[i] = text.encode("utf-8")
                    changed = True
        elif plugin.plugin_name == "hparams":
            try:
                content = HParamsPluginData.FromString(plugin.content)
            except DecodeError:
                continue
            hparams, touched = content.session_start_info.hparams, False
            for key in PATH_KEYS:
                old = hparams[key].string_value if key in hparams else ""
                new = archived_value(key, old, run_dir) if old else old
                if new != old:
                    hparams[key].string_value = new
                    touched = True
            if touched:
                plugin.content = content.SerializeToString(deterministic=True)  # map order fixed: same bytes each time
                changed = True
    return event.SerializeToString(deterministic=True) if changed else None


def _relabel_config_text(body: str, run_dir: str) -> str | None:
    """The config text `body` (a fenced JSON object) with its paths replaced, all else as written; None if
    it holds none to replace."""
    try:
        config = json.loads(body.strip().removeprefix("```").removesuffix("```"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(config, dict):
        return None
    text = body
    for key, value in archived_config(config, run_dir).items():
        if key in PATH_KEYS and value != config[key]:
            old = f"{json.dumps(key)}: {json.dumps(config[key])}"
            if text.count(old) != 1:
                return None
            text = text.replace(old, f"{json.dumps(key)}: {json.dumps(value)}")
    return text if text != body else None


def read_lines(path: Path) -> list[str]:
    """The JSON record lines of a JSONL mirror, without a torn (partly written, not JSON) last line.

    A line that is not JSON anywhere else is damage, not a crash: ValueError names the file and line.
    """
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    for number, line in enumerate(lines, 1):
        try:
            json.loads(line)
        except json.JSONDecodeError:
            if number < len(lines):
                raise ValueError(f"{path}:{number} is not a JSON record") from None
            return lines[:-1]
    return lines


def read_scalars(run_dir: Path) -> list[dict[str, float]]:
    """Every record of a run folder's JSONL mirror (a torn last line is left out)."""
    return [json.loads(line) for line in read_lines(Path(run_dir) / SCALARS_FILE)]


class Progress:
    """A tqdm bar on a terminal; plain periodic lines (every `every` steps) otherwise."""

    def __init__(self, total: int, start: int, every: int, enabled: bool = True) -> None:
        self.total, self.every, self.enabled = total, every, enabled
        self.bar = None
        self.t0, self.s0 = time.time(), start
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def update(self, step: int, info: dict[str, float]) -> None:
        if not self.enabled:
            return
        short = {k.split("/")[-1]: v for k, v in info.items() if not math.isnan(v) and k != "time/fps"}
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in short.items()}, refresh=True)
        elif step % self.every == 0:
            body = " ".join(f"{k}={v:.4g}" for k, v in short.items())
            print(f"{self.prefix(step)} {body}", flush=True)

    def prefix(self, step: int) -> str:
        """`[step/total] R steps/s ETA ...`, the rate averaged since this process started."""
        fps = (step - self.s0) / max(time.time() - self.t0, 1e-9)
        eta = (self.total - step) / fps if fps > 0 else float("inf")
        return f"[{step:>8d}/{self.total}] {fps:6.1f} steps/s ETA {format_duration(eta)}"

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` (waiting for a person's labels) out of the rate and the ETA, on the bar too."""
        self.t0 += seconds
        if self.bar is not None:
            self.bar.start_t += seconds

    def event(self, step: int, text: str) -> None:
        """One line for something that happened (an evaluation, a feedback round), on a terminal or not."""
        if not self.enabled:
            return
        line = f"{self.prefix(step)} {text}"
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def format_duration(seconds: float) -> str:
    """12s, 7m, 3h05m; "?" when unknown."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
