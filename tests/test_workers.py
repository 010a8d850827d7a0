"""A hub of several worker processes on one port (``manage.py up --workers N``, docs/deployment.md).

Real processes on the suite's database (SQLite, or a fresh PostgreSQL database) and Redis:
push from a post on one worker to a stream on another, one claim winner across workers, one
rate limit across workers, a killed worker replaced, the sweeper's and the relay's duties
taken over from a killed holder, and the whole hub drained at SIGTERM.

Which worker serves a request is the kernel's choice; a test that needs two workers opens
connections until it holds one of each (``/healthz`` names the process), and keeps them.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.hubproc import PG_URL, ROOT, Hub, hub_env, mint_key, running_hub
from tests.test_push import REDIS_URL, _redis_reachable

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not _redis_reachable(), reason=f"no Redis at {REDIS_URL}: a hub of several workers needs one"),
]

SWEEP = {"ARC_PRESENCE_TTL_SEC": "5"}  # the sweeper ticks every ~1.7 s, its duty lasts three ticks


def _worker_env(**extra: str) -> dict[str, str]:
    return {"ARC_REDIS_URL": REDIS_URL, **SWEEP, **extra}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    home = tmp_path_factory.mktemp("workers")
    env = _worker_env(ARC_RATE_LIMIT="1/3600,4")
    with running_hub(home, args=("--workers", "2", "--spool-dir", str(home / "spool")), extra_env=env) as hub:
        yield hub


class Conn:
    """One kept-alive connection to the hub, so to one worker (``pid``)."""

    def __init__(self, hub: Hub) -> None:
        parts = urlsplit(hub.url)
        self.http = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        self.pid = int(self.call("GET", "/healthz")[1]["result"]["pid"])

    def call(
        self, method: str, path: str, payload: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        body = json.dumps(payload) if payload is not None else None
        self.http.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = self.http.getresponse()
        return response.status, json.loads(response.read())


def _one_per_worker(hub: Hub, count: int = 2, attempts: int = 400) -> list[Conn]:
    """Connections to ``count`` different workers (the kernel spreads new connections; we keep trying)."""
    found: dict[int, Conn] = {}
    for _ in range(attempts):
        batch = [Conn(hub) for _ in range(8)]
        for conn in batch:
            if conn.pid not in found and len(found) < count:
                found[conn.pid] = conn
            else:
                conn.http.close()
        if len(found) == count:
            return list(found.values())
    pytest.fail(f"{attempts * 8} connections reached only workers {sorted(found)}")


def _pidfile(hub: Hub) -> dict[str, Any]:
    return json.loads((hub.home / ".arc.pid").read_text())


def _wait_for(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"still waiting after {timeout:g}s for {what}")


def _duty_holder(hub: Hub, name: str) -> str | None:
    """Who holds a duty, read from the hub's own database."""
    query = "SELECT holder FROM coordination_duty WHERE name = %s"
    database_url = hub.env.get("ARC_DATABASE_URL")
    if database_url:
        import psycopg

        with psycopg.connect(database_url) as conn:
            row = conn.execute(query, (name,)).fetchone()
    else:
        with sqlite3.connect(hub.home / "arc.sqlite3") as conn:
            row = conn.execute(query.replace("%s", "?"), (name,)).fetchone()
    return str(row[0]) if row else None


def _holder_pid(holder: str | None) -> int | None:
    return int(holder.rsplit(":", 2)[1]) if holder else None


def test_more_than_one_worker_without_redis_is_refused_plainly(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "up", "--port", "0", "--workers", "2"],
        env=hub_env(tmp_path, PG_URL or None),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "--workers 2 needs Redis" in done.stderr
    assert "--redis-url" in done.stderr


def test_the_supervisor_owns_the_pidfile_and_two_workers_serve_the_port(hub: Hub) -> None:
    info = _pidfile(hub)
    assert info["pid"] == hub.pid  # `stop` signals the supervisor
    assert len(info["workers"]) == 2
    assert hub.pid not in info["workers"]
    conns = _one_per_worker(hub)
    assert {c.pid for c in conns} <= set(_pidfile(hub)["workers"])
    # A balancer polls /readyz; so does this (its channel-layer probe has 2 s, which a loaded machine's first
    # round trip to Redis can take): ready within half a minute of starting, and saying so.
    deadline = time.monotonic() + 30
    while (ready := conns[0].call("GET", "/readyz"))[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ready == (200, ready[1])
    assert ready[1]["result"]["database"] == "ok"
    assert ready[1]["result"]["channel_layer"] == "ok"


def test_a_post_on_one_worker_reaches_a_stream_on_the_other(hub: Hub) -> None:
    reader, poster = _one_per_worker(hub)
    assert reader.call("POST", "/v1/sessions", {"agent_id": "far-reader"})[0] in (200, 201)
    reader.http.request("GET", "/v1/stream?agent_id=far-reader")
    stream = reader.http.getresponse()
    assert stream.status == 200
    assert stream.readline().startswith(b": connected")
    status, posted = poster.call(
        "POST", "/v1/messages", {"from_agent": "near-poster", "to_agent": "far-reader", "body": "across workers"}
    )
    assert status == 201, posted
    while True:
        line = stream.readline()
        assert line, "the stream ended before the message came"
        if line.startswith(b"data: "):
            message = json.loads(line[6:])
            break
    assert message["id"] == posted["result"]["id"]
    assert message["body"] == "across workers"
    reader.http.close()


def test_a_claim_race_across_workers_has_exactly_one_winner(hub: Hub) -> None:
    conns = _one_per_worker(hub)
    results: list[tuple[int, dict[str, Any]]] = []
    barrier = threading.Barrier(16)

    def claim(index: int) -> None:
        conn = Conn(hub) if index >= 2 else conns[index]
        barrier.wait()
        results.append(conn.call("POST", "/v1/claims", {"owner_agent_id": f"racer-{index}", "claim_key": "one-prize"}))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 16
    assert all(status in (200, 201) for status, _ in results), results
    winners = [body["result"]["owner_agent_id"] for _, body in results if body["acquired"]]
    assert len(winners) == 1, results
    assert all(body["result"]["owner_agent_id"] == winners[0] for _, body in results)


def test_the_rate_limit_is_one_bucket_across_workers(hub: Hub) -> None:
    key = mint_key(hub, "limited")
    auth = {"Authorization": f"Bearer {key}"}
    first, second = _one_per_worker(hub)
    statuses = []
    for index in range(10):  # alternating workers; the limit is a burst of 4, refilled one an hour
        conn = first if index % 2 == 0 else second
        payload = {"from_agent": "limited", "channel": "general", "body": f"post {index}"}
        statuses.append(conn.call("POST", "/v1/messages", payload, headers=auth)[0])
    assert statuses.count(201) == 4, statuses
    assert statuses.count(429) == 6, statuses


def test_a_killed_worker_is_replaced_and_its_duties_are_taken_over(hub: Hub) -> None:
    holder = _wait_for("the sweeper duty to be held", lambda: _duty_holder(hub, "sweeper"))
    victim = _holder_pid(holder)
    assert victim is not None
    workers = _pidfile(hub)["workers"]
    assert victim in workers
    os.kill(victim, signal.SIGKILL)
    replaced = _wait_for(
        "the supervisor to start another worker",
        lambda: (w := _pidfile(hub)["workers"]) and victim not in w and len(w) == 2 and w,
    )
    _wait_for(
        "a live worker to take the sweeper duty",
        lambda: _holder_pid(_duty_holder(hub, "sweeper")) in replaced,
    )
    spool = hub.home / "spool"
    _wait_for(
        "a live worker to serve the relay",
        lambda: _holder_pid(_duty_holder(hub, f"relay:{spool}")) in replaced,
    )
    assert hub.proc.poll() is None  # the hub itself never stopped
    assert Conn(hub).call("GET", "/v1/hub-info")[0] == 200


def test_sigterm_drains_every_worker_and_the_supervisor_exits_cleanly(tmp_path: Path) -> None:
    args = ("--workers", "2", "--no-relay")
    with running_hub(tmp_path / "drain", args=args, extra_env=_worker_env()) as hub:
        workers = _pidfile(hub)["workers"]
        conns = _one_per_worker(hub)
        streams = []
        for index, conn in enumerate(conns):
            assert conn.call("POST", "/v1/sessions", {"agent_id": f"w{index}"})[0] in (200, 201)
            conn.http.request("GET", f"/v1/stream?agent_id=w{index}")
            streams.append(conn.http.getresponse())
        for stream in streams:
            assert stream.readline().startswith(b": connected")
        hub.proc.send_signal(signal.SIGTERM)
        for stream in streams:
            assert b'event: hub\ndata: {"action": "draining"}' in stream.read()
        assert hub.proc.wait(60) == 0
        assert not (hub.home / ".arc.pid").exists()
        for pid in workers:
            _wait_for(f"worker {pid} to exit", lambda pid=pid: not _alive(pid), timeout=30)


def _alive(pid: int) -> bool:
    """Is ``pid`` a running process (a zombie nobody reaped yet has stopped)?"""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_killed_supervisor_takes_its_workers_with_it(tmp_path: Path) -> None:
    with running_hub(tmp_path / "orphans", args=("--workers", "2", "--no-relay"), extra_env=_worker_env()) as hub:
        workers = _pidfile(hub)["workers"]
        hub.proc.send_signal(signal.SIGKILL)
        hub.proc.wait(10)
        for pid in workers:  # no worker is left serving a port nobody supervises
            _wait_for(f"worker {pid} to exit after its supervisor", lambda pid=pid: not _alive(pid), timeout=30)


def test_a_websocket_idle_longer_than_redis_blocks_still_hears_a_post_from_another_worker(hub: Hub) -> None:
    # channels-redis blocks 5 s on Redis for a message; redis-py's socket waited 5 s too, so an idle
    # receive failed and took the socket down. Idle past that, then talk to it from elsewhere.
    import websockets.sync.client
    from websockets.typing import Origin

    with websockets.sync.client.connect(
        hub.url.replace("http://", "ws://") + "/v1/ws", origin=Origin(hub.url), open_timeout=30
    ) as ws:
        ws.send(json.dumps({"type": "register", "id": "r1", "agent_id": "idle-socket"}))
        assert json.loads(ws.recv(timeout=30))["type"] == "registered"
        time.sleep(7)  # longer than channels-redis's 5 s block: what failed is the wait itself
        poster = Conn(hub)
        status, posted = poster.call(
            "POST", "/v1/messages", {"from_agent": "waker", "to_agent": "idle-socket", "body": "still there?"}
        )
        assert status == 201, posted
        while True:
            frame = json.loads(ws.recv(timeout=30))
            if frame["type"] == "message":
                break
        assert frame["message"]["id"] == posted["result"]["id"]
