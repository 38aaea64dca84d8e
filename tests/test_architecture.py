"""The package's shape, checked from the source: no import circles, no stage that needs the test kit,
and one declaration of the backend options for every command.

The import graph is built with ``ast`` from the files under ``src/`` (nothing is imported), so a
lazy import inside a function counts as much as one at the top of the module. The rule
(docs/architecture.md, "Import rules"):

* an edge A -> B exists when A names module B in an ``import`` / ``from ... import`` statement
  anywhere (module level, inside functions, under ``if TYPE_CHECKING:``), in a call
  ``importlib.import_module("...")``, or as a module string of a lazy-export table (a dict literal
  whose values are relative module names, as ``_lazy.lazy_exports`` takes them);
* ``from P import name`` points at the submodule ``P.name`` when that file exists, else at ``P``;
* the parent packages Python initialises on the way (``rationalrewards.eval`` for
  ``rationalrewards.eval.report``) are not edges: a package's ``__init__`` re-exporting its
  submodules would otherwise form a "circle" with every one of them.

TYPE_CHECKING imports count: a report that names the pipeline's class in its annotations still
depends on the pipeline's design, which is what the rule is about.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT_PACKAGE = "rationalrewards"
TESTING = f"{ROOT_PACKAGE}.testing"
# The production stages and the layers under them. The demo world (its scripted teacher is part of
# the demo) and the testing kit itself are the only packages allowed to use rationalrewards.testing.
STAGE_PACKAGES = ("parrot", "rl", "refine", "eval", "curate", "localize", "serve", "critique", "backends", "cli")

# A module named by a string: "rationalrewards.x.y", ".y" / "..x.y" (relative), or a generator spec
# "python:rationalrewards.x:attr".
_MODULE_STRING = re.compile(r"(?:python:)?(?P<dots>\.*)(?P<name>[A-Za-z_]\w*(?:\.\w+)*)?(?::\w+)?")


# -- the analyser ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    how: str  # "import", "import_module", "lazy table"


def module_index(src: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is_package) for every ``.py`` file under ``src``."""
    index: dict[str, tuple[Path, bool]] = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        if parts:
            index[".".join(parts)] = (path, is_pkg)
    return index


def _absolute(module: str, is_pkg: bool, level: int, name: str | None) -> str:
    """The absolute module named by a relative import of ``level`` dots in ``module``."""
    if not level:
        return name or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, *([name] if name else [])])


def _known(target: str, index: dict[str, tuple[Path, bool]]) -> str | None:
    """``target`` or its closest enclosing module that is a file under ``src``."""
    while target and target not in index:
        target = target.rpartition(".")[0]
    return target or None


def _relative_string(value: str, module: str, is_pkg: bool) -> str | None:
    """The absolute module a lazy-table / import_module string names, or None if it names none."""
    m = _MODULE_STRING.fullmatch(value)
    if not m or not (m["dots"] or m["name"]):
        return None
    if m["dots"]:
        return _absolute(module, is_pkg, len(m["dots"]), m["name"])
    return m["name"]


def module_edges(module: str, path: Path, is_pkg: bool, index: dict[str, tuple[Path, bool]]) -> list[Edge]:
    """Every edge out of one module (see the module doc for what counts)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    raw: list[tuple[str, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            raw += [(alias.name, node.lineno, "import") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_pkg, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                raw.append((sub if sub in index else base, node.lineno, "import"))
        elif isinstance(node, ast.Call) and _is_import_module(node.func):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                target = _relative_string(node.args[0].value, module, is_pkg)
                if target:
                    raw.append((target, node.lineno, "import_module"))
        elif isinstance(node, ast.Dict) and node.values and all(
            isinstance(v, ast.Constant) and isinstance(v.value, str) and v.value.startswith(".") for v in node.values
        ):
            for v in node.values:
                target = _relative_string(v.value, module, is_pkg)  # type: ignore[union-attr]
                if target:
                    raw.append((target, v.lineno, "lazy table"))
    edges = []
    for target, line, how in raw:
        if not target.startswith(ROOT_PACKAGE):
            continue
        # A statement may import an attribute of a module (climb to the module); a string must
        # name a module exactly, so that text such as ".png" in a dict is no edge.
        known = _known(target, index) if how == "import" else (target if target in index else None)
        if known and known != module:
            edges.append(Edge(module, known, line, how))
    return edges


def _is_import_module(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id == "import_module")


def import_graph(src: Path) -> dict[str, list[Edge]]:
    index = module_index(src)
    return {name: module_edges(name, path, is_pkg, index) for name, (path, is_pkg) in index.items()}


def import_circles(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in order:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                order[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            targets = sorted({e.target for e in graph.get(node, [])})
            if i < len(targets):
                work.append((node, i + 1))
                nxt = targets[i]
                if nxt not in order:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], order[nxt])
                continue
            if low[node] == order[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return sorted(circles)


def describe_circle(component: list[str], graph: dict[str, list[Edge]]) -> str:
    members = set(component)
    lines = [" <-> ".join(component)]
    for name in component:
        seen = {(e.line, e.target, e.how) for e in graph[name] if e.target in members}
        lines += [f"    {name}:{line} -> {target} ({how})" for line, target, how in sorted(seen)]
    return "\n".join(lines)


def find_testing_references(src: Path, packages: tuple[str, ...] = STAGE_PACKAGES) -> list[str]:
    """Every place a stage package reaches for ``rationalrewards.testing``: imports (lazy ones
    included), ``import_module`` strings, lazy tables, and ``python:module:attr`` spec strings."""
    index = module_index(src)
    found = []
    for name, (path, is_pkg) in index.items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in packages:
            continue
        for e in module_edges(name, path, is_pkg, index):
            if e.target == TESTING or e.target.startswith(TESTING + "."):
                found.append(f"{path.relative_to(src)}:{e.line}: {e.how} of {e.target}")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                target = _relative_string(node.value, name, is_pkg) if "\n" not in node.value else None
                if target and (target == TESTING or target.startswith(TESTING + ".")):
                    found.append(f"{path.relative_to(src)}:{node.lineno}: string naming {target}")
    return sorted(set(found))


# -- the rules, applied to this repository -----------------------------------------------------------
def test_no_module_in_src_is_part_of_an_import_circle():
    graph = import_graph(SRC)
    assert len(graph) > 50, "the analyser found suspiciously few modules"
    circles = import_circles(graph)
    assert not circles, "import circles (a report must read a results object below it, never its pipeline):\n" + \
        "\n".join(describe_circle(c, graph) for c in circles)


def test_no_stage_package_imports_the_testing_kit():
    found = find_testing_references(SRC)
    assert not found, ("stage packages must not depend on rationalrewards.testing (scripted judges live in "
                       "rationalrewards.testing.judges):\n" + "\n".join(found))


def test_the_known_stage_packages_exist():
    # A renamed stage would silently drop out of the check above.
    for package in STAGE_PACKAGES:
        assert (SRC / ROOT_PACKAGE / package / "__init__.py").is_file(), package


# -- the analyser itself: each rule fires on a small tree that breaks it --------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / ROOT_PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in {p.parent for p in (tmp_path / ROOT_PACKAGE).rglob("*.py")}:
        (folder / "__init__.py").touch()
    return tmp_path


def test_a_circle_closed_by_an_import_inside_a_function_is_found(tmp_path):
    src = _tree(tmp_path, {
        "eval/runner.py": "from .benchmarks import X\n\ndef report(ev):\n    from .report import write\n",
        "eval/report.py": "from .runner import Evaluation\n",
        "eval/benchmarks.py": "X = 1\n",
    })
    graph = import_graph(src)
    assert import_circles(graph) == [["rationalrewards.eval.report", "rationalrewards.eval.runner"]]
    text = describe_circle(import_circles(graph)[0], graph)
    assert "rationalrewards.eval.runner:4 -> rationalrewards.eval.report" in text


def test_a_type_checking_import_counts_and_a_longer_circle_is_one_component(tmp_path):
    src = _tree(tmp_path, {
        "a.py": "from . import b\n",
        "b.py": "import rationalrewards.c\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n",
        "d.py": "from .a import x\n",
    })
    assert import_circles(import_graph(src)) == [["rationalrewards.a", "rationalrewards.b", "rationalrewards.c"]]


def test_a_lazy_table_and_import_module_are_edges(tmp_path):
    src = _tree(tmp_path, {
        "_lazy.py": "def lazy_exports(package, table): ...\n",
        "pkg/__init__.py": "from .._lazy import lazy_exports\n_LAZY = {'Thing': '.impl', 'suffix': '.png'}\n",
        "pkg/impl.py": "import importlib\ndef f():\n    return importlib.import_module('rationalrewards.pkg')\n",
    })
    graph = import_graph(src)
    assert {(e.target, e.how) for e in graph["rationalrewards.pkg"]} == {
        ("rationalrewards._lazy", "import"), ("rationalrewards.pkg.impl", "lazy table")}
    assert import_circles(graph) == [["rationalrewards.pkg", "rationalrewards.pkg.impl"]]


def test_a_package_and_its_submodules_are_no_circle_by_themselves(tmp_path):
    # Importing eval.report initialises the eval package, which re-exports report: not a circle.
    src = _tree(tmp_path, {
        "eval/__init__.py": "from .report import write\n",
        "eval/report.py": "from .protocols import P\n",
        "eval/protocols.py": "P = 1\n",
    })
    assert import_circles(import_graph(src)) == []


@pytest.mark.parametrize("source", [
    "from ..testing.scripted_server import ScriptedServer\n",
    "def judge():\n    from rationalrewards.testing import judges\n",
    "import rationalrewards.testing.judges\n",
    "from .. import testing\n",
    "_LAZY = {'toy_critic': '..testing.judges'}\n",
    "import importlib\nj = importlib.import_module('rationalrewards.testing.judges')\n",
    "SPEC = 'python:rationalrewards.testing.judges:toy_critic'\n",
])
def test_every_way_of_reaching_the_testing_kit_is_caught(tmp_path, source):
    src = _tree(tmp_path, {"refine/toy.py": source, "testing/judges.py": "", "testing/scripted_server.py": ""})
    assert find_testing_references(src, ("refine",)), source


def test_a_docstring_that_mentions_the_testing_kit_is_no_dependency(tmp_path):
    src = _tree(tmp_path, {
        "refine/toy.py": '"""Pair it with rationalrewards.testing.judges.toy_critic."""\nX = "rationalrewards.testing is a kit"\n',
        "testing/judges.py": "",
    })
    assert find_testing_references(src, ("refine",)) == []


# -- one declaration of the backend options ----------------------------------------------------------
def _flags(command) -> set[str]:
    return {opt for p in command.params for opt in getattr(p, "opts", [])}


def _declared_backend_flags() -> set[str]:
    """The flags ``backend_command`` adds, read off a command that declares nothing else."""
    import typer
    from typer.main import get_command

    from rationalrewards.cli.common import backend_command

    app = typer.Typer(add_completion=False)

    @app.command()
    @backend_command(prefix="")
    def probe(backend: dict | None = None) -> None:
        """probe"""

    return _flags(get_command(app))


def test_refine_takes_its_critic_options_from_the_one_declaration():
    from typer.main import get_command

    from rationalrewards.cli.main import app

    refine = get_command(app).commands["refine"]  # type: ignore[attr-defined]
    declared = _declared_backend_flags()
    assert {"--base-url", "--model", "--max-pixels", "--aggregation"} <= declared
    flags = _flags(refine)
    missing = sorted("--critic-" + f[2:] for f in declared if "--critic-" + f[2:] not in flags)
    assert not missing, f"refine lacks critic options of backend_command: {missing}"
    # The names refine had before the single declaration keep working.
    assert {"--max-pixels", "--cache", "--templates", "--aggregation"} <= flags


@pytest.mark.parametrize("flag", ["--critic-max-pixels", "--max-pixels"])
def test_both_spellings_of_a_critic_option_are_one_checked_option(flag, tmp_path):
    from typer.testing import CliRunner

    from rationalrewards.cli.main import app

    res = CliRunner().invoke(app, ["refine", "--prompt", "x", "--generator", "python:rationalrewards.refine.toy:toy_generator",
                                   "--out", str(tmp_path), "--critic-base-url", "http://127.0.0.1:9/v1", flag, "0"])
    assert res.exit_code == 2
    assert "must be >= 1" in " ".join(res.output.split())
