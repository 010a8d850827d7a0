"""Two hubs of two workers each behind a real nginx, on one database and one Redis (docs/deployment.md).

Four hub processes on two ports, one nginx in front with the configuration docs/deployment.md
gives: a post through the balancer reaches a stream held through it, wherever each landed; a
claim race through it has one winner; concurrent leases of one inbox never hand out a message
twice; and when one hub is killed while an agent posts through the balancer, every post the
agent was told was stored is stored, each once (the client's retries carry idempotency keys).

nginx is Debian's package (``scripts/test.sh`` installs it where it can); without it, or
without Redis, the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hubproc import Hub, live_database, start_hub
from tests.test_push import REDIS_URL, _redis_reachable

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        NGINX is None, reason="no nginx (apt-get install nginx-light): the balancer test needs a real one"
    ),
    pytest.mark.skipif(not _redis_reachable(), reason=f"no Redis at {REDIS_URL}: hubs of several workers need one"),
]

CONFIG = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream arc_hub {{
        server 127.0.0.1:{port_a} max_fails=1 fail_timeout=30s;
        server 127.0.0.1:{port_b} max_fails=1 fail_timeout=30s;
        keepalive 16;
    }}
    map $http_upgrade $connection_upgrade {{ default upgrade; "" ""; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 16m;
        location / {{
            proxy_pass http://arc_hub;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""


def _workers(hub: Hub) -> list[int]:
    """The worker processes of a hub (its supervisor's children; two hubs on one SQLite file share a pidfile)."""
    found = subprocess.run(["pgrep", "-P", str(hub.pid)], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Balanced:
    def __init__(self, url: str, hubs: list[Hub]) -> None:
        self.url, self.hubs = url, hubs

    def call(
        self, method: str, path: str, payload: Any = None, *, headers: dict[str, str] | None = None, timeout: float = 30
    ) -> tuple[int, dict[str, Any]]:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:  # the balancer's own page (502 while an upstream is down)
                return exc.code, {"ok": False, "error": raw.decode(errors="replace")[:200]}


@pytest.fixture(scope="module")
def balanced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Balanced]:
    tmp = tmp_path_factory.mktemp("nginx")
    env = {"ARC_REDIS_URL": REDIS_URL, "ARC_PRESENCE_TTL_SEC": "5", "ARC_ALLOW_REMOTE": "1"}
    with live_database() as database_url:
        storage = {} if database_url else {"ARC_STORAGE": str(tmp / "shared.sqlite3")}
        hubs: list[Hub] = []
        nginx = None
        try:
            for name in ("a", "b"):
                home = tmp / name
                args = ("--workers", "2", "--spool-dir", str(home / "spool"))
                hubs.append(start_hub(home, database_url=database_url, args=args, extra_env={**env, **storage}))
            port = _free_port()
            conf = tmp / "nginx.conf"
            ports = {"port_a": hubs[0].url.rsplit(":", 1)[1], "port_b": hubs[1].url.rsplit(":", 1)[1]}
            conf.write_text(CONFIG.format(tmp=tmp, port=port, **ports))
            nginx = subprocess.Popen([str(NGINX), "-c", str(conf), "-p", str(tmp)], stderr=subprocess.PIPE)
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(url + "/healthz", timeout=2).close()
                    break
                except OSError:
                    if nginx.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"nginx did not start: {nginx.stderr.read().decode() if nginx.stderr else ''}")
                    time.sleep(0.2)
            yield Balanced(url, hubs)
        finally:
            if nginx is not None:
                nginx.send_signal(signal.SIGQUIT)
                try:
                    nginx.wait(10)
                except subprocess.TimeoutExpired:
                    nginx.kill()
            for hub in hubs:
                hub.stop()


def test_both_hubs_and_all_four_workers_serve_through_the_balancer(balanced: Balanced) -> None:
    pids = set()
    for _ in range(200):
        status, body = balanced.call("GET", "/healthz")
        assert status == 200
        pids.add(body["result"]["pid"])
        if len(pids) == 4:
            break
    workers = {pid for hub in balanced.hubs for pid in _workers(hub)}
    assert pids <= workers
    assert len(pids) >= 2, "the balancer reached only one process"
    ids = {balanced.call("GET", "/v1/hub-info")[1]["result"]["instance_id"] for _ in range(10)}
    assert len(ids) == 1  # one database: one hub, whichever process answers


def test_a_post_through_the_balancer_reaches_a_stream_held_through_it(balanced: Balanced) -> None:
    assert balanced.call("POST", "/v1/sessions", {"agent_id": "lb-reader"})[0] in (200, 201)
    stream = urllib.request.urlopen(balanced.url + "/v1/stream?agent_id=lb-reader", timeout=30)
    assert stream.readline().startswith(b": connected")
    sent = []
    for index in range(12):  # through new connections: they land on different processes
        status, body = balanced.call(
            "POST", "/v1/messages", {"from_agent": f"lb-poster-{index}", "to_agent": "lb-reader", "body": f"n{index}"}
        )
        assert status == 201, body
        sent.append(body["result"]["id"])
    got: list[int] = []
    while len(got) < len(sent):
        line = stream.readline()
        assert line, f"the stream ended with {got} of {sent}"
        if line.startswith(b"data: "):
            got.append(json.loads(line[6:])["id"])
    assert sorted(got) == sorted(sent)
    stream.close()


def test_a_claim_race_through_the_balancer_has_one_winner(balanced: Balanced) -> None:
    answers: list[dict[str, Any]] = []
    barrier = threading.Barrier(16)

    def claim(index: int) -> None:
        barrier.wait()
        answers.append(
            balanced.call("POST", "/v1/claims", {"owner_agent_id": f"lb-{index}", "claim_key": "lb-prize"})[1]
        )

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 16
    assert sum(1 for a in answers if a["acquired"]) == 1, answers
    assert len({a["result"]["owner_agent_id"] for a in answers}) == 1


def test_concurrent_leases_through_the_balancer_never_hand_out_a_message_twice(balanced: Balanced) -> None:
    queued = []
    for index in range(24):
        status, body = balanced.call(
            "POST", "/v1/messages", {"from_agent": "lb-boss", "to_agent": "lb-w", "body": f"job {index}"}
        )
        assert status == 201
        queued.append(body["result"]["id"])
    leased: list[int] = []
    lock = threading.Lock()

    def lease() -> None:
        for _ in range(6):
            status, body = balanced.call("POST", "/v1/inbox/lb-w/lease", {"max": 3, "lease_sec": 300})
            assert status == 200, body
            with lock:
                leased.extend(m["id"] for m in body["result"])

    threads = [threading.Thread(target=lease) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(leased) == len(set(leased)), "a message was leased twice"
    assert sorted(leased) == sorted(queued)


def test_killing_a_hub_mid_load_loses_no_acknowledged_post(balanced: Balanced) -> None:
    channel = f"lb-load-{uuid.uuid4().hex[:6]}"
    assert balanced.call("POST", "/v1/channels", {"name": channel, "created_by": "lb"})[0] == 201
    acknowledged: list[int] = []
    retried = 0

    def post(index: int) -> None:
        nonlocal retried
        key = f"lb-load-{channel}-{index}"  # the same key on every retry: stored once whatever happens
        payload = {"from_agent": "lb-loader", "channel": channel, "body": f"load {index}"}
        for _attempt in range(20):
            try:
                status, body = balanced.call(
                    "POST", "/v1/messages", payload, headers={"Idempotency-Key": key}, timeout=10
                )
            except OSError:
                status, body = 0, {}
            if status == 201 or (status == 200 and body.get("ok")):
                acknowledged.append(body["result"]["id"])
                return
            retried += 1
            time.sleep(0.2)
        pytest.fail(f"post {index} was never stored: last answer {status} {body}")

    victim = balanced.hubs[0]
    doomed = _workers(victim)
    for index in range(60):
        if index == 20:
            victim.proc.send_signal(signal.SIGKILL)  # the supervisor; its workers follow, killed below
            for pid in doomed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        post(index)
    assert len(acknowledged) == 60
    status, body = balanced.call("GET", f"/v1/messages?channel={channel}&since_id=0&limit=500")
    assert status == 200
    stored = [m["id"] for m in body["result"] if m["from_agent"] == "lb-loader"]
    assert sorted(stored) == sorted(set(acknowledged)), "an acknowledged post is missing, or one is stored twice"
    assert len(stored) == 60
    print(f"killed hub A after 20 posts; {retried} attempts were answered by the balancer's 502 and retried")
