"""``manage.py bench`` and ``coordination.bench`` against a live hub, with tiny sizes.

The figures themselves are not asserted (the machine is shared and noisy), only that
every measurement ran, delivered everything and reports sane, JSON-serialisable values.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from coordination import bench, bench_mcp
from tests.arcref import arc, arc_py_path
from tests.hubproc import Hub, running_hub

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
    relay_bursts=1,
    wait_sec=5,
    mcp_round_trips=3,
    mcp_sends=5,
    a2a_round_trips=3,
    seed=1,
)


def _sane_latency(result: dict, n: int) -> None:
    assert result["n"] == n
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]


@pytest.mark.live
def test_every_measurement_runs_against_the_hub_and_reports_sane_json(live_hub: Hub) -> None:
    report = bench.run(replace(TINY, url=live_hub.url), mcp_phase=bench_mcp.phase)
    assert json.loads(json.dumps(report)) == report
    results = report["results"]
    assert list(results) == ["posts", "push", "fanout", "relay", "relay_burst", "claims", "idle", "mcp", "a2a"]

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
    assert results["relay_burst"]["status"] == "not implemented"

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

    for transport in ("stdio", "http"):  # two agents, each its own MCP client: A sends, B reads
        mcp = results["mcp"][transport]
        assert (mcp["status"], mcp["round_trip"]["lost"], mcp["sends"]) == ("ok", 0, 5), mcp
        _sane_latency(mcp["round_trip"], 3)
        assert mcp["sends_per_sec"] > 0

    assert results["a2a"]["status"] == "ok", results["a2a"]
    _sane_latency(results["a2a"], 3)

    table = bench.format_table(report)
    assert "claim races (8 clients): exactly one winner  3/3" in table
    assert "A2A SendMessage, blocking: calls answered" in table
    assert "fan-out 5 SSE x 3: delivered" in table
    assert "MCP over /mcp: 5 DMs in a row, sends/s" in table


@pytest.mark.live
def test_the_mcp_phase_without_an_mcp_client_says_so(live_hub: Hub) -> None:
    report = bench.run(replace(TINY, url=live_hub.url, only=("mcp",)))
    assert report["results"]["mcp"] == {
        "status": "error",
        "reason": "no MCP client was handed to the bench (coordination.bench_mcp)",
    }
    assert "mcp failed" in bench.format_table(report)


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


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--mcp-transports", "stdio,pigeon"), "unknown MCP transports: pigeon"),
        (("--mcp-sends", "0"), "at least one round trip and one send"),
    ],
)
def test_the_command_rejects_bad_mcp_sizes_before_measuring(flags: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("bench", "--url", "http://127.0.0.1:9", "--only", "mcp", *flags, "--json-only")


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


# ── Relay bursts: 20 agents x 5 requests written at once ─────────────────────

BURST = replace(TINY, only=("relay_burst",), relay_burst_agents=20, relay_burst_per_agent=5)
MIX = [
    "POST /v1/sessions",
    "POST /v1/messages",
    "GET /v1/messages?channel&since_id",
    "POST /v1/claims",
    "GET /v1/hub-info",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def arc_py_server(workdir: Path, spool: Path) -> Iterator[str]:
    """arc.py itself (``arc.py --spool-dir``), which starts its own 250 ms-poll relay on ``spool``."""
    script = str(arc_py_path())
    port = _free_port()
    command = [sys.executable, script, "--port", str(port), "--storage", str(workdir / "arc.sqlite3")]
    workdir.mkdir(parents=True, exist_ok=True)
    output = workdir / "arc.log"
    with output.open("wb") as log:
        proc = subprocess.Popen([*command, "--spool-dir", str(spool), "--quiet"], cwd=workdir, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/v1/channels", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"arc.py did not start: {output.read_text()[-2000:]}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _every_request_answered_ok(result: dict[str, Any], *, bursts: int) -> None:
    requests = 100 * bursts
    assert result["status"] == "ok", result
    assert (result["agents"], result["per_agent"], result["mix"]) == (20, 5, MIX)
    assert (result["bursts"], result["requests"], result["answered"]) == (bursts, requests, requests)
    assert (result["failures"], result["failure_samples"]) == (0, [])
    _sane_latency(result, requests)
    assert 0 < result["write_ms"] < result["wall_ms"]
    assert list(result["by_kind"]) == MIX
    for kind in result["by_kind"].values():
        assert (kind["requests"], kind["answered"], kind["failures"]) == (20 * bursts, 20 * bursts, 0)
        assert kind["p50_ms"] > 0
    assert [(b["requests"], b["answered"], b["failures"]) for b in result["per_burst"]] == [(100, 100, 0)] * bursts
    for b in result["per_burst"]:
        assert 0 < b["p50_ms"] <= b["p99_ms"] <= b["max_ms"] <= b["wall_ms"] + 0.01  # first written → last answered
    http = result["http"]  # the same requests over HTTP, for reference
    assert (http["status"], http["requests"], http["failures"]) == ("ok", requests, 0)
    _sane_latency(http, requests)
    assert http["wall_ms"] > 0


@pytest.mark.live
def test_a_burst_of_100_requests_from_20_agents_through_arc_pys_own_relay(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with arc_py_server(tmp_path / "arc", spool) as url:
        report = bench.run(replace(BURST, url=url, spool_dir=str(spool), relay_bursts=2))
    assert json.loads(json.dumps(report)) == report
    assert report["config"]["relay_burst_agents"] == 20
    _every_request_answered_ok(report["results"]["relay_burst"], bursts=2)
    assert len(list(spool.glob("requests/*/*.work"))) == 200  # each taken by arc.py's relay
    assert len(list(spool.glob("responses/*/*.json"))) == 200
    assert len(list(spool.glob("requests/bench-burst-*"))) == 40  # 20 agents a burst, each with its own spool dir
    table = bench.format_table(report)
    assert "relay burst, 20 agents x 5 requests at once: answered" in table
    assert "200/200" in table


@pytest.mark.live
def test_a_burst_of_100_requests_from_20_agents_through_this_hubs_relay(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with running_hub(tmp_path / "hub", args=("--spool-dir", str(spool))) as hub:
        report = bench.run(replace(BURST, url=hub.url, spool_dir=str(spool)))
        _, claims = hub.call("GET", "/v1/claims?active_only=true")
        _, agents = hub.call("GET", "/v1/agents")
    _every_request_answered_ok(report["results"]["relay_burst"], bursts=1)
    assert len(list(spool.glob("requests/*/*.work"))) == 100
    assert sum(c["owner_agent_id"].startswith("bench-burst-") for c in claims["result"]) == 20
    assert sum(a["agent_id"].startswith("bench-burst-") for a in agents["result"]) == 20


@pytest.mark.live
def test_a_spool_no_relay_serves_is_reported_as_no_response(live_hub: Hub, tmp_path: Path) -> None:
    unserved = tmp_path / "nobody-serves-this"
    config = replace(TINY, url=live_hub.url, only=("relay", "relay_burst"), spool_dir=str(unserved), wait_sec=0.3)
    report = bench.run(replace(config, relay_bursts=2))
    relay, burst = report["results"]["relay"], report["results"]["relay_burst"]
    assert relay["status"] == "no response"
    assert (burst["status"], burst["requests"], burst["answered"]) == ("no response", 100, 0)
    assert "no relay answered any of 100 requests" in burst["reason"]
    assert len(list(unserved.glob("requests/*/*.json"))) == 1 + 100  # the first burst is where it gave up
    rows = {key: value for key, _, value in bench.metric_rows(report)}
    assert (rows["relay.p50_ms"], rows["relay_burst.p50_ms"]) == ("no response", "no response")


def test_a_burst_times_each_answer_and_counts_error_envelopes(tmp_path: Path) -> None:
    """``spool_burst`` against a stand-in relay that answers claims with 409 and leaves hub-info unanswered."""
    spool = tmp_path / "spool"
    agents = [bench.SpoolClient(spool, f"agent-{k}") for k in range(3)]
    plan = [
        bench.SpoolRequest(client, label, method, path, None)
        for client in agents
        for label, method, path in [
            ("post", "POST", "/v1/messages"),
            ("claim", "POST", "/v1/claims"),
            ("info", "GET", "/v1/hub-info"),
        ]
    ]
    stop = threading.Event()

    def stand_in_relay() -> None:
        while not stop.is_set():
            for request in sorted(spool.glob("requests/*/*.json")):
                envelope = json.loads(request.read_text())
                request.replace(request.with_suffix(".work"))
                if envelope["path"] == "/v1/hub-info":
                    continue
                status = 409 if envelope["path"] == "/v1/claims" else 201
                answer = {"request_id": envelope["request_id"], "ok": status < 400, "status": status, "error": "taken"}
                target = spool / "responses" / request.parent.name / request.name
                tmp = target.with_name(f".{target.name}.tmp")
                tmp.write_text(json.dumps(answer))
                tmp.replace(target)
            time.sleep(0.001)

    relay = threading.Thread(target=stand_in_relay, daemon=True)
    relay.start()
    try:
        started = time.perf_counter()
        bench.spool_burst(plan, max_sec=10, idle_sec=0.3)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        relay.join(5)
    assert elapsed < 5  # ended by the idle wait, not max_sec
    answered: dict[str, list[bool]] = {r.label: [] for r in plan}
    for r in plan:
        if r.answered is not None:
            answered[r.label].append(r.check())
            assert r.written is not None
            assert 0 < r.answered - r.written < elapsed
    assert answered == {"post": [True] * 3, "claim": [False] * 3, "info": []}
    assert [r.problem for r in plan if r.label == "claim"] == ["claim: 409 taken"] * 3
