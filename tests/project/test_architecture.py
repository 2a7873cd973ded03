"""The floor plan, enforced: import cycles, the job runtime's layers, and who may import what.

Read from the source with `ast` (nothing is imported), so a rule broken in a module no test
loads still fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGES = ("workbench", "db", "widgets")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, *, deferred: bool) -> set[str]:
    """The project modules `name` imports: at load time only, or also inside functions."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            inside = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                    ast.Lambda))
            if isinstance(child, ast.Import) and (top or deferred):
                for alias in child.names:
                    found.add(alias.name)
            elif isinstance(child, ast.ImportFrom) and (top or deferred):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    found.add(full if full in MODULES else base)
            visit(child, inside)

    visit(tree, True)
    return {m for m in found if m in MODULES and m != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def test_no_import_cycle_at_load_time():
    graph = {m: _imports(m, deferred=False) for m in MODULES}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_detector_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


LAYERS = ("workbench.jobs.context", "workbench.jobs.spec", "<feature jobs>",
          "workbench.jobs.registry", "workbench.jobs.runner")


def _layer(module: str) -> int | None:
    if module.endswith(".job"):
        return 2
    return LAYERS.index(module) if module in LAYERS else None


def test_the_job_runtime_depends_one_way():
    """context <- spec <- each feature's job.py <- registry <- runner, counting imports made
    inside functions too: a lower layer never reaches up, even lazily. (A feature's job may build
    on another's parameters: the pipeline's direct baseline trains like `train`.)"""
    features = [m for m in MODULES if m.endswith(".job")]
    assert len(features) >= 8, features
    for module in [*LAYERS[:2], *features, *LAYERS[3:]]:
        mine = _layer(module)
        for dep in _imports(module, deferred=True):
            theirs = _layer(dep)
            assert theirs is None or theirs < mine or theirs == mine == 2, (
                f"{module} imports {dep} (a higher layer)")
    for module in ("workbench.jobs.context", "workbench.jobs.spec"):   # no job body below
        deps = _imports(module, deferred=True)
        assert all(d.startswith(("db.", "workbench.jobs.", "workbench.core.redaction")) for d in deps
                   ), (module, deps)


def test_every_job_kind_is_registered_from_a_feature_module():
    from workbench.jobs.registry import FEATURES, REGISTRY

    kinds = [s.kind for f in FEATURES for s in f.SPECS]
    assert len(kinds) == len(set(kinds)) == len(REGISTRY)
    assert {"import", "check", "normalize", "train", "eval", "relabel", "relevance", "synth",
            "pipeline", "train-direct", "recount"} <= set(REGISTRY)
    modules = {f.__name__ for f in FEATURES}
    assert modules == {m for m in MODULES if m.endswith(".job")}, "a job.py missing from FEATURES"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("db")))
def test_the_store_imports_nothing_of_the_programs(module):
    deps = _imports(module, deferred=True)
    assert not {d for d in deps if not d.startswith("db")}, (module, deps)
    source = MODULES[module].read_text(encoding="utf-8")
    assert "textual" not in source


def _third_party(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


APP = ("workbench.app", "workbench.app.screens")   # the Textual app and its screens


def _under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_textual_only_in_the_app_and_widgets():
    users = {m for m in MODULES if "textual" in _third_party(m) or "textual_plotext"
             in _third_party(m)}
    outside = {m for m in users if not _under(m, (*APP, "widgets"))}
    assert not outside, outside


def test_nothing_but_the_cli_opens_the_app():
    """The app sits on top: no feature, job or store module reaches into it, even lazily."""
    for module in MODULES:
        if _under(module, APP) or module == "workbench.cli":
            continue
        reached = {d for d in _imports(module, deferred=True) if _under(d, APP)}
        assert not reached, (module, reached)


# what every part builds on: they import the store and each other, never a feature
FOUNDATIONS = ("workbench.core.safe_text", "workbench.core.safe_json", "workbench.core.errors",
               "workbench.core.config", "workbench.core.redaction", "workbench.conversations.messages", "workbench.conversations.turns",
               "workbench.conversations.toolcalls", "workbench.conversations.view")


@pytest.mark.parametrize("module", FOUNDATIONS)
def test_the_foundations_know_no_feature(module):
    deps = _imports(module, deferred=True)
    assert all(d.startswith("db") or d in FOUNDATIONS for d in deps), (module, deps)


IO = {"sqlite3", "sqlite_utils", "subprocess", "socket", "requests", "httpx", "openai", "db"}


def test_widgets_do_no_io():
    for module in (m for m in MODULES if m.startswith("widgets")):
        assert not (_third_party(module) & IO), (module, _third_party(module) & IO)
        source = MODULES[module].read_text(encoding="utf-8")
        assert "open(" not in source.replace("_open(", ""), module


# Modules that still hold SQL text. The store's queries belong in `db/`; this list only shrinks.
SQL_ALLOWED = {
    "workbench.traces.spans.staging",   # its own temporary SQLite staging file, not the store
}
SQL_START = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|REPLACE|PRAGMA|VACUUM|CREATE|DROP|ALTER|"
                       r"WITH|BEGIN|COMMIT|ROLLBACK)\b")


def _sql_uses(module: str) -> list[str]:
    """Where a module runs SQL (`.execute*` calls) or writes a statement's text."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("execute", "executemany", "executescript")):
            found.append(f"line {node.lineno}: .{node.func.attr}(")
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(
                node.values[0], ast.Constant) and SQL_START.match(str(node.values[0].value)):
            found.append(f"line {node.lineno}: {str(node.values[0].value)[:40]!r}")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and SQL_START.match(node.value)):
            found.append(f"line {node.lineno}: {node.value[:40]!r}")
    return found


def test_sql_lives_in_the_store():
    """`db/` owns the SQL: a module of the programs calls its functions instead."""
    uses = {m: _sql_uses(m) for m in MODULES if m.startswith("workbench") and m not in SQL_ALLOWED}
    offenders = {m: u for m, u in uses.items() if u}
    assert not offenders, offenders
    assert SQL_ALLOWED <= set(MODULES), SQL_ALLOWED - set(MODULES)


def test_the_sql_detector_finds_sql():
    assert SQL_START.match("SELECT id FROM traces") and not SQL_START.match("Select a file")
    assert _sql_uses("db.jobs") and not _sql_uses("workbench.core.safe_text")
