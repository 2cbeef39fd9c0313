"""The built wheel installs one import name, `pref_brl`, and works beside a project that has its own `envs/`.

The repository keeps `agents/`, `envs/` and `experiments/` at its top level; setup.cfg installs them as
`pref_brl.agents`, `pref_brl.envs` and `pref_brl.experiments`. Installed as top-level names they would shadow
(or be shadowed by) a user's own packages of those names.
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the checkout's files (a stale build/ folder of the checkout is not used)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True, timeout=60).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, timeout=300)
    [built] = out.glob("pref_brl-*.whl")
    return built


def test_the_wheel_holds_pref_brl_alone(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert {name.split("/")[0] for name in names} == {"pref_brl", wheel.name.split("-")[0] + "-0.1.0.dist-info"}
    for module in ("pref_brl/agents/sac.py", "pref_brl/envs/dmc.py", "pref_brl/experiments/train.py",
                   "pref_brl/tabular/resync.py", "pref_brl/human/page.html"):
        assert module in names
    with zipfile.ZipFile(wheel) as archive:
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "pref-brl-train = pref_brl.experiments.train:main" in entry_points


def test_installed_wheel_works_beside_a_project_with_its_own_envs_package(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # the dependencies (torch, mujoco, ...) come from this interpreter's site-packages as a plain path: its
    # .pth files, among them the editable install of this checkout, are not run there
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n", encoding="utf-8")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    project = tmp_path / "project"
    (project / "envs").mkdir(parents=True)
    (project / "envs" / "__init__.py").write_text("WHOSE = 'the project'\n", encoding="utf-8")
    check = ("import envs, pref_brl\n"
             "from pref_brl.envs import make_env\n"
             "from pref_brl.experiments.train import main\n"
             "import pref_brl.trainer, pref_brl.api\n"
             "assert envs.WHOSE == 'the project', envs.__file__\n"
             "assert pref_brl.make_env is make_env, pref_brl.make_env\n"
             "assert pref_brl.__file__.startswith(" + repr(purelib) + "), pref_brl.__file__\n"
             "env = make_env('walker_walk', 0)\n"
             "obs, _ = env.reset(seed=0)\n"
             "print(obs.shape)\n")
    out = subprocess.run([str(python), "-c", check], cwd=project, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(24,)"
