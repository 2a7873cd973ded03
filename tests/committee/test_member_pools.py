"""A member with many requests in flight spreads them over several clients (a connection pool
each, `POOL_SIZE` requests apiece): every request still goes out at once and is answered."""

from __future__ import annotations

import asyncio

from tests.scripted_openai import ScriptedServer, tool_call_reply
from workbench.committee.members import POOL_SIZE, Member
from workbench.committee.prompt import call_schema
from workbench.models.endpoints import Endpoint

TOOL = {"type": "function", "function": {
    "name": "lookup", "parameters": {"type": "object", "properties": {
        "query": {"type": "string"}}, "required": ["query"]}}}


def test_requests_beyond_one_pool_go_out_together_and_are_answered():
    n = 2 * POOL_SIZE + 3
    reply = {**tool_call_reply("lookup", {"query": "x"}), "delay": 0.5}
    server = ScriptedServer(lambda body: reply)
    try:
        member = Member(Endpoint(name="m", base_url=server.url, model="m", max_concurrency=n,
                                 retries=0))
        assert len(member._shards) == 3

        async def run() -> list:
            try:
                return await asyncio.gather(*(member.ask(
                    [{"role": "user", "content": f"find {k}"}], call_schema([TOOL]), [TOOL])
                    for k in range(n)))
            finally:
                await member.close()

        answers = asyncio.run(run())
        assert [a.value for a in answers] == [{"name": "lookup", "arguments": {"query": "x"}}] * n
        assert server.max_in_flight == n          # none waited for another's pool
        assert member._in_flight == [0, 0, 0]     # every request gave its pool back
    finally:
        server.close()
