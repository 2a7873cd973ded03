"""The analyst's configuration: `~/.config/workbench/config.toml` (or `$WORKBENCH_CONFIG`).

    analyst = "ada"             # author name of revisions written in the app (default: OS user)
    theme = "textual-dark"      # any Textual theme name
    [keys]                      # binding id -> keys, e.g. a second key for an action
    "traces.open" = "enter,o"
"""

from __future__ import annotations

import getpass
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from workbench.core.errors import InputError


def config_path() -> Path:
    env = os.environ.get("WORKBENCH_CONFIG")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "workbench" / "config.toml"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "analyst"


@dataclass
class Config:
    analyst: str = field(default_factory=_os_user)
    theme: str = "textual-dark"
    keys: dict[str, str] = field(default_factory=dict)
    path: Path | None = None


def read_config_file(path: Path | None = None) -> dict:
    """The config file as a dict ({} when there is none); a broken file is an InputError."""
    path = path or config_path()
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(str(e), path=str(path)) from None


def load_config(path: Path | None = None) -> Config:
    """Read the config file; a missing file gives the defaults, a broken one an InputError."""
    path = path or config_path()
    data = read_config_file(path)
    cfg = Config(path=path)
    if "analyst" in data:
        if not isinstance(data["analyst"], str) or not data["analyst"].strip():
            raise InputError("must be a non-empty string", path=str(path), field="analyst")
        cfg.analyst = data["analyst"].strip()
    if "theme" in data:
        if not isinstance(data["theme"], str):
            raise InputError("must be a string", path=str(path), field="theme")
        cfg.theme = data["theme"]
    keys = data.get("keys", {})
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise InputError("must be a table of binding id = \"keys\"", path=str(path), field="keys")
    cfg.keys = dict(keys)
    return cfg
