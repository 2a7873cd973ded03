"""`local` means one thing everywhere: the built-in SmolLM2 GGUF run in-process, and
`local:MODEL` a registered model (name or id) or a GGUF path run the same way, whether a
command asks for a model (`--model`) or an endpoint (`--endpoint`, the committee, the judge,
the app's chat tester). One resolver (workbench.models.refs) serves them all; each command is
run here for real on the SmolLM2 GGUF (a few tokens per turn)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from db import open_db
from db.models import register_model
from tests.tui_data import sample_store
from workbench.models.chat_backend import LlamaCppBackend, open_backend
from workbench.cli import app
from workbench.models.endpoints import get_endpoint
from workbench.core.errors import InputError
from workbench.models.refs import builtin_gguf, resolve_model

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = sample_store(tmp_path_factory.mktemp("local") / "l.db")
    db = open_db(path)
    register_model(db, name="smol", kind="gguf", path=builtin_gguf(), base_model="smollm2")
    db.conn.close()
    return path


@pytest.fixture
def no_config(tmp_path, monkeypatch):
    """No configured endpoints (a configured endpoint named `local` would win)."""
    monkeypatch.setenv("WORKBENCH_CONFIG", str(tmp_path / "none.toml"))


def _test_trace(store) -> int:
    db = open_db(store)
    try:
        return db.execute("SELECT min(id) FROM traces WHERE split = 'test'").fetchone()[0]
    finally:
        db.conn.close()


def test_one_resolver_for_models_and_endpoints(store, no_config):
    db = open_db(store)
    try:
        smol_id = db.execute("SELECT id FROM models WHERE name = 'smol'").fetchone()[0]
        assert resolve_model(db, "local").path == builtin_gguf()
        assert resolve_model(db, "local:smol").id == smol_id
        assert resolve_model(db, f"local:{smol_id}").name == "smol"
        assert resolve_model(None, f"local:{builtin_gguf()}").path == builtin_gguf()
        for name in ("local", "local:smol", f"local:{smol_id}"):
            ep = get_endpoint(name, db=db)
            assert ep.is_local and ep.gguf == builtin_gguf()
        with pytest.raises(ValueError, match="no model 'nosuch'.*smol.*local"):
            resolve_model(db, "nosuch")
        with pytest.raises(InputError, match="local:nosuch"):
            get_endpoint("local:nosuch", db=db)
    finally:
        db.conn.close()


def test_a_configured_endpoint_named_local_wins(tmp_path, monkeypatch):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[endpoints.local]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "x"\n')
    monkeypatch.setenv("WORKBENCH_CONFIG", str(cfg))
    ep = get_endpoint("local")
    assert not ep.is_local and ep.base_url == "http://127.0.0.1:9/v1"


@pytest.mark.parametrize("option", [["--model", "local"], ["--endpoint", "local"],
                                    ["--endpoint", "local:smol"]])
def test_chat_replays_a_trace_with_local(store, no_config, option):
    tid = _test_trace(store)
    r = runner.invoke(app, ["--db", str(store), "chat", *option, "--replay", str(tid),
                            "--max-tokens", "2", "--threads", "2", "--n-ctx", "4096",
                            "--no-task"])
    assert r.exit_code == 0, r.output
    assert "mean score" in r.output
    assert "Connection error" not in r.output and "no model" not in r.output


@pytest.mark.parametrize("option", [["--model", "local:smol"], ["--endpoint", "local"]])
def test_eval_with_local(store, no_config, option):
    tid = _test_trace(store)
    r = runner.invoke(app, ["--db", str(store), "eval", *option, "--trace-id", str(tid),
                            "--max-tokens", "2", "--threads", "2", "--n-ctx", "4096",
                            "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["metrics"]["errors"] == 0 and rep["metrics"]["n"] > 0


def test_the_app_chat_tester_and_the_backend_use_the_same_resolver(store, no_config):
    from workbench.chat.tester import open_session

    db = open_db(store)
    try:
        for ref in ("endpoint:local", "endpoint:local:smol", "local", "smol"):
            session = open_session(db, ref, n_threads=1)
            try:
                assert isinstance(session.backend, LlamaCppBackend)
                assert session.backend.model_path == builtin_gguf()
            finally:
                session.backend.close()
        backend = open_backend(None, "local:smol", db=db, n_ctx=2048, n_threads=1)
        assert isinstance(backend, LlamaCppBackend)
        backend.close()
    finally:
        db.conn.close()
