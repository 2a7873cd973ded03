"""OpenAI-compatible endpoints (llama.cpp server, vLLM, hosted APIs), named in the config file.

    [endpoints.local]
    base_url = "http://127.0.0.1:8080/v1"
    model = "smollm2"
    api_key_env = "OPENAI_API_KEY"   # the NAME of the variable holding the key, never the key

Keys come from the environment only: they are never written to the store, logs or exports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from workbench.config import config_path, read_config_file
from workbench.errors import InputError


@dataclass(frozen=True)
class Endpoint:
    name: str
    base_url: str
    model: str
    api_key_env: str | None = None
    temperature: float = 0.0
    max_tokens: int = 512
    timeout: float = 120.0

    def api_key(self) -> str:
        """The key from the environment ("none" for servers that need none, like llama.cpp)."""
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise InputError(f"endpoint {self.name!r} needs the environment variable"
                                 f" {self.api_key_env}")
            return key
        return "none"

    def client(self):
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=self.api_key(), timeout=self.timeout,
                      max_retries=2)

    def public(self) -> dict:
        """What may be stored or shown: everything but the key."""
        return {"name": self.name, "base_url": self.base_url, "model": self.model}


def endpoints(config: dict | None = None) -> dict[str, Endpoint]:
    config = read_config_file() if config is None else config
    out = {}
    for name, spec in (config.get("endpoints") or {}).items():
        if not isinstance(spec, dict) or "base_url" not in spec or "model" not in spec:
            raise InputError(f"endpoint {name!r} needs base_url and model", path=str(config_path()),
                             field=f"endpoints.{name}")
        if "api_key" in spec:
            raise InputError("put the key in an environment variable and name it in api_key_env;"
                             " keys are never read from files", path=str(config_path()),
                             field=f"endpoints.{name}.api_key")
        known = {k: spec[k] for k in ("api_key_env", "temperature", "max_tokens", "timeout")
                 if k in spec}
        out[name] = Endpoint(name=name, base_url=spec["base_url"], model=spec["model"], **known)
    return out


def get_endpoint(name: str, config: dict | None = None) -> Endpoint:
    """An endpoint by name; `URL#MODEL` also works for a one-off endpoint without a config."""
    if "://" in name:
        url, _, model = name.partition("#")
        return Endpoint(name=name, base_url=url, model=model or "default")
    found = endpoints(config)
    if name not in found:
        raise InputError(f"unknown endpoint {name!r}; configured: {', '.join(found) or 'none'}"
                         f" (see {config_path()})")
    return found[name]
