"""The served hub's edge against misbehaving clients, and its way of stopping (docs/deployment.md).

A real ``manage.py up`` over raw sockets: a body declared over the cap is refused before it
is read, a chunked body as soon as it passes the cap, a client that never finishes its
headers or trickles its body is cut off (and costs no worker: the hub answers others
meanwhile), and at SIGTERM streams and long-polls are answered and told to reconnect.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.hubproc import Hub, running_hub

pytestmark = pytest.mark.live

TIMEOUTS = {"ARC_HEADER_TIMEOUT_SEC": "1", "ARC_BODY_TIMEOUT_SEC": "2"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("edge"), extra_env=TIMEOUTS) as hub:
        yield hub


def _connect(hub: Hub) -> socket.socket:
    parts = urlsplit(hub.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response read off ``sock`` (status, headers, body); status 0 when the hub closed without one."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return 0, {}, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _post_head(extra: str) -> bytes:
    return f"POST /v1/messages HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\n{extra}\r\n".encode()


def test_a_body_declared_over_the_cap_is_refused_within_a_second_without_being_read(hub: Hub) -> None:
    sock = _connect(hub)
    started = time.monotonic()
    sock.sendall(_post_head("Content-Length: 200000000\r\n") + b"x" * 4096)
    status, headers, body = _read_response(sock)
    elapsed = time.monotonic() - started
    assert status == 413
    assert json.loads(body)["ok"] is False
    assert "exceeds max size" in json.loads(body)["error"]
    assert headers["connection"] == "close"
    assert elapsed < 1.0, f"the 413 took {elapsed:.2f}s"  # the bound: the answer needs no body
    sock.close()


def test_a_chunked_body_growing_past_the_cap_is_refused_once_it_passes_it(hub: Hub) -> None:
    sock = _connect(hub)
    sock.sendall(_post_head("Transfer-Encoding: chunked\r\n"))
    chunk = b"x" * (1 << 20)
    sent, refused = 0, False
    try:
        for _ in range(400):  # up to 400 MiB, far past the cap (~8.5 MB)
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        refused = True  # the hub closed the connection after its answer: sending more fails
    assert refused, "the hub read 400 MiB of a body over its cap"
    assert sent < 100 * len(chunk), "the hub read far past its cap before refusing"
    status, _, body = _read_response(sock)
    assert status in (413, 0)  # the answer may be lost to the reset the client caused by sending on
    if status:
        assert "exceeds max size" in json.loads(body)["error"]
    sock.close()


def test_headers_that_never_finish_are_cut_off_and_cost_no_worker(hub: Hub) -> None:
    stalled = _connect(hub)
    stalled.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: hub\r\nX-Slow: ")  # and never more
    assert hub.call("GET", "/v1/hub-info")[0] == 200  # others are served meanwhile
    stalled.settimeout(30)
    assert stalled.recv(1024) == b"", "the hub should close a connection whose headers never end"
    stalled.close()


def test_a_trickling_body_gets_408_and_costs_no_worker(hub: Hub) -> None:
    slow = _connect(hub)
    slow.sendall(_post_head("Content-Length: 100\r\n") + b'{"from_agent": "slow",')
    assert hub.call("GET", "/v1/hub-info")[0] == 200
    slow.settimeout(30)
    status, _, body = _read_response(slow)
    assert status == 408
    assert "not received within" in json.loads(body)["error"]
    slow.close()
    status, found = hub.call("GET", "/v1/messages?channel=general&since_id=0&timeout=0")
    assert status == 200, found
    assert not [m for m in found["result"] if m["from_agent"] == "slow"]


def test_at_sigterm_streams_and_long_polls_are_answered_and_told_to_reconnect(tmp_path: Path) -> None:
    with running_hub(tmp_path / "drain") as hub:
        assert hub.call("POST", "/v1/sessions", {"agent_id": "watcher"})[0] in (200, 201)
        stream = urllib.request.urlopen(hub.url + "/v1/stream?agent_id=watcher", timeout=30)
        assert stream.readline().startswith(b": connected")
        polled: dict[str, object] = {}

        def poll() -> None:
            started = time.monotonic()
            polled["answer"] = hub.call("GET", "/v1/events?agent_id=watcher&timeout=60", timeout=90)
            polled["seconds"] = time.monotonic() - started

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.5)  # (the long-poll's request is on its way; it is answered whenever it got there)
        hub.proc.send_signal(signal.SIGTERM)
        rest = stream.read().decode()  # the stream ends (it would otherwise run forever)
        assert 'event: hub\ndata: {"action": "draining"}' in rest
        assert "retry: " in rest
        poller.join(60)
        assert not poller.is_alive()
        assert polled["answer"][0] == 200  # type: ignore[index]
        assert float(polled["seconds"]) < 60  # type: ignore[arg-type]  # answered, not timed out
        assert hub.proc.wait(30) == 0
        assert not (hub.home / ".arc.pid").exists()
