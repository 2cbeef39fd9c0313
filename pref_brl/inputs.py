"""What a program is given besides numbers: devices, folders, files and the renderer, checked before it starts.

Each check returns the problem as one sentence (naming the option and what to do), or None when the input is
usable; the caller turns it into its own one-line error (:class:`pref_brl.validate.ConfigError` for a run
config, the program's error type elsewhere). Nothing here creates, opens for writing or changes a file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

_DEVICE = re.compile(r"(cpu|cuda|mps)(?::(\d+))?")
RENDER_PROBE_TIMEOUT_S = 120


def device_problem(device: str, option: str = "--device") -> str | None:
    """A torch device string that does not parse, or names hardware this torch cannot use here."""
    match = _DEVICE.fullmatch(device.strip())
    if match is None:
        return f"{option} {device!r} is not a torch device; use cpu, cuda or cuda:N"
    import torch

    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        return None if index in (None, "0") else f"{option} {device!r}: the CPU has no index; use cpu"
    if kind == "mps":
        return None if torch.backends.mps.is_available() else f"{option} {device}: MPS is not available here; use cpu"
    if not torch.cuda.is_available():
        why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        return f"{option} {device}: {why}; use --device cpu, or install a CUDA build of torch on a GPU machine"
    count = torch.cuda.device_count()
    if index is not None and int(index) >= count:
        return f"{option} {device}: only {count} CUDA GPU(s) are visible (cuda:0 to cuda:{count - 1})"
    return None


def device_memory(device: str) -> int:
    """Bytes of memory on `device`: physical RAM for the CPU, the GPU's total memory for cuda[:N]."""
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":")[1]) if ":" in device else 0
        return int(torch.cuda.get_device_properties(index).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PB"


def _length_problem(path: Path, option: str) -> str | None:
    text = str(path.absolute())
    longest = max((len(part.encode()) for part in path.parts), default=0)
    if longest > 255 or len(text.encode()) > 4095:
        return (f"{option} {str(path)[:60]}...: the path is too long for the file system (at most 255 bytes per "
                "folder name and 4095 in all); choose a shorter one")
    return None


def _nearest_existing(path: Path) -> Path:
    existing = Path(os.path.abspath(path))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def folder_problem(path: str | Path, option: str, *, must_exist: bool = False) -> str | None:
    """A folder a program will create (or write into): a file in its place, a file above it, an unwritable
    parent, a path too long. `must_exist`: the folder must be there already (an input folder)."""
    path = Path(path)
    problem = _length_problem(path, option)
    if problem:
        return problem
    if path.is_symlink() and not path.exists():
        return f"{option} {path} is a broken symbolic link; choose a folder"
    if path.exists():
        if not path.is_dir():
            return f"{option} {path} is a file, not a folder; choose a folder"
        if not must_exist and not os.access(path, os.W_OK | os.X_OK):
            return f"{option} {path} is not writable; choose a folder you can write to, or fix its permissions"
        return None
    if must_exist:
        return f"{option} {path} does not exist"
    existing = _nearest_existing(path)
    if not existing.is_dir():
        return f"{option} {path} lies under {existing}, which is a file; choose a folder outside it"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{option} {path}: {existing} is not a writable folder, so it cannot be created; choose another"
    return None


def output_file_problem(path: str | Path, option: str) -> str | None:
    """A file a program will write: not a folder, and its folder exists (or can be created) and is writable."""
    path = Path(path)
    if path.is_dir():
        return f"{option} {path} is a folder; give a file name"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{option} {path} is not writable; choose another file or fix its permissions"
    if path.parent.exists() and not path.parent.is_dir():
        return f"{option} {path}: {path.parent} is a file, not a folder; choose a file in a folder"
    return folder_problem(path.parent, option)


def text_file_problem(path: str | Path, option: str, what: str) -> str | None:
    """An input text file that is missing, a folder, unreadable or not UTF-8."""
    path = Path(path)
    try:
        path.read_bytes().decode("utf-8")
    except IsADirectoryError:
        return f"{option} {path} is a folder, not a {what}"
    except OSError as exc:
        return f"cannot read {what} {path}: {exc.strerror}"
    except UnicodeDecodeError as exc:
        return f"{what} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
    return None


def npz_problem(path: str | Path, option: str) -> str | None:
    """A NumPy .npz file that is missing, a folder, or not a zip archive (a text or truncated file)."""
    path = Path(path)
    if path.is_dir():
        return f"{option} {path} is a folder, not an .npz file"
    if not path.exists():
        return f"{option}: cannot read the preference file {path} (no such file)"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        return (f"{option}: {path} is not an .npz file ({exc or 'not a zip archive'}; truncated, or not written by "
                "pref_brl.export_preferences)")
    if bad is not None:
        return f"{option}: {path} is damaged (entry {bad} fails its checksum); export it again"
    return None


def json_object_problem(path: str | Path, what: str) -> str | None:
    """A JSON file that cannot be read, does not parse, or does not hold an object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        return f"{what} {path} cannot be read ({exc.strerror})"
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{what} {path} is not valid JSON ({exc})"
    return None if isinstance(value, dict) else f"{what} {path} holds a JSON {type(value).__name__}, not an object"


_PROBE = """
import sys
from pref_brl.envs import make_env
env = make_env(sys.argv[1], 0, goal_mode=sys.argv[2], render_mode="rgb_array", render_size=(64, 64))
env.reset(seed=0)
env.render()
env.close()
"""


def renderer_problem(env: str, goal_mode: str, purpose: str) -> str | None:
    """Whether MuJoCo can render `env` off-screen here, tried in a child process: a GL back-end that fails
    to open can leave half-made contexts (and noise at exit) in the process that tried."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, env, goal_mode], capture_output=True, text=True,
                              timeout=RENDER_PROBE_TIMEOUT_S, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        return f"{purpose}: MuJoCo did not render one frame of {env} in {RENDER_PROBE_TIMEOUT_S} s"
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    reason = lines[-1] if lines else f"exit code {done.returncode}"
    backend = os.environ.get("MUJOCO_GL", "default")
    return (f"{purpose}: MuJoCo cannot render here (MUJOCO_GL={backend}: {reason}); use MUJOCO_GL=egl on a GPU "
            "machine, or apt-get install libosmesa6 and MUJOCO_GL=osmesa on a CPU")
