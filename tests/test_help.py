"""What a newcomer reads first says everything: --help lists the envs and methods, help(TrainConfig) documents
every field with the --help text, and the README names every program's module."""

from __future__ import annotations

import configparser
import contextlib
import dataclasses
import io
import re
import typing
from pathlib import Path

import pytest

from pref_brl.config import TrainConfig, field_docs
from pref_brl.envs import KNOWN_ENVS
from pref_brl.experiments.sweep import main as sweep_main
from pref_brl.experiments.train import main as train_main

ROOT = Path(__file__).resolve().parent.parent
METHODS = typing.get_args(typing.get_type_hints(TrainConfig)["method"])


def help_text(main) -> str:
    """A program's --help with tyro's box drawing and all whitespace removed (line breaks fall anywhere)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    return "".join(re.sub(r"[│╭╮╰╯─]", "", out.getvalue()).split())


def squeeze(text: str) -> str:
    return "".join(text.split())


def test_train_help_lists_every_env_and_method() -> None:
    text = help_text(train_main)
    assert all(env in text for env in KNOWN_ENVS)
    assert all(f"{method}:" in text for method in METHODS)


def test_help_of_trainconfig_documents_every_field_with_the_help_text() -> None:
    docs = field_docs(TrainConfig)
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    assert sorted(docs) == sorted(fields) and all(docs.values())
    help_doc, cli = squeeze(TrainConfig.__doc__ or ""), help_text(train_main)
    for name in fields:
        assert squeeze(f"{name} (") in help_doc and squeeze(docs[name]) in help_doc, name
        assert squeeze(docs[name]) in cli, name  # the same words as pref-brl-train --help


def test_sweep_help_and_the_studies_doc_name_every_method() -> None:
    text = help_text(sweep_main)
    studies = (ROOT / "docs" / "studies.md").read_text(encoding="utf-8")
    for method in METHODS:
        assert method in text and f"`{method}`" in studies, method


def test_readme_names_the_module_of_every_program() -> None:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    scripts = [line.split("=")[1].strip() for line in setup["options.entry_points"]["console_scripts"].splitlines()
               if line.strip()]
    modules = {script.split(":")[0].removeprefix("pref_brl.experiments.") for script in scripts}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = re.search(r"python -m pref_brl\.experiments\.<([a-z_|]+)>", readme)
    assert listed is not None and set(listed.group(1).split("|")) == modules
