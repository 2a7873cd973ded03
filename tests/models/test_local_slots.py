"""The built-in `local` member (llama.cpp in-process) asked several requests at once: a model
object is never used by two threads (it is not thread-safe), every request is answered, and
`[local] slots = N` in the config lets N run at once, each on its own model object."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

import pytest

from workbench.committee.members import Member
from workbench.committee.prompt import call_schema
from workbench.models.endpoints import get_endpoint, local_slots
from workbench.core.errors import InputError

TOOL = {"type": "function", "function": {
    "name": "lookup", "parameters": {"type": "object", "properties": {
        "query": {"type": "string", "maxLength": 20}}, "required": ["query"]}}}


def ask_line(k: int) -> list[dict]:
    return [{"role": "user", "content": f"Call lookup for item {k}. Answer in JSON."}]


def test_slots_come_from_the_config():
    assert local_slots({}) == 1
    assert local_slots({"local": {"slots": 3}}) == 3
    for bad in (0, 65, "2", True, 1.5):
        with pytest.raises(InputError, match="local.slots"):
            local_slots({"local": {"slots": bad}})


def test_a_configured_slot_count_reaches_the_endpoint(tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text("[local]\nslots = 2\n")
    monkeypatch.setenv("WORKBENCH_CONFIG", str(config))
    assert get_endpoint("local").max_concurrency == 2
    config.write_text("")
    assert get_endpoint("local").max_concurrency == 1


def test_threads_asking_one_slot_at_once_share_one_model_in_turn():
    """Three threads call the member at the same moment (as a cancelled request's thread can
    run beside a new one): they take the one model object in turn, and all are answered."""
    member = Member(replace(get_endpoint("local"), max_tokens=48))
    schema = call_schema([TOOL])
    start = threading.Barrier(3)
    out: list = [None] * 3

    def run(k: int) -> None:
        start.wait(30)
        try:
            out[k] = member._local(ask_line(k), schema)
        except Exception as e:  # noqa: BLE001 - recorded, asserted below
            out[k] = e

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    try:
        assert not [x for x in out if isinstance(x, Exception)], out
        assert all(x is not None and x.raw for x in out)
        assert len(member._llms) == 1
    finally:
        asyncio.run(member.close())


def test_two_slots_answer_two_requests_at_once():
    member = Member(replace(get_endpoint("local"), max_tokens=48, max_concurrency=2))
    schema = call_schema([TOOL])

    async def run() -> list:
        try:
            return await asyncio.gather(*(member.ask(ask_line(k), schema, [TOOL])
                                          for k in range(4)), return_exceptions=True)
        finally:
            models = len(member._llms)
            await member.close()
            assert models == 2      # one per slot, reused by the later requests

    answers = asyncio.run(run())
    assert not [a for a in answers if isinstance(a, Exception)], answers
