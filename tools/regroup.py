#!/usr/bin/env python3
"""Regroup `workbench/` by concern and the tests by layer (issue #27), reproducibly.

The layout is data (the tables below); this script applies it to a checkout:

1. `git mv`s each top-level module of `workbench/` into the package of its concern, and each
   `tests/test_*.py` (with its `__snapshots__` folder) into the folder of the layer it tests;
2. rewrites every reference to an old place: imports (`from workbench import x` included),
   dotted module strings (monkeypatch targets, `-m workbench.x`, docstrings), file paths in code
   and docs, the package data in pyproject.toml, the `Path(__file__)` arithmetic of a moved test;
3. draws the tree of packages into the README between its `layout` markers.

It is idempotent: a second run changes nothing. `--rewrite-only` moves no module (a test file
found at the top of `tests/` is still placed, by its name), for code written against the old
layout and merged afterwards. `--check` changes nothing and exits 1 if a run would.

    python tools/regroup.py [--rewrite-only] [--check]
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# -- the layout ----------------------------------------------------------------------------------

# old path -> new path, relative to the repository. A folder moves with all it holds.
MOVES: dict[str, str] = {
    # core: what every part uses and that knows no feature
    "workbench/config.py": "workbench/core/config.py",
    "workbench/errors.py": "workbench/core/errors.py",
    "workbench/redaction.py": "workbench/core/redaction.py",
    "workbench/safe_json.py": "workbench/core/safe_json.py",
    "workbench/safe_text.py": "workbench/core/safe_text.py",
    # conversations: the one in-memory form of a conversation, its turns, and the stored view
    "workbench/messages.py": "workbench/conversations/messages.py",
    "workbench/turns.py": "workbench/conversations/turns.py",
    "workbench/toolcalls.py": "workbench/conversations/toolcalls.py",
    "workbench/conversation_view.py": "workbench/conversations/view.py",
    # what a flag says (sentence, reasons, statistics), for the app and the CLI alike
    "workbench/flag_text.py": "workbench/checks/flag_text.py",
    # a check's precision as analysts judge a sample of its flags
    "workbench/precision.py": "workbench/curation/precision.py",
    # traces: formats in and out, importing, exporting
    "workbench/importing.py": "workbench/traces/importing.py",
    "workbench/formats.py": "workbench/traces/formats.py",
    "workbench/chat_formats.py": "workbench/traces/chat_formats.py",
    "workbench/formats_spans": "workbench/traces/spans",
    "workbench/outcomes.py": "workbench/traces/outcomes.py",
    "workbench/exporting.py": "workbench/traces/exporting.py",
    "workbench/trainer_exports.py": "workbench/traces/trainer_exports.py",
    # models: loading and calling models, local or behind an endpoint
    "workbench/chat_backend.py": "workbench/models/chat_backend.py",
    "workbench/chat_template.py": "workbench/models/chat_template.py",
    "workbench/endpoints.py": "workbench/models/endpoints.py",
    "workbench/hf_loading.py": "workbench/models/hf_loading.py",
    "workbench/model_refs.py": "workbench/models/refs.py",
    "workbench/replies.py": "workbench/models/replies.py",
    "workbench/batch_calls.py": "workbench/models/batch_calls.py",    # from branch `batch`
    "workbench/batch_folder.py": "workbench/models/batch_folder.py",  # from branch `batch`
    # curation: the analyst's and the normaliser's decisions on labels and splits
    "workbench/decisions.py": "workbench/curation/decisions.py",
    "workbench/normalize.py": "workbench/curation/normalize.py",
    "workbench/splitting.py": "workbench/curation/splitting.py",
    # checks: how their flags relate to the outcomes the logs carry
    "workbench/outcome_flags.py": "workbench/checks/outcome_flags.py",
    # evaluation: the metrics and what the results screen shows
    "workbench/metrics.py": "workbench/evaluation/metrics.py",
    "workbench/eval_results.py": "workbench/evaluation/results.py",
    # chat: talking to a model by hand (the REPL; the app's chat tester without Textual)
    "workbench/chat_repl.py": "workbench/chat/repl.py",
    "workbench/chat_tester.py": "workbench/chat/tester.py",
    # jobs: a job form's fields come from the one field vocabulary (no Textual)
    "workbench/job_forms.py": "workbench/jobs/forms.py",
    # app: the Textual app and its screens (the package is the app module)
    "workbench/app.py": "workbench/app/__init__.py",
    "workbench/app.tcss": "workbench/app/app.tcss",
    "workbench/screens": "workbench/app/screens",
    "workbench/terminal_watch.py": "workbench/app/terminal_watch.py",
}

# packages the moves make or that had no __init__.py, with their docstrings
PACKAGES: dict[str, str] = {
    "workbench/core": "Foundations every part uses and that know no feature: the analyst's config,"
                      " errors a user can act on, redaction of secrets, safe JSON and safe"
                      " terminal text.",
    "workbench/conversations": "The one form of a conversation: messages, assistant turns and"
                               " tool calls, and the view every part reads stored traces"
                               " through.",
    "workbench/models": "Models: local backends and chat templates, OpenAI-compatible endpoints,"
                        " `--model` references, and replies read before anything keeps them.",
    "workbench/chat": "Talking to a model by hand: the `workbench chat` REPL and what the app's"
                      " chat tester needs (no Textual).",
    "workbench/committee": "The committee: models vote on suspect turns (relabel), judge"
                           " relevance, and their agreement and trust are measured.",
    "workbench/training": "Training: data and masks, sizing, the trainer, GGUF export and the"
                          " metrics it logs.",
}

# a package docstring that named the old layout -> what it says now
DOCSTRINGS: dict[str, tuple[str, str]] = {
    "workbench/traces/__init__.py": (
        "the import job (formats and importers live beside it for now).",
        "the formats read and written, importing (the import job), outcomes, exporting."),
}

# test file -> the folder of the layer it tests (tests/<layer>/)
TEST_LAYERS: dict[str, str] = {
    "test_store": "db", "test_store_access": "db", "test_concurrency": "db",
    "test_jobs": "jobs", "test_cancel": "jobs", "test_paid_once": "jobs",
    "test_cli": "cli", "test_cli_output": "cli", "test_cli_report_width": "cli",
    "test_hostile": "app", "test_terminal_watch": "app",
    "test_chat_repl": "chat",
    "test_chat_template": "models", "test_endpoints": "models", "test_local_refs": "models",
    "test_recheck": "checks",
    "test_agreement": "committee", "test_relevance": "committee",
    "test_limits": "traces", "test_outcomes": "traces",
    "test_teaching": "curation", "test_heldout_agents": "project",
    "test_decisions": "curation", "test_decision_flags": "curation", "test_splits": "curation",
    "test_turn_labels": "curation",
    "test_conversation_view": "conversations",
    "test_terminal_text": "core",
    "test_metrics": "evaluation", "test_turn_eval": "evaluation",
    "test_metrics_log": "training",
    "test_other_agent": "pipeline", "test_tft_mini": "pipeline",
    "test_architecture": "project", "test_setup": "project", "test_bench_report": "project",
    # tests on other branches when this layout was made
    "test_batch_calls": "models", "test_local_slots": "models", "test_calibration": "checks",
    "test_throughput_bench": "project",
}
# a test file not named above goes by the first prefix of its name found here
TEST_PREFIXES: tuple[tuple[str, str], ...] = (
    ("test_app", "app"), ("test_tui", "app"), ("test_screen", "app"), ("test_widget", "app"),
    ("test_store", "db"), ("test_db", "db"), ("test_migration", "db"),
    ("test_job", "jobs"), ("test_cli", "cli"), ("test_command", "cli"),
    ("test_chat_template", "models"), ("test_chat", "chat"), ("test_endpoint", "models"),
    ("test_model", "models"), ("test_backend", "models"),
    ("test_check", "checks"), ("test_coherence", "checks"), ("test_flag", "checks"),
    ("test_committee", "committee"), ("test_relabel", "committee"), ("test_relevance", "committee"),
    ("test_vote", "committee"), ("test_trust", "committee"),
    ("test_import", "traces"), ("test_export", "traces"), ("test_format", "traces"),
    ("test_span", "traces"), ("test_outcome", "traces"), ("test_trace", "traces"),
    ("test_normali", "curation"), ("test_decision", "curation"), ("test_split", "curation"),
    ("test_label", "curation"), ("test_turn_label", "curation"),
    ("test_conversation", "conversations"), ("test_message", "conversations"),
    ("test_eval", "evaluation"), ("test_metric", "evaluation"), ("test_turn_eval", "evaluation"),
    ("test_train", "training"), ("test_gguf", "training"),
    ("test_synth", "synthesis"), ("test_pipeline", "pipeline"),
    ("test_safe", "core"), ("test_redact", "core"), ("test_config", "core"),
    ("test_architecture", "project"), ("test_bench", "project"), ("test_setup", "project"),
)
TEST_SUPPORT = ("conftest.py", "job_support.py", "scripted_openai.py", "tui_data.py")

# files rewritten: everything that can name a module or a path of the project
TEXT_GLOBS = ("**/*.py", "**/*.md", "**/*.toml", "Makefile", ".ci/*", "**/*.tcss")
SKIP_TOP = {".git", ".venv", ".wheels", "runs", "models", "bench/out"}   # not code
SKIP_ANY = {"__pycache__", "__snapshots__", ".pytest_cache", "node_modules"}
SELF = Path(__file__).resolve()

README_BEGIN = "<!-- layout: drawn by tools/regroup.py -->"
README_END = "<!-- /layout -->"


# -- names ---------------------------------------------------------------------------------------

def module_of(path: str) -> str:
    """`workbench/a/b.py` -> `workbench.a.b`; a package's `__init__.py` is the package."""
    p = path[:-3] if path.endswith(".py") else path
    parts = p.split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(stem: str) -> str | None:
    if stem in TEST_LAYERS:
        return TEST_LAYERS[stem]
    for prefix, layer in TEST_PREFIXES:
        if stem.startswith(prefix):
            return layer
    return None


def test_moves(root: Path) -> dict[str, str]:
    """Each test file (named in the tables, at the top of tests/, or already in its layer's
    folder) -> its place in the folder of its layer."""
    stems = (set(TEST_LAYERS) | {p.stem for p in (root / "tests").glob("test_*.py")}
             | {p.stem for p in (root / "tests").glob("*/test_*.py")})
    out = {}
    for stem in sorted(stems):
        layer = layer_of(stem)
        if layer is not None:
            out[f"tests/{stem}.py"] = f"tests/{layer}/{stem}.py"
    return out


def snapshot_moves(tests: dict[str, str]) -> dict[str, str]:
    """syrupy keeps a test file's snapshots in `__snapshots__/<file stem>/` beside it."""
    out = {}
    for old, new in tests.items():
        stem = Path(old).stem
        out[f"tests/__snapshots__/{stem}"] = f"{Path(new).parent}/__snapshots__/{stem}"
    return out


def dotted_map(moves: dict[str, str]) -> dict[str, str]:
    """Old module -> new module, for the moves that change a module's name."""
    out = {}
    for old, new in moves.items():
        if old.endswith(".tcss"):
            continue
        a, b = module_of(old), module_of(new)
        if a != b:
            out[a] = b
    return out


# -- rewriting -----------------------------------------------------------------------------------

DOTTED = re.compile(r"(?<![\w.])(?:workbench|tests)(?:\.[A-Za-z_]\w*)+")
PATHLIKE = re.compile(r"(?<![\w./~-])(?:workbench|tests)/[\w./*-]*")


def _remap(token: str, mapping: dict[str, str], sep: str, olds: list[str],
           news: list[str]) -> str:
    """`token` with its longest old prefix (whole segments) replaced; unchanged when it already
    names a new place."""
    def starts(t: str, p: str) -> bool:
        return t == p or t.startswith(p + sep)

    if any(starts(token, n) for n in news):
        return token
    for old in olds:   # longest first
        if starts(token, old):
            return mapping[old] + token[len(old):]
    return token


def rewrite_dotted(text: str, mapping: dict[str, str]) -> str:
    olds = sorted(mapping, key=len, reverse=True)
    news = sorted(set(mapping.values()), key=len, reverse=True)
    return DOTTED.sub(lambda m: _remap(m.group(0), mapping, ".", olds, news), text)


def rewrite_paths(text: str, mapping: dict[str, str]) -> str:
    """File paths: a moved file exactly (`workbench/x.py`, `tests/test_x.py`), a moved folder
    as a prefix (`workbench/screens/...`)."""
    olds = sorted(mapping, key=len, reverse=True)
    news = sorted(set(mapping.values()), key=len, reverse=True)

    def one(m: re.Match) -> str:
        token = m.group(0)
        trail = ""
        while token and token[-1] in ".-":   # a sentence's full stop is not part of a path
            token, trail = token[:-1], token[-1] + trail
        return _remap(token, mapping, "/", olds, news) + trail

    return PATHLIKE.sub(one, text)


def _import_line(indent: str, module: str, names: list[tuple[str, str | None]]) -> str:
    parts = [f"{n} as {a}" if a and a != n else n for n, a in names]
    line = f"{indent}from {module} import {', '.join(parts)}"
    if len(line) <= 100:
        return line
    body = f",\n{indent}    ".join(parts)
    return f"{indent}from {module} import (\n{indent}    {body},\n{indent})"


def rewrite_from_imports(text: str, mapping: dict[str, str]) -> str:
    """`from workbench import a, b` where `workbench.a` moved: `from workbench.new import a`
    (with `as a` when the module was renamed), one statement per new package."""
    if not re.search(r"from (workbench|tests) import", text):
        return text
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text
    lines = text.split("\n")
    edits = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ImportFrom) and not node.level
                and node.module in ("workbench", "tests")):
            continue
        if not any(f"{node.module}.{a.name}" in mapping for a in node.names):
            continue
        first, last = lines[node.lineno - 1], lines[node.end_lineno - 1]
        if first[:node.col_offset].strip() or last[node.end_col_offset:].strip():
            continue   # shares a line with other code: left to a person
        indent = first[:node.col_offset]
        groups: dict[str, list[tuple[str, str | None]]] = {}
        for a in node.names:
            full = mapping.get(f"{node.module}.{a.name}", f"{node.module}.{a.name}")
            package, _, leaf = full.rpartition(".")
            groups.setdefault(package, []).append((leaf, a.asname or a.name))
        new = [_import_line(indent, p, n) for p, n in sorted(groups.items())]
        edits.append((node.lineno - 1, node.end_lineno, "\n".join(new).split("\n")))
    for start, end, new in sorted(edits, reverse=True):
        lines[start:end] = new
    return "\n".join(lines)


FILE_PARENT = re.compile(r"Path\(__file__\)(\.resolve\(\))?\.parent")


def deepen_file_paths(text: str) -> str:
    """A test moved one folder down: what it reached from its folder is one `.parent` up."""
    return FILE_PARENT.sub(lambda m: m.group(0) + ".parent", text)


def pyproject_fixes(text: str) -> str:
    """The app's stylesheet is package data of the app package now."""
    return text.replace('workbench = ["*.tcss"]', '"workbench.app" = ["*.tcss"]')


# -- the tree ------------------------------------------------------------------------------------

def _summary(init: Path) -> str:
    """The first sentence of a module's docstring, cut to fit a line."""
    try:
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
    except (OSError, SyntaxError):
        return ""
    first = re.split(r"(?<=\.)\s", " ".join(doc.strip().split("\n\n")[0].split()))[0]
    first = first.rstrip(".")
    return first if len(first) <= 78 else first[:75].rsplit(" ", 1)[0] + " ..."


def draw_tree(root: Path) -> str:
    """The packages of workbench/ (and the top-level db/ and widgets/) with their docstrings'
    first sentence, and the layer folders of tests/."""
    rows = []
    for top in ("workbench", "db", "widgets"):
        base = root / top
        if not base.is_dir():
            continue
        rows.append((f"{top}/", _summary(base / "__init__.py")))
        if top != "workbench":
            continue
        files = [p for p in sorted(base.glob("*.py")) if p.name != "__init__.py"]
        for p in files:
            rows.append((f"  {p.name}", _summary(p)))
        for p in sorted(base.iterdir()):
            if p.is_dir() and (p / "__init__.py").exists():
                rows.append((f"  {p.name}/", _summary(p / "__init__.py")))
                for sub in sorted(p.iterdir()):
                    if sub.is_dir() and (sub / "__init__.py").exists():
                        rows.append((f"    {sub.name}/", _summary(sub / "__init__.py")))
    layers = sorted(p.name for p in (root / "tests").iterdir()
                    if p.is_dir() and any(p.glob("test_*.py")))
    width = max(len(a) for a, _ in rows) + 2
    lines = [f"{a:<{width}}{b}".rstrip() for a, b in rows]
    lines += textwrap.wrap("a folder per layer: " + ", ".join(layers), width=96,
                           initial_indent=f"{'tests/':<{width}}", subsequent_indent=" " * width)
    body = "\n".join(lines)
    return f"```\n{body}\n```"


def redraw_readme(text: str, root: Path) -> str:
    if README_BEGIN not in text or README_END not in text:
        return text
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_BEGIN}\n{draw_tree(root)}\n{README_END}{tail}"


# -- running -------------------------------------------------------------------------------------

def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)


def _text_files(root: Path) -> list[Path]:
    out = set()
    for pattern in TEXT_GLOBS:
        for p in root.glob(pattern):
            rel = p.relative_to(root)
            top = {"/".join(rel.parts[:1]), "/".join(rel.parts[:2])}
            if (p.is_file() and not (top & SKIP_TOP) and not (set(rel.parts[:-1]) & SKIP_ANY)
                    and p.resolve() != SELF):
                out.add(p)
    return sorted(out)


def plan_moves(root: Path, rewrite_only: bool) -> list[tuple[str, str]]:
    """The moves still to make here (an old place that exists, a new one that does not)."""
    tests = test_moves(root)
    wanted = {} if rewrite_only else dict(MOVES)
    wanted |= tests | snapshot_moves(tests)
    return [(o, n) for o, n in wanted.items()
            if (root / o).exists() and not (root / n).exists()]


def run(root: Path, *, rewrite_only: bool, check: bool) -> list[str]:
    """Apply the layout to the checkout at `root`; returns what changed (or would)."""
    changed: list[str] = []
    moves = plan_moves(root, rewrite_only)
    moved_tests = {n for o, n in moves if o.startswith("tests/test_")}
    for old, new in moves:
        changed.append(f"move {old} -> {new}")
        if check:
            continue
        (root / new).parent.mkdir(parents=True, exist_ok=True)
        _git(root, "mv", old, new)
    snaps = root / "tests" / "__snapshots__"
    if not check and snaps.is_dir() and not any(snaps.iterdir()):
        snaps.rmdir()
    for pkg, doc in PACKAGES.items():
        init = root / pkg / "__init__.py"
        made = (root / pkg).is_dir() or any(n.startswith(pkg + "/") for _, n in moves)
        if made and not init.exists():
            changed.append(f"add {pkg}/__init__.py")
            if not check:
                init.parent.mkdir(parents=True, exist_ok=True)
                text = textwrap.fill(f'"""{doc}"""', width=100)
                init.write_text(text + "\n", encoding="utf-8")
                _git(root, "add", str(init.relative_to(root)))
    tests = test_moves(root)
    modules = dotted_map(MOVES) | dotted_map(tests)
    paths = MOVES | tests | snapshot_moves(tests)
    for f in _text_files(root):
        rel = str(f.relative_to(root))
        text = f.read_text(encoding="utf-8")
        new = text
        if f.suffix == ".py":
            new = rewrite_from_imports(new, modules)
        new = rewrite_dotted(new, modules)
        new = rewrite_paths(new, paths)
        if rel in moved_tests:
            new = deepen_file_paths(new)
        if rel == "pyproject.toml":
            new = pyproject_fixes(new)
        if rel in DOCSTRINGS:
            new = new.replace(*DOCSTRINGS[rel])
        if new != text:
            changed.append(f"rewrite {rel}")
            if not check:
                f.write_text(new, encoding="utf-8")
    readme = root / "README.md"   # drawn last: from the docstrings as rewritten above
    if readme.exists():
        text = readme.read_text(encoding="utf-8")
        new = redraw_readme(text, root)
        if new != text:
            changed.append("redraw README.md")
            if not check:
                readme.write_text(new, encoding="utf-8")
    left = sorted(p.name for p in (root / "workbench").glob("*.py")
                  if p.name not in ("__init__.py", "__main__.py", "cli.py"))
    for name in left:
        print(f"note: workbench/{name} is placed in no package (add it to MOVES)", file=sys.stderr)
    for p in sorted((root / "tests").glob("test_*.py")):
        print(f"note: {p.relative_to(root)} matches no layer (add it to TEST_LAYERS)",
              file=sys.stderr)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rewrite-only", action="store_true",
                    help="move no module: rewrite references (and place new test files)")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a run would")
    ap.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    changed = run(args.root, rewrite_only=args.rewrite_only, check=args.check)
    for line in changed:
        print(line)
    if args.check:
        return 1 if changed else 0
    print(f"{len(changed)} changes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
