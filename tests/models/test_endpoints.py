"""Endpoint configuration: named endpoints from the config file, keys only from the environment."""

from __future__ import annotations

import pytest

from workbench.models.endpoints import endpoints, get_endpoint
from workbench.core.errors import InputError


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    monkeypatch.setenv("WORKBENCH_CONFIG", str(path))
    return path


def test_named_endpoint_with_key_from_environment(config_file, monkeypatch):
    config_file.write_text('[endpoints.big]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n'
                           'api_key_env = "BIG_KEY"\nmax_tokens = 64\n')
    ep = get_endpoint("big")
    assert (ep.base_url, ep.model, ep.max_tokens) == ("http://127.0.0.1:9/v1", "m", 64)
    with pytest.raises(InputError, match="needs the environment variable BIG_KEY"):
        ep.api_key()
    monkeypatch.setenv("BIG_KEY", "sk-secret")
    assert ep.api_key() == "sk-secret"
    assert "sk-secret" not in repr(ep.public()) and "api_key" not in ep.public()


def test_keys_in_the_file_are_refused(config_file):
    config_file.write_text('[endpoints.x]\nbase_url = "http://h/v1"\nmodel = "m"\napi_key = "sk-1"\n')
    with pytest.raises(InputError, match="endpoints.x.api_key: put the key in an environment variable"):
        endpoints()


def test_unknown_endpoint_lists_configured_ones(config_file):
    config_file.write_text('[endpoints.local]\nbase_url = "http://127.0.0.1:8080/v1"\nmodel = "s"\n')
    with pytest.raises(InputError, match="unknown endpoint 'nope'; configured: local"):
        get_endpoint("nope")


def test_one_off_url_endpoint_needs_no_config(config_file):
    ep = get_endpoint("http://127.0.0.1:8080/v1#smol")
    assert (ep.base_url, ep.model, ep.api_key()) == ("http://127.0.0.1:8080/v1", "smol", "none")


def test_broken_config_names_the_file(config_file):
    config_file.write_text("[endpoints\n")
    with pytest.raises(InputError, match="config.toml"):
        endpoints()
