"""``manage.py bench`` and ``coordination.bench`` against a live hub, with tiny sizes.

The figures themselves are not asserted (the machine is shared and noisy), only that
every measurement ran, delivered everything and reports sane, JSON-serialisable values.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from coordination import bench
from tests.arcref import arc
from tests.hubproc import Hub

TINY = bench.BenchConfig(
    url="",
    concurrency=(1, 4),
    posts=20,
    push_messages=5,
    gap_ms=5,
    fanout_receivers=(5,),
    fanout_messages=3,
    fanout_spacing_ms=10,
    racers=8,
    races=3,
    idle_connections=20,
    idle_posts=20,
    relay_requests=3,
    wait_sec=5,
    seed=1,
)


def _sane_latency(result: dict, n: int) -> None:
    assert result["n"] == n
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]


@pytest.mark.live
def test_every_measurement_runs_against_the_hub_and_reports_sane_json(live_hub: Hub) -> None:
    report = bench.run(replace(TINY, url=live_hub.url))
    assert json.loads(json.dumps(report)) == report
    results = report["results"]
    assert list(results) == ["posts", "push", "fanout", "relay", "claims", "idle"]

    assert [r["concurrency"] for r in results["posts"]] == [1, 4]
    for posts in results["posts"]:
        assert (posts["posts"], posts["errors"]) == (20, 0)
        assert posts["per_sec"] > 0
        assert 0 < posts["p50_ms"] <= posts["p99_ms"]

    push = results["push"]
    for transport in ("longpoll", "sse"):
        assert (push[transport]["status"], push[transport]["lost"]) == ("ok", 0)
        _sane_latency(push[transport], 5)
    assert push["ws"]["status"] in {"ok", "unsupported"}, push["ws"]
    if push["ws"]["status"] == "ok":
        _sane_latency(push["ws"], 5)

    (fanout,) = results["fanout"]
    assert fanout["connected"] == 5
    assert (fanout["delivered"], fanout["expected"], fanout["all_delivered"]) == (15, 15, True)
    assert 0 < fanout["last_p50_ms"] <= fanout["last_max_ms"]

    assert results["relay"]["status"] == "not implemented"  # no --spool-dir

    claims = results["claims"]
    assert claims["winners"] == [1, 1, 1]
    assert claims["exactly_one"]
    assert claims["losers_see_winner"]
    assert claims["errors"] == 0

    idle = results["idle"]
    assert (idle["status"], idle["baseline"]["posts"], idle["baseline"]["errors"]) == ("ok", 20, 0)
    assert list(idle["transports"]) == ["sse", "ws"]
    for kind, held in idle["transports"].items():
        if kind == "ws" and push["ws"]["status"] == "unsupported":
            assert held["status"] == "unsupported"
            continue
        assert (held["status"], held["opened"], held["held"]) == ("ok", 20, 20)
        assert (held["with_idle"]["posts"], held["with_idle"]["errors"]) == (20, 0)
        assert held["ratio"] > 0

    table = bench.format_table(report)
    assert "claim races (8 clients): exactly one winner  3/3" in table
    assert "fan-out 5 SSE x 3: delivered" in table


@pytest.mark.live
def test_the_relay_round_trip_is_timed_through_arcs_own_spool_relay(live_hub: Hub, tmp_path: Path) -> None:
    """The spool client writes what Arc's ``FileRelayServer`` reads, and reads what it answers."""
    ref = arc()
    spool = tmp_path / "spool"
    relay = ref.FileRelayServer(
        ref.FileRelayConfig(base_url=live_hub.url, spool_dir=str(spool), poll_interval_sec=0.01)
    )
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    try:
        report = bench.run(replace(TINY, url=live_hub.url, only=("relay",), spool_dir=str(spool)))
    finally:
        relay.request_stop()
        thread.join(5)
    result = report["results"]["relay"]
    assert (result["status"], result["errors"]) == ("ok", 0)
    _sane_latency(result, 3)
    assert len(list(spool.glob("requests/*/*.work"))) == 3  # taken by the relay, as Arc's spool keeps them


@pytest.mark.live
def test_the_command_prints_json_on_stdout_and_the_table_on_stderr(live_hub: Hub) -> None:
    out, err = StringIO(), StringIO()
    call_command(
        "bench",
        "--url",
        live_hub.url,
        "--only",
        "posts,claims",
        "--concurrency",
        "2",
        "--posts",
        "10",
        "--racers",
        "4",
        "--races",
        "2",
        stdout=out,
        stderr=err,
    )
    report = json.loads(out.getvalue())
    assert list(report["results"]) == ["posts", "claims"]
    assert report["results"]["posts"][0]["posts"] == 10
    assert report["results"]["claims"]["winners"] == [1, 1]
    assert "POST /v1/messages c=2, posts/s" in err.getvalue()


def test_the_command_rejects_an_unknown_measurement() -> None:
    with pytest.raises(CommandError, match="unknown measurements: speed"):
        call_command("bench", "--url", "http://127.0.0.1:9", "--only", "posts,speed", "--json-only")


def test_chunked_bodies_decode_however_they_are_split() -> None:
    body = b"4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n"
    for size in (1, 2, 3, 7, len(body)):
        decoder = bench.Dechunker()
        out = b"".join(decoder.feed(body[i : i + size]) for i in range(0, len(body), size))
        assert out == b"Wikipedia in \r\n\r\nchunks."
        assert decoder.done
