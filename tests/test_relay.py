"""The file-spool relay (docs/relay.md): Arc's spool layout, served concurrently and safely.

The first part drives ``RelayServer`` over a real spool directory with a recording
forwarder (no hub), to pin down the spool mechanics and every way a hostile spool
can try to misuse it. The second part runs a real hub (``manage.py up``, whose relay
calls the hub's ASGI app in process) and ``manage.py relay`` (forwarding over HTTP).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from relay.server import RelayRequest, RelayServer
from relay.spool import safe_agent_dir
from tests.hubproc import ROOT, Hub, mint_key

LIMIT = 64_000


def write_request(spool: Path, agent_dir: str, payload: Any, *, request_id: str | None = None) -> str:
    request_id = request_id or uuid.uuid4().hex
    folder = spool / "requests" / agent_dir
    folder.mkdir(parents=True, exist_ok=True)
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    tmp = folder / f".{request_id}.tmp"
    tmp.write_bytes(raw)
    tmp.replace(folder / f"{request_id}.json")
    return request_id


def envelope(path: str = "/v1/hub-info", method: str = "GET", **extra: Any) -> dict[str, Any]:
    return {"request_id": "r", "agent_id": "bob", "method": method, "path": path, "body": None, **extra}


async def response_of(spool: Path, agent_dir: str, request_id: str, timeout: float = 30.0) -> dict[str, Any]:
    path = spool / "responses" / agent_dir / f"{request_id}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return dict(json.loads(path.read_text()))
        await asyncio.sleep(0.005)
    raise AssertionError(f"no response for {agent_dir}/{request_id} within {timeout}s")


class Recorder:
    """A forwarder that answers like the hub and remembers what it was asked."""

    def __init__(self, answer: Callable[[RelayRequest], Awaitable[tuple[int, bytes]]] | None = None) -> None:
        self.seen: list[RelayRequest] = []
        self.answer = answer

    async def __call__(self, request: RelayRequest, timeout: float) -> tuple[int, bytes]:
        self.seen.append(request)
        if self.answer is not None:
            return await self.answer(request)
        return 200, json.dumps({"ok": True, "result": {"path": request.path, "query": request.query}}).encode()


@asynccontextmanager
async def relay(spool: Path, forward: Any) -> AsyncIterator[RelayServer]:
    server = RelayServer(spool, forward, max_request_bytes=LIMIT)
    task = asyncio.create_task(server.run())
    try:
        yield server
    finally:
        server.stop()
        await asyncio.wait_for(task, 10)


# ── The spool, with a recording forwarder ─────────────────────────────────


async def test_it_answers_in_arcs_layout_and_keeps_the_request(tmp_path: Path) -> None:
    forward = Recorder()
    async with relay(tmp_path, forward):
        request_id = write_request(tmp_path, "bob", envelope("/v1/messages?channel=general&since_id=3"))
        response = await response_of(tmp_path, "bob", request_id)

    assert response["request_id"] == "r"  # the envelope's id, as in Arc
    assert (response["ok"], response["status"]) == (True, 200)
    assert response["body"] == {"ok": True, "result": {"path": "/v1/messages", "query": "channel=general&since_id=3"}}
    assert response["completed_at"].endswith("Z")
    assert (tmp_path / "requests" / "bob" / f"{request_id}.work").exists()  # append-only: renamed, not deleted
    assert not (tmp_path / "requests" / "bob" / f"{request_id}.json").exists()
    assert [r.method for r in forward.seen] == ["GET"]


async def test_a_key_in_the_envelope_is_forwarded_and_a_body_as_json(tmp_path: Path) -> None:
    forward = Recorder()
    async with relay(tmp_path, forward):
        request_id = write_request(
            tmp_path, "bob", envelope("/v1/messages", "post", body={"from_agent": "bob", "body": "hi"}, key="arc_k")
        )
        await response_of(tmp_path, "bob", request_id)

    [seen] = forward.seen
    assert (seen.method, seen.key) == ("POST", "arc_k")
    assert json.loads(seen.body or b"") == {"from_agent": "bob", "body": "hi"}


@pytest.mark.parametrize(
    ("raw", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe{}", 400, "not UTF-8"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"path": "/v1/hub-info"}).encode(), 400, "method"),
        (json.dumps(envelope(method="BREW")).encode(), 400, "method"),
        (json.dumps(envelope(path="v1/hub-info")).encode(), 400, "starting with '/'"),
        (json.dumps(envelope(path="/admin/")).encode(), 400, "/v1 API only"),
        (json.dumps(envelope(path="/v1/stream?agent_id=bob")).encode(), 400, "long-poll"),
        (json.dumps(envelope(path="/v1/hub-info\x00")).encode(), 400, "NUL characters"),
        (json.dumps(envelope(body=[1])).encode(), 400, "JSON object"),
        (json.dumps(envelope(key=5)).encode(), 400, "key"),
        (b" " * (LIMIT + 1), 413, "exceeds max size"),
    ],
)
async def test_a_bad_request_file_gets_an_error_response_and_the_relay_goes_on(
    tmp_path: Path, raw: bytes, status: int, fragment: str
) -> None:
    forward = Recorder()
    async with relay(tmp_path, forward):
        bad = write_request(tmp_path, "bob", raw)
        response = await response_of(tmp_path, "bob", bad)
        good = write_request(tmp_path, "bob", envelope())
        assert (await response_of(tmp_path, "bob", good))["ok"] is True

    assert (response["ok"], response["status"]) == (False, status)
    assert fragment in response["error"]
    assert response["body"] == {"ok": False, "error": response["error"]}  # Arc's _RelayTransport reads body
    assert len(forward.seen) == 1  # only the good one reached the hub


async def test_a_failing_handler_is_that_requests_500_not_the_relays_end(tmp_path: Path) -> None:
    async def answer(request: RelayRequest) -> tuple[int, bytes]:
        if request.path == "/v1/boom":
            raise RuntimeError("kaput")
        return 200, b'{"ok": true, "result": null}'

    async with relay(tmp_path, Recorder(answer)):
        boom = write_request(tmp_path, "bob", envelope("/v1/boom"))
        response = await response_of(tmp_path, "bob", boom)
        after = write_request(tmp_path, "bob", envelope())
        assert (await response_of(tmp_path, "bob", after))["ok"] is True

    assert (response["status"], response["ok"]) == (500, False)
    assert "kaput" in response["error"]


async def test_a_slow_request_holds_up_no_other(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def answer(request: RelayRequest) -> tuple[int, bytes]:
        if request.path == "/v1/events":
            await release.wait()  # a long-poll that waits
        return 200, b'{"ok": true, "result": []}'

    async with relay(tmp_path, Recorder(answer)):
        slow = write_request(tmp_path, "alice", envelope("/v1/events?agent_id=alice&timeout=30"))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        quick = [write_request(tmp_path, f"agent-{i}", envelope()) for i in range(20)]
        for i, request_id in enumerate(quick):
            await response_of(tmp_path, f"agent-{i}", request_id)
        elapsed = time.monotonic() - started
        assert not (tmp_path / "responses" / "alice" / f"{slow}.json").exists()
        release.set()
        await response_of(tmp_path, "alice", slow)

    assert elapsed < 1.0


async def test_two_relays_on_one_spool_serve_each_request_once(tmp_path: Path) -> None:
    first, second = Recorder(), Recorder()
    async with relay(tmp_path, first), relay(tmp_path, second):
        ids = [write_request(tmp_path, f"agent-{i % 5}", envelope()) for i in range(60)]
        for i, request_id in enumerate(ids):
            await response_of(tmp_path, f"agent-{i % 5}", request_id)

    assert len(first.seen) + len(second.seen) == 60


# ── A hostile spool ────────────────────────────────────────────────────────


async def test_symlinked_agent_directories_are_not_followed(tmp_path: Path) -> None:
    spool, outside = tmp_path / "spool", tmp_path / "outside"
    (spool / "requests").mkdir(parents=True)
    outside.mkdir()
    write_request(tmp_path / "elsewhere", "x", envelope())  # a real request dir somewhere else
    (spool / "requests" / "mallory").symlink_to(tmp_path / "elsewhere" / "requests" / "x", target_is_directory=True)
    forward = Recorder()
    async with relay(spool, forward):
        await asyncio.sleep(0.2)

    assert forward.seen == []
    assert [p.suffix for p in (tmp_path / "elsewhere" / "requests" / "x").iterdir()] == [".json"]  # not taken


async def test_a_symlinked_request_file_is_refused_unread_and_answered(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps(envelope()))
    folder = tmp_path / "spool" / "requests" / "mallory"
    folder.mkdir(parents=True)
    (folder / "steal.json").symlink_to(secret)
    forward = Recorder()
    async with relay(tmp_path / "spool", forward):
        answer = await response_of(tmp_path / "spool", "mallory", "steal")

    assert forward.seen == []
    assert (answer["status"], answer["ok"]) == (400, False)
    assert "symbolic link" in answer["error"]
    assert secret.read_text() == json.dumps(envelope())  # the target is neither read nor moved
    assert (folder / "steal.work").is_symlink()


async def test_a_symlinked_response_directory_is_never_written_through(tmp_path: Path) -> None:
    spool, outside = tmp_path / "spool", tmp_path / "outside"
    outside.mkdir()
    (spool / "responses").mkdir(parents=True)
    (spool / "responses" / "mallory").symlink_to(outside, target_is_directory=True)
    async with relay(spool, Recorder()):
        write_request(spool, "mallory", envelope())
        await asyncio.sleep(0.3)

    assert list(outside.iterdir()) == []


async def test_unsanitised_directory_names_are_answered_with_an_error_never_served(tmp_path: Path, caplog) -> None:
    forward = Recorder()
    async with relay(tmp_path, forward):
        names = ["two words", "ünïcode", "back\\slash"]
        refused = {name: write_request(tmp_path, name, envelope()) for name in names}
        ok = write_request(tmp_path, safe_agent_dir("two words"), envelope())
        answers = {name: await response_of(tmp_path, name, rid) for name, rid in refused.items()}
        await response_of(tmp_path, "two_words", ok)

    assert len(forward.seen) == 1  # only the sanitised one reached the hub
    for name, answer in answers.items():
        # Answered where that agent reads, taken (renamed to .work), and the reason logged.
        assert (answer["ok"], answer["status"]) == (False, 400), name
        assert "is not a name Arc's clients make" in answer["error"], name
        assert [p.suffix for p in (tmp_path / "requests" / name).iterdir()] == [".work"], name
        assert f"refused request {name}/{refused[name]}" in caplog.text, name


def test_agent_directory_names_are_sanitised_as_arc_does() -> None:
    assert safe_agent_dir("smoke-b") == "smoke-b"
    assert safe_agent_dir("../../etc") == ".._.._etc"
    assert safe_agent_dir("a b/c") == "a_b_c"
    assert safe_agent_dir("  ") == "agent"


# ── With a real hub ────────────────────────────────────────────────────────


def arc_relay_call(spool: Path, agent: str, method: str, path: str, body: Any = None, **extra: Any) -> dict[str, Any]:
    """What Arc's FileRelayClient does, in a few lines: write a request, wait for the response."""
    request_id = write_request(
        spool,
        safe_agent_dir(agent),
        {"request_id": uuid.uuid4().hex, "agent_id": agent, "method": method, "path": path, "body": body, **extra},
    )
    response = spool / "responses" / safe_agent_dir(agent) / f"{request_id}.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if response.exists():
            return dict(json.loads(response.read_text()))
        time.sleep(0.002)
    raise AssertionError(f"no relay response for {method} {path}")


@pytest.fixture
def spool_hub(tmp_path: Path) -> Any:
    from tests.hubproc import running_hub

    spool = tmp_path / "spool"
    with running_hub(tmp_path / "hub", extra_env={"ARC_SPOOL_DIR": str(spool)}) as hub:
        yield hub, spool


@pytest.mark.live
def test_the_hub_serves_its_relay_under_the_same_rules_as_http(spool_hub: tuple[Hub, Path]) -> None:
    hub, spool = spool_hub
    started = time.monotonic()
    posted = arc_relay_call(spool, "bob", "POST", "/v1/messages", {"from_agent": "bob", "body": "from the sandbox"})
    elapsed = time.monotonic() - started

    assert (posted["ok"], posted["status"]) == (True, 201)
    assert posted["body"]["result"]["body"] == "from the sandbox"
    assert elapsed < 0.5  # Arc's relay alone scans every 250 ms
    _, env = hub.call("GET", "/v1/messages?channel=general")
    assert env["result"][-1]["id"] == posted["body"]["result"]["id"]
    bad = arc_relay_call(spool, "bob", "POST", "/v1/messages", {"from_agent": "bob"})
    assert (bad["ok"], bad["status"], bad["error"]) == (False, 400, "body or attachments is required")


@pytest.mark.live
def test_a_key_in_the_envelope_acts_as_its_agent_and_a_wrong_one_is_401(spool_hub: tuple[Hub, Path]) -> None:
    hub, spool = spool_hub
    key = mint_key(hub, "carol")

    mine = arc_relay_call(spool, "carol", "POST", "/v1/messages", {"body": "signed"}, key=key)
    theirs = arc_relay_call(spool, "carol", "POST", "/v1/messages", {"from_agent": "bob", "body": "x"}, key=key)
    wrong = arc_relay_call(spool, "carol", "GET", "/v1/hub-info", key="arc_wrong_key")

    assert mine["body"]["result"]["from_agent"] == "carol"  # filled in from the key
    assert theirs["status"] == 403
    assert wrong["status"] == 401


@pytest.mark.live
def test_a_long_poll_over_the_relay_is_woken_by_a_post_over_http(spool_hub: tuple[Hub, Path]) -> None:
    hub, spool = spool_hub
    answer: dict[str, Any] = {}

    def wait() -> None:
        answer.update(arc_relay_call(spool, "bob", "GET", "/v1/events?agent_id=bob&timeout=20"))
        answer["at"] = time.monotonic()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    posted_at = time.monotonic()
    hub.call("POST", "/v1/messages", {"from_agent": "alice", "to_agent": "bob", "body": "wake up"})
    waiter.join(25)

    assert [m["body"] for m in answer["body"]["result"]] == ["wake up"]
    assert answer["at"] - posted_at < 1.0


@pytest.mark.live
def test_manage_py_relay_forwards_to_a_hub_over_http(tmp_path: Path) -> None:
    from tests.hubproc import running_hub

    spool = tmp_path / "own-spool"
    with running_hub(tmp_path / "hub", extra_env={"ARC_SPOOL_DIR": str(tmp_path / "hub-spool")}) as hub:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "relay", "--url", hub.url, "--spool-dir", str(spool)],
            env=hub.env,
            cwd=str(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            registered = arc_relay_call(spool, "dave", "POST", "/v1/sessions", {"agent_id": "dave"})
            assert (registered["status"], registered["body"]["result"]["agent_id"]) == (201, "dave")
            assert hub.call("GET", "/v1/agents")[1]["result"][0]["agent_id"] == "dave"
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "1 requests served" in out


@pytest.mark.live
def test_up_with_no_relay_leaves_the_spool_alone(tmp_path: Path) -> None:
    from tests.hubproc import start_hub

    spool = tmp_path / "spool"
    hub = start_hub(tmp_path / "hub", extra_env={"ARC_SPOOL_DIR": str(spool)}, args=("--no-relay",))
    try:
        request_id = write_request(spool, "bob", envelope())
        time.sleep(0.5)
        assert (spool / "requests" / "bob" / f"{request_id}.json").exists()
        assert not (spool / "responses").exists()
    finally:
        hub.stop()
