"""pref-brl-archive keeps finished runs' small files (no checkpoints) so that plots of the archive equal plots of
the study; pooled per-round diagnostics have known values."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pref_brl.diagnostics import pooled_diagnostics, run_seconds, run_times_markdown
from pref_brl.experiments.archive import main as archive_main
from pref_brl.logger import Logger
from pref_brl.results import final_table, load, to_markdown
from tests.test_plot import make_run


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """3 finished seeds of pebble and bilevel (with checkpoints, logs and TensorBoard events), an unfinished run."""
    root = tmp_path / "runs" / "study"
    for seed in range(3):
        for method, final in (("pebble", 2.0), ("bilevel", 3.0)):
            folder = make_run(root, method, seed, [(100, final / 2), (200, final + seed)])
            (folder / "tb").mkdir()
            (folder / "tb" / "events.out.tfevents.1").write_bytes(b"events")
            for name in ("checkpoint.pt", "checkpoint.prev.pt", "train.log", "lock"):
                (folder / name).write_text("x", encoding="utf-8")
            (folder / "versions.json").write_text("[]", encoding="utf-8")
            if method == "bilevel":
                with (folder / "scalars.jsonl").open("a", encoding="utf-8") as out:
                    for step, snr, gap in ((120, 1.0 + seed, -1.0), (180, 0.5, 2.0 + seed)):
                        out.write(json.dumps({"step": step, "bilevel/penalty_snr": snr, "bilevel/gap": gap}) + "\n")
    make_run(root, "pebble", 3, [(100, 9.0)], done=False)
    return root


def test_archive_keeps_the_small_files_and_replots_identically(study: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "repo" / "results" / "study"
    assert archive_main([str(study), "--out", str(out)]) == 0
    assert "archived 6 finished run(s)" in capsys.readouterr().out
    archived = out / "walker_walk/bilevel/budget100/oracle/seed1"
    assert sorted(p.name for p in archived.iterdir()) == ["config.json", "done.json", "scalars.jsonl", "tb",
                                                         "versions.json"]
    assert (archived / "tb" / "events.out.tfevents.1").read_bytes() == b"events"
    assert not (out / "walker_walk/pebble/budget100/oracle/seed3").exists()  # unfinished: left out
    # no path of the training machine: run_dir is the run's place inside the archive
    assert json.loads((archived / "config.json").read_text())["run_dir"] == "walker_walk/bilevel/budget100/oracle/seed1"
    tables = []
    for folder in (study, out):
        runs, metrics = load([folder])
        runs = [r for r in runs if r.finished]
        tables.append(to_markdown(final_table(runs, metrics, "iqm", reps=200), "iqm"))
    assert tables[0] == tables[1] and "bilevel" in tables[0]
    # a second archive refreshes in place
    assert archive_main([str(study), "--out", str(out)]) == 0


def test_bad_archive_targets_create_nothing(study: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "a_file").write_text("x", encoding="utf-8")
    (tmp_path / "results" / "plots").mkdir(parents=True)  # a folder holding more than a run's archived copy
    (tmp_path / "results" / "notes.md").write_text("kept", encoding="utf-8")
    one_run = study / "walker_walk/pebble/budget100/oracle/seed0"
    for argv in ([str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
                 [str(study), "--out", str(tmp_path / "a_file" / "o")],
                 [str(study), "--out", str(study)],
                 [str(study), "--out", ""],
                 [str(one_run), "--out", str(tmp_path / "results")]):  # would replace the whole folder
        assert archive_main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()
    assert _snapshot(tmp_path / "results") == {"notes.md": b"kept"} and (tmp_path / "results" / "plots").is_dir()
    assert sorted(p.name for p in (study / "walker_walk/pebble/budget100/oracle/seed0").iterdir()) == [
        "checkpoint.prev.pt", "checkpoint.pt", "config.json", "done.json", "lock", "scalars.jsonl", "tb", "train.log",
        "versions.json"]


def test_pooled_diagnostics_have_known_values(study: Path) -> None:
    runs, _ = load([study])
    pooled = {(p.group.label, p.tag): p for p in pooled_diagnostics(runs, "bilevel/")}
    assert set(pooled) == {("bilevel", "bilevel/gap"), ("bilevel", "bilevel/penalty_snr")}
    snr = pooled[("bilevel", "bilevel/penalty_snr")]
    assert snr.runs == 3 and sorted(snr.values) == [0.5, 0.5, 0.5, 1.0, 2.0, 3.0]
    gap = pooled[("bilevel", "bilevel/gap")]
    assert gap.below_zero == pytest.approx(0.5) and np.mean(gap.values) == pytest.approx((-3 + 2 + 3 + 4) / 6)


def test_run_time_is_the_sum_of_log_intervals_over_their_throughput(tmp_path: Path) -> None:
    folder = make_run(tmp_path, "pebble", 0, [(3000, 1.0)])
    with (folder / "scalars.jsonl").open("a", encoding="utf-8") as out:
        for step, fps in ((1000, 10.0), (2000, 20.0), (3000, 0.0), (4000, 40.0)):  # 0: no interval measured
            out.write(json.dumps({"step": step, "time/fps": fps}) + "\n")
    runs, _ = load([tmp_path])
    assert run_seconds(runs[0]) == pytest.approx(100 + 50 + 25)
    table = run_times_markdown(runs)
    assert "| walker_walk | pebble | 1 | 4000 | 0.0486 (0.0486 – 0.0486) | 22.9 |" in table


def _records(data: bytes) -> tuple[list[bytes], bytes]:
    """The records of an event file, each checked against its two CRCs as TensorBoard checks them, and the
    bytes after the last whole record."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    records, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        if pos + 16 + length > len(data):
            break
        assert struct.unpack_from("<I", data, pos + 8)[0] == masked_crc32c(data[pos:pos + 8])
        record = data[pos + 12:pos + 12 + length]
        assert struct.unpack_from("<I", data, pos + 12 + length)[0] == masked_crc32c(record)
        records.append(record)
        pos += 16 + length
    return records, data[pos:]


def _logged(records: list[bytes]) -> tuple[list[tuple], dict, dict]:
    """(scalars as (tag, step, value), the config text's JSON, the hyperparameters) of an event file's records."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    scalars, config, hparams = [], {}, {}
    for event in map(Event.FromString, records):
        for value in event.summary.value:
            if value.tag == "config/text_summary":
                config = json.loads(value.tensor.string_val[0].decode().strip("`\n"))
            elif value.metadata.plugin_data.plugin_name == "hparams":
                data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
                hparams.update({k: v.string_value or v.number_value
                                for k, v in data.session_start_info.hparams.items()})
            elif value.HasField("simple_value"):
                scalars.append((value.tag, event.step, value.simple_value))
    return scalars, config, hparams


LABEL = "walker_walk/pebble/budget100/oracle/seed0"


def logged_run(tmp_path: Path) -> tuple[Path, Path, list]:
    """A finished run on a 'training machine' under tmp_path whose events were written by the trainer's logger
    (config text, hyperparameters, scalars) and end in a torn record; seeded from a preference file there, and
    continued once (config.history.json). Returns (study folder, events file, history)."""
    machine = tmp_path / "home" / "someone"
    run = make_run(machine / "runs" / "study", "pebble", 0, [(100, 1.0), (200, 2.0)],
                   preferences=str(machine / "prefs" / "walker.npz"))
    config_json = (run / "config.json").read_text(encoding="utf-8")
    logger = Logger(run)
    logger.config(config_json, ("eval/mean_reward",))
    for step in (100, 200):
        logger.log(step, {"eval/mean_reward": step / 100, "train/critic_loss": 0.5})
    logger.close()
    (events,) = (run / "tb").iterdir()
    with events.open("ab") as out:
        out.write(TORN)
    (run / "tb" / "notes.txt").write_text("kept", encoding="utf-8")
    # the config that a change replaced names the run folder and the preference file too
    history = [{"time": "t", "changes": [f"preferences: '{machine}/prefs/old.npz' -> '{machine}/prefs/walker.npz'"],
                "config": {**json.loads(config_json), "preferences": f"{machine}/prefs/old.npz"}}]
    (run / "config.history.json").write_text(json.dumps(history, indent=2), encoding="utf-8")
    return machine / "runs" / "study", events, history


TORN = b"\x40\x00\x00\x00\x00\x00\x00\x00\x01\x02"  # a record cut short by a killed run


def test_archived_events_keep_no_path_of_the_training_machine(tmp_path: Path) -> None:
    """The config text and hyperparameters the trainer's logger writes, and config.history.json, name the run
    folder and the preference file; the archive's copy names the run's place in the archive and the file's name
    instead, keeps every other record byte for byte (with valid CRCs, so TensorBoard reads it) and keeps a torn
    tail as it was."""
    study, events, history = logged_run(tmp_path)
    run = study / LABEL
    source, tail = _records(events.read_bytes())
    assert tail == TORN and str(run).encode() in b"".join(source)

    out = tmp_path / "repo" / "results" / "study"
    label = LABEL
    assert archive_main([str(study), "--out", str(out)]) == 0
    copied, copied_tail = _records((out / label / "tb" / events.name).read_bytes())
    assert copied_tail == TORN and (out / label / "tb" / "notes.txt").read_text(encoding="utf-8") == "kept"
    for file in (out / label).rglob("*"):
        assert not file.is_file() or str(tmp_path).encode() not in file.read_bytes(), file
    copied_history = json.loads((out / label / "config.history.json").read_text(encoding="utf-8"))
    assert copied_history == [{**history[0], "changes": ["preferences: 'old.npz' -> 'walker.npz'"],
                               "config": {**history[0]["config"], "run_dir": label, "preferences": "old.npz"}}]
    archived = {"run_dir": label, "preferences": "walker.npz"}
    assert json.loads((out / label / "config.json").read_text(encoding="utf-8")) == {
        **json.loads((run / "config.json").read_text(encoding="utf-8")), **archived}
    scalars, config, hparams = _logged(source)
    copied_scalars, copied_config, copied_hparams = _logged(copied)
    assert len(scalars) == 4 and copied_scalars == scalars
    assert config["run_dir"] == hparams["run_dir"] == str(run)
    assert copied_config == {**config, **archived} and copied_hparams == {**hparams, **archived}
    changed = [i for i, (a, b) in enumerate(zip(source, copied, strict=True)) if a != b]
    assert len(changed) == 2  # the config text and the hyperparameters' session start; nothing else touched
    # the same bytes from another process (protobuf writes maps in a per-process order unless told not to)
    again = tmp_path / "again"
    code = ("import sys; from pathlib import Path; from pref_brl.logger import copy_events; "
            "copy_events(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])")
    subprocess.run([sys.executable, "-c", code, str(run / "tb"), str(again), label], check=True)
    assert (again / events.name).read_bytes() == (out / label / "tb" / events.name).read_bytes()
    # TensorBoard's own reader sees the same runs
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(out / label / "tb"))
    accumulator.Reload()
    assert [e.value for e in accumulator.Scalars("eval/mean_reward")] == [1.0, 2.0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_run_the_archive_cannot_clean_is_refused_and_its_archived_copy_kept(tmp_path: Path, capsys,
                                                                           monkeypatch) -> None:
    """Damaged JSON, a link in tb/, events damaged before the config record (whose path would then be copied
    as damage): one error line, exit 2, and the run's archived copy as it was; an archive killed midway too."""
    from pref_brl.experiments import archive as archive_module

    study, events, _ = logged_run(tmp_path)
    run, out = study / LABEL, tmp_path / "archive"
    assert archive_main([str(study), "--out", str(out)]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    good_events = events.read_bytes()

    def damage_history() -> None:
        (run / "config.history.json").write_text("[{not json", encoding="utf-8")

    def damage_config() -> None:
        (run / "config.json").write_bytes(b"\xff\xfe{}")

    def link_in_tb() -> None:
        (run / "tb" / "loop").symlink_to(run / "tb")

    def damage_events() -> None:  # the first record's length CRC: nothing after it can be read as records
        events.write_bytes(good_events[:8] + bytes([good_events[8] ^ 1]) + good_events[9:])

    saved = {name: (run / name).read_bytes() for name in ("config.json", "config.history.json")}
    for damage in (damage_history, damage_config, link_in_tb, damage_events):
        damage()
        assert archive_main([str(study), "--out", str(out)]) == 2, damage.__name__
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, (damage.__name__, err)
        assert _snapshot(out) == before, damage.__name__
        assert [p.name for p in out.rglob(".*")] == [], damage.__name__  # no staging folder left behind
        for name, data in saved.items():
            (run / name).write_bytes(data)
        (run / "tb" / "loop").unlink(missing_ok=True)
        events.write_bytes(good_events)

    def killed(*args) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(archive_module, "copy_events", killed)
    with pytest.raises(KeyboardInterrupt):
        archive_main([str(study), "--out", str(out)])
    assert _snapshot(out) == before and [p.name for p in out.rglob(".*")] == []


def test_a_config_text_that_is_not_a_flat_json_object_is_copied_as_it_is(tmp_path: Path) -> None:
    from pref_brl.logger import copy_events

    for body in ("[" * 100_000, "not json", '{"run_dir": 3}', "\u00e9t\u00e9"):
        tb = tmp_path / "tb"
        logger = Logger(tmp_path)
        logger.writer.add_text("config", body, 0)
        logger.close()
        assert copy_events(tb, tmp_path / "copy", "label") == 0
        (events,) = tb.iterdir()
        assert (tmp_path / "copy" / events.name).read_bytes() == events.read_bytes()
        for folder in (tb, tmp_path / "copy"):
            shutil.rmtree(folder)
        (tmp_path / "scalars.jsonl").unlink()
