"""No import cycles between the package's modules, counting imports inside functions (a cycle hidden by a
function-level import is still a cycle at run time); imports under `if TYPE_CHECKING:` do not run and are left
out. Module names follow setup.cfg: agents/, envs/ and experiments/ are pref_brl.agents, .envs, .experiments."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def package_folders() -> dict[str, Path]:
    """Import name -> folder, for pref_brl and every folder setup.cfg maps into it."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    mapped = {}
    for line in setup["options"]["package_dir"].strip().splitlines():
        name, _, folder = (part.strip() for part in line.partition("="))
        mapped[name] = ROOT / folder
    return {"pref_brl": ROOT / "pref_brl", **mapped}


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in package_folders().items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules `name` imports when it runs (any depth, TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in
                   ast.unparse(node.test) for stmt in node.body for n in ast.walk(stmt)}

    def resolve(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(t for t in map(resolve, targets) if t and t != name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle() -> None:
    known = modules()
    graph = {name: imports_of(name, path, known) & set(known) for name, path in known.items()}
    assert "pref_brl.trainer" in graph["pref_brl.api"] or "pref_brl.training" in graph["pref_brl.api"]
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    source = "from __future__ import annotations\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n" \
             "    from pref_brl import trainer\ndef f():\n    from pref_brl.runs import DONE_FILE\n"
    known = {"pref_brl.x": ROOT / "x.py", "pref_brl.trainer": ROOT, "pref_brl.runs": ROOT, "pref_brl": ROOT}
    path = Path(__file__).with_name("_probe_import_graph.py")
    path.write_text(source, encoding="utf-8")
    try:
        assert imports_of("pref_brl.x", path, known) == {"pref_brl.runs"}  # the function-level one, not TYPE_CHECKING
    finally:
        path.unlink()
