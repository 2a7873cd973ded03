"""The throughput bench (bench/throughput_bench.py) on a tiny run: the requests in flight reach
the endpoint's max_concurrency and never pass it, and the turns/s it reports follow from the
turns and seconds it measured. No timing goal is asserted (the machine is shared); the >= 90%
goal is BENCHMARKS.md's."""

from __future__ import annotations

import pytest

from bench.throughput_bench import measure, rates, section


def test_rates_follow_from_turns_and_seconds():
    r = rates(40, 10.0, [10.5, 11.0, 12.5], 14.0, 8, 0.05)
    assert r["ideal_turns_per_s"] == pytest.approx(160.0)
    assert r["voting_s"] == pytest.approx(2.0)          # first progress to last decided turn
    assert r["turns_per_s"] == pytest.approx(20.0)
    assert r["ratio"] == pytest.approx(0.125)
    assert r["job_s"] == pytest.approx(4.0)
    assert r["job_turns_per_s"] == pytest.approx(10.0)
    assert r["job_ratio"] == pytest.approx(0.0625)


def test_a_tiny_run_keeps_the_configured_requests_in_flight(tmp_path):
    # 250 ms a request: time enough for a loaded machine to send the next 8 meanwhile
    r = measure(tmp_path, concurrency=8, latency=0.25, turns=40, members=1)
    assert r["turns"] == 40 and r["requests"] == 40
    assert r["max_in_flight"] == [8]           # reached, and never more than the endpoint allows
    assert r["outcomes"] == {"revised": 20, "confirmed": 20}
    # 40 turns, 8 at a time, 250 ms each: at least 5 rounds, so never above the ideal
    assert 0 < r["turns_per_s"] <= r["ideal_turns_per_s"]
    assert r["voting_s"] >= 5 * 0.25
    assert r["turns_per_s"] == pytest.approx(40 / r["voting_s"])
    assert r["job_s"] >= r["voting_s"]
    text = section({"latency": 0.25, "rounds": 5, "members": 1, "runs": [r]})
    assert f"| 8 | 40 | 40 | 8 | {r['turns_per_s']:.1f} |" in text
