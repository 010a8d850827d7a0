"""Measure a running Arc hub over HTTP (docs/performance.md): ``manage.py bench`` and ``scripts/bench_compare.py``.

Everything here talks to a URL only (no Django, no models), so the same code
measures this hub and arc.py. The load generator is one asyncio loop speaking
raw HTTP/1.1 over asyncio streams: a keep-alive connection per simulated
client, re-opened whenever the server closes it (arc.py closes after every
answer). Threads with ``requests`` would spend most of a small machine's CPU
in the client, which then measures itself rather than the hub.

Measurements (each a JSON-serialisable dict; ``metric_rows`` flattens them):

- ``posts``: ``POST /v1/messages`` throughput at concurrency 1/8/32 (posts/s, p50, p99, errors).
- ``push``: one message at a time, the time from sending a direct message's POST until a
  waiting reader has it: a ``/v1/events?timeout=30`` long-poll (its whole answer read),
  an SSE ``/v1/stream`` (the ``data:`` line), a WebSocket on ``/v1/ws`` (the ``message``
  frame; ``unsupported`` when the upgrade is not answered with 101).
- ``fanout``: N SSE readers on one room, M broadcasts spaced apart; per broadcast the
  time until the *last* reader had it.
- ``relay``: round trip of a post through the file-spool relay (Arc's spool layout), one at a time.
- ``relay_burst``: 20 agents write 5 requests each at once (a sandboxed agent's opening
  moves, ``BURST_MIX``); per request the time from its file being in place until its
  response file is, and whether every answer is an ok envelope. For reference, the same
  100 requests also go over HTTP at once (a connection each), which tells the relay's
  own cost apart from the hub's.
- ``claims``: K clients race ``POST /v1/claims`` for one key; exactly one may win.
- ``idle``: post throughput at concurrency 8 with and without C idle streams held open.
- ``mcp``: two agents through MCP tools with the official SDK's client (``coordination.bench_mcp``,
  which the caller hands in as ``mcp_phase``: this module imports no MCP code): A sends B a
  direct message and B reads it (round trip), and A sends 200 in a row (sends/s), over stdio
  (``manage.py mcp`` per agent) and ``/mcp``.

Pauses between push messages are random (``gap_ms``): a hub that sleep-polls its
database (arc.py: 250 ms long-poll, 500 ms SSE) answers after a delay that depends on
where in its sleep a message lands, and only random timing measures its average.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from coordination.client import relay_request, spool_name, spool_write

MEASUREMENTS = ("posts", "push", "fanout", "relay", "relay_burst", "claims", "idle", "mcp", "a2a")
MCP_TRANSPORTS = ("stdio", "http")
PUSH_TRANSPORTS = ("longpoll", "sse", "ws")
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

Log = Callable[[str], None]


class BenchError(Exception):
    """The hub answered something a measurement cannot go on from."""


class Unsupported(BenchError):
    """The hub does not offer this transport (e.g. no WebSocket upgrade)."""


@dataclass
class BenchConfig:
    """What to measure and how much. The defaults are what ``scripts/bench_compare.py`` runs."""

    url: str
    token: str | None = None
    only: tuple[str, ...] = MEASUREMENTS
    concurrency: tuple[int, ...] = (1, 8, 32)
    posts: int = 2000  # per concurrency level
    post_max_sec: float = 10.0  # per concurrency level: stop sending (and count what was sent) past this
    push_transports: tuple[str, ...] = PUSH_TRANSPORTS
    push_messages: int = 200  # per transport
    push_max_sec: float = 15.0  # per transport: stop early (and say how many) past this
    gap_ms: float = 50.0  # random pause 0..gap before each push message and relay request
    fanout_receivers: tuple[int, ...] = (50, 200)
    fanout_messages: int = 20
    fanout_spacing_ms: float = 50.0
    spool_dir: str | None = None
    relay_requests: int = 50
    relay_max_sec: float = 15.0
    relay_burst_agents: int = 20
    relay_burst_per_agent: int = 5  # requests per agent per burst, taken in turn from BURST_MIX
    relay_bursts: int = 3  # bursts, each after a random pause 0..gap_ms; their latencies are pooled
    relay_burst_max_sec: float = 30.0  # longest one burst may take (and no answer for wait_sec ends it too)
    relay_burst_http: bool = True  # after each relay burst, the same requests over HTTP for reference
    racers: int = 32
    races: int = 5
    idle_connections: int = 1000
    idle_transports: tuple[str, ...] = ("sse", "ws")
    idle_concurrency: int = 8
    idle_posts: int = 1000
    wait_sec: float = 10.0  # longest wait for any one expected answer
    seed: int | None = None
    mcp_transports: tuple[str, ...] = MCP_TRANSPORTS
    mcp_round_trips: int = 50
    mcp_sends: int = 200
    a2a_round_trips: int = 50  # blocking A2A SendMessage calls, one after another
    # The server's processes on this machine (a hub's supervisor and workers): their CPU time over
    # each post phase, read from /proc, is reported per post. Empty: not measured.
    server_pids: tuple[int, ...] = ()


# ── HTTP/1.1 over asyncio streams ────────────────────────────────────────────


@dataclass(frozen=True)
class Target:
    """Where the hub is: ``http(s)://host:port[/prefix]`` plus an optional bearer key."""

    host: str
    port: int
    tls: bool
    prefix: str
    token: str | None

    @classmethod
    def parse(cls, url: str, token: str | None = None) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise BenchError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.hostname, port, parts.scheme == "https", parts.path.rstrip("/"), token)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}{self.prefix}"

    def head(self, method: str, path: str, length: int | None = None, extra: Iterable[str] = ()) -> bytes:
        lines = [f"{method} {self.prefix}{path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if self.token:
            lines.append(f"Authorization: Bearer {self.token}")
        if length is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {length}"]
        lines += extra
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port, ssl=self.tls or None, limit=1 << 22)


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = raw.decode("latin-1").split("\r\n")
    try:
        status = int(status_line.split(" ", 2)[1])
    except (IndexError, ValueError) as exc:
        raise BenchError(f"bad HTTP status line: {status_line!r}") from exc
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


def _chunked(headers: dict[str, str]) -> bool:
    return "chunked" in headers.get("transfer-encoding", "").lower()


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if _chunked(headers):
        decoder = Dechunker()
        out = []
        while not decoder.done:
            data = await reader.read(65536)
            if not data:
                raise asyncio.IncompleteReadError(b"", None)
            out.append(decoder.feed(data))
        return b"".join(out)
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    return await reader.read()


class Dechunker:
    """Incremental ``Transfer-Encoding: chunked`` decoder (trailers are ignored)."""

    def __init__(self) -> None:
        self.buf = b""
        self.left = 0  # >0: bytes of the current chunk still to come; 0: a size line; -1: the CRLF after a chunk
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self.buf += data
        out = []
        while self.buf and not self.done:
            if self.left > 0:
                piece = self.buf[: self.left]
                out.append(piece)
                self.buf = self.buf[len(piece) :]
                self.left -= len(piece)
                if self.left == 0:
                    self.left = -1
            elif self.left == -1:
                if len(self.buf) < 2:
                    break
                self.buf, self.left = self.buf[2:], 0
            else:
                end = self.buf.find(b"\r\n")
                if end < 0:
                    break
                size = int(self.buf[:end].split(b";")[0].strip() or b"0", 16)
                self.buf = self.buf[end + 2 :]
                self.left = size if size else 0
                self.done = size == 0
        return b"".join(out)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Http:
    """One client connection, kept alive as long as the server allows.

    ``timeout`` bounds each connect and each request (``None``: no bound); on expiry the
    connection is dropped and ``TimeoutError`` raised. It matters against a listener
    with a short backlog: a connection the server's kernel dropped from a full accept
    queue looks established to the client, and its request would wait for minutes.
    """

    def __init__(self, target: Target, timeout: float | None = 30.0) -> None:
        self.target = target
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.wait_for(self.target.open(), self.timeout)

    async def request(self, method: str, path: str, payload: Any = None, headers: Iterable[str] = ()) -> Response:
        try:
            return await asyncio.wait_for(self._request(method, path, payload, headers), self.timeout)
        except TimeoutError:
            await self.close()
            raise

    async def _request(self, method: str, path: str, payload: Any, extra: Iterable[str] = ()) -> Response:
        body = json.dumps(payload).encode() if payload is not None else b""
        message = self.target.head(method, path, len(body) if payload is not None else None, extra) + body
        for attempt in range(2):
            fresh = self.writer is None
            await self.connect()
            assert self.reader is not None
            assert self.writer is not None
            try:
                self.writer.write(message)
                status, headers = await read_head(self.reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if fresh or attempt:
                    raise
                continue  # the server dropped an idle keep-alive connection before reading: once more
            data = await read_body(self.reader, headers)
            if headers.get("connection", "").lower() == "close":
                await self.close()
            return Response(status, headers, data)
        raise AssertionError("unreachable")

    async def post(self, path: str, payload: Any, *, expect: int = 201) -> dict[str, Any]:
        response = await self.request("POST", path, payload)
        if response.status != expect:
            raise BenchError(f"POST {path} answered {response.status}: {response.body[:300]!r}")
        result: dict[str, Any] = response.json()
        return result

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


# ── Streams: SSE and a minimal RFC 6455 WebSocket client ─────────────────────


class Stream:
    """A long-lived reader: a pump task parses what arrives and queues ``(arrival time, message)``."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.queue: asyncio.Queue[tuple[float, dict[str, Any]] | None] = asyncio.Queue()
        self.first_bytes = asyncio.Event()
        self.closed = False
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.pump: asyncio.Task[None] | None = None

    async def next(self, timeout: float) -> tuple[float, dict[str, Any]] | None:
        """The next message with its arrival time; ``None`` once the stream has ended."""
        if self.closed and self.queue.empty():
            return None
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def wait_ready(self, timeout: float) -> None:
        """Wait for the first body bytes (this hub sends ``: connected``; arc.py nothing until a message)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.first_bytes.wait(), timeout)

    def start(self) -> None:
        self.pump = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            await self._pump()
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self.closed = True
            self.queue.put_nowait(None)

    async def _pump(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()


class SseStream(Stream):
    """``GET /v1/stream``: each event's ``data:`` JSON, timed when its blank line arrives."""

    headers: dict[str, str]

    async def open(self, path: str) -> None:
        self.reader, self.writer = await self.target.open()
        self.writer.write(self.target.head("GET", path, extra=["Accept: text/event-stream"]))
        status, self.headers = await read_head(self.reader)
        if status != 200:
            body = await read_body(self.reader, self.headers)
            await self.close()
            raise BenchError(f"GET {path} answered {status}: {body[:300]!r}")
        self.start()

    async def _pump(self) -> None:
        assert self.reader is not None
        decoder = Dechunker() if _chunked(self.headers) else None
        pending = b""
        data: list[bytes] = []
        while True:
            raw = await self.reader.read(65536)
            if not raw:
                return
            now = time.perf_counter()
            self.first_bytes.set()
            pending += decoder.feed(raw) if decoder else raw
            *lines, pending = pending.split(b"\n")
            for line in lines:
                line = line.rstrip(b"\r")
                if line.startswith(b"data:"):
                    data.append(line[5:].removeprefix(b" "))
                elif not line and data:
                    self.queue.put_nowait((now, json.loads(b"\n".join(data))))
                    data = []
            if decoder and decoder.done:
                return


class WebSocket(Stream):
    """RFC 6455 client, text frames only: masked frames out, JSON frames in (pings answered)."""

    async def open(self, path: str) -> None:
        try:
            self.reader, self.writer = await self.target.open()
        except OSError as exc:
            raise BenchError(f"cannot connect: {exc}") from exc
        key = base64.b64encode(os.urandom(16)).decode()
        origin = f"{'https' if self.target.tls else 'http'}://{self.target.host}:{self.target.port}"
        upgrade = ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}"]
        upgrade += ["Sec-WebSocket-Version: 13", f"Origin: {origin}"]
        self.writer.write(self.target.head("GET", path, extra=upgrade))
        try:
            status, headers = await asyncio.wait_for(read_head(self.reader), 10)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError) as exc:
            await self.close()
            raise Unsupported(f"no answer to the upgrade ({type(exc).__name__})") from exc
        if status != 101:
            await self.close()
            raise Unsupported(f"upgrade answered HTTP {status}")
        expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            await self.close()
            raise BenchError("bad Sec-WebSocket-Accept")
        self.start()

    def send(self, payload: dict[str, Any]) -> None:
        self._frame(0x1, json.dumps(payload).encode())

    def _frame(self, opcode: int, data: bytes) -> None:
        assert self.writer is not None
        n = len(data)
        if n < 126:
            head = bytes([0x80 | opcode, 0x80 | n])
        elif n < 1 << 16:
            head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        self.writer.write(head + mask + _xor(data, mask))

    async def _pump(self) -> None:
        assert self.reader is not None
        message = b""
        while True:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await self.reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await self.reader.readexactly(8), "big")
            mask = await self.reader.readexactly(4) if b1 & 0x80 else b""
            data = await self.reader.readexactly(n)
            if mask:
                data = _xor(data, mask)
            self.first_bytes.set()
            opcode = b0 & 0x0F
            if opcode == 0x8:  # close: answer it and stop
                self._frame(0x8, data[:2])
                return
            if opcode == 0x9:
                self._frame(0xA, data)
            elif opcode in (0x0, 0x1, 0x2):
                message += data
                if b0 & 0x80:
                    frame = json.loads(message)
                    message = b""
                    if isinstance(frame, dict):
                        self.queue.put_nowait((time.perf_counter(), frame))


def _xor(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    if not n:
        return data
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


async def ws_register(ws: WebSocket, agent_id: str, timeout: float) -> None:
    """Register on a WebSocket and wait for ``registered`` (an ``error`` frame or silence raises)."""
    ws.send({"type": "register", "id": "bench-register", "agent_id": agent_id})
    deadline = time.monotonic() + timeout
    while True:
        item = await ws.next(max(0.01, deadline - time.monotonic()))
        if item is None:
            raise BenchError("the hub closed the WebSocket after register")
        frame = item[1]
        if frame.get("type") == "registered":
            return
        if frame.get("type") == "error":
            raise BenchError(f"register answered with an error frame: {frame}")


def _frame_message(frame: dict[str, Any]) -> dict[str, Any] | None:
    """The message a frame carries: an SSE event is the message; a WS ``message`` frame wraps or inlines it."""
    if "type" in frame and frame.get("type") != "message":
        return None
    inner = frame.get("message")
    return inner if isinstance(inner, dict) else frame


# ── Spool relay client (Arc's FileRelayClient layout) ────────────────────────


class SpoolClient:
    """Arc's file-spool relay, client side: ``requests/<agent>/<id>.json`` in, ``responses/<agent>/<id>.json`` out.

    The request file is written atomically (a dot-named temporary file, then a
    rename) exactly as ``arc.py``'s ``FileRelayClient`` does, so a relay never
    sees half a request. ``call`` returns the response envelope
    (``request_id``, ``ok``, ``status``, ``body``...), or a 598 envelope on timeout.
    """

    def __init__(self, spool_dir: str | Path, agent_id: str, *, key: str | None = None, poll_sec: float = 0.002):
        safe = spool_name(agent_id)
        root = Path(spool_dir).expanduser().absolute()
        self.requests, self.responses = root / "requests" / safe, root / "responses" / safe
        self.agent_id, self.key, self.poll_sec = agent_id, key, poll_sec

    def ensure_dirs(self) -> None:
        self.requests.mkdir(parents=True, exist_ok=True)
        self.responses.mkdir(parents=True, exist_ok=True)

    def response_path(self, request_id: str) -> Path:
        return self.responses / f"{request_id}.json"

    def submit(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, request_id: str | None = None
    ) -> Path:
        """Write one request (its file is in place when this returns); returns the response file to wait for."""
        self.ensure_dirs()
        envelope = relay_request(self.agent_id, method, path, body, key=self.key, request_id=request_id)
        spool_write(self.requests / f"{envelope['request_id']}.json", json.dumps(envelope).encode())
        return self.response_path(envelope["request_id"])

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float = 30.0
    ) -> dict[str, Any]:
        response = self.submit(method, path, body)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                payload: dict[str, Any] = json.loads(response.read_text(encoding="utf-8"))
                return payload
            except FileNotFoundError:
                await asyncio.sleep(self.poll_sec)
        return {"request_id": response.stem, "ok": False, "status": 598, "error": "relay timed out"}


# What a sandboxed agent sends when it starts work, in order: ``relay_burst`` gives each agent
# these, in turn, as ``(label, method)``; ``Bench.burst_request`` fills in path and body.
BURST_MIX = (
    ("POST /v1/sessions", "POST"),  # register (replace: true, as ArcClient.register does)
    ("POST /v1/messages", "POST"),  # a post to the bench room
    ("GET /v1/messages?channel&since_id", "GET"),  # read the room since the run's marker
    ("POST /v1/claims", "POST"),  # claim a key of its own
    ("GET /v1/hub-info", "GET"),
)


@dataclass
class SpoolRequest:
    """One request of a burst: what to write, and when it was written and answered (``perf_counter``)."""

    client: SpoolClient
    label: str
    method: str
    path: str
    body: dict[str, Any] | None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    written: float | None = None
    answered: float | None = None
    problem: str | None = None  # set by ``check``: what was wrong with the answer

    @property
    def response(self) -> Path:
        return self.client.response_path(self.request_id)

    @property
    def latency(self) -> float | None:
        return None if self.answered is None or self.written is None else self.answered - self.written

    def check(self) -> bool:
        """Read the answer: true for an ok envelope (``ok: true``, status below 400), else ``problem`` says why."""
        self.problem = self._problem()
        return self.problem is None

    def _problem(self) -> str | None:
        try:
            payload = json.loads(self.response.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return f"{self.label}: unreadable response ({type(exc).__name__})"
        if not isinstance(payload, dict):
            return f"{self.label}: response is not an object"
        status = payload.get("status")
        if payload.get("ok") is True and isinstance(status, int) and status < 400:
            return None
        return f"{self.label}: {status} {str(payload.get('error'))[:120]}"


def spool_burst(
    requests: list[SpoolRequest], *, max_sec: float, idle_sec: float, scan_sec: float = 0.001
) -> list[SpoolRequest]:
    """Write every request at once and note when each response file is present; blocking, use a thread.

    A scanner thread, started first, lists the response directories every ``scan_sec``
    while this thread writes the requests one after another, noting each one's time
    once its file is in place (after the rename). A response counts only once its
    request's time is noted, so no answer is timed against a write not yet recorded.
    Stops when all are answered, after ``max_sec``, or when nothing more is answered
    for ``idle_sec`` after the last write; unanswered requests keep ``answered=None``.
    """
    for request in requests:
        request.client.ensure_dirs()
    waiting: dict[Path, dict[str, SpoolRequest]] = {}
    for request in requests:
        waiting.setdefault(request.client.responses, {})[request.response.name] = request
    writes_ended: list[float] = []  # when the last write returned (or failed)

    def scan() -> None:
        started = last_news = time.perf_counter()
        left = len(requests)
        while left:
            for directory, expected in waiting.items():
                if not expected:
                    continue
                try:
                    names = os.listdir(directory)
                except FileNotFoundError:
                    continue
                now = time.perf_counter()
                for name in names:
                    request = expected.get(name)
                    if request is not None and request.written is not None:
                        request.answered = now
                        del expected[name]
                        left -= 1
                        last_news = now
            now = time.perf_counter()
            if now - started > max_sec:
                return
            if writes_ended and now - max(last_news, writes_ended[0]) > idle_sec:
                return
            time.sleep(scan_sec)

    scanner = threading.Thread(target=scan, name="bench-spool-scan", daemon=True)
    scanner.start()
    try:
        for request in requests:
            request.client.submit(request.method, request.path, request.body, request_id=request.request_id)
            request.written = time.perf_counter()
    finally:
        writes_ended.append(time.perf_counter())
        scanner.join()
    return requests


def _pool_http_bursts(bursts: list[dict[str, Any]]) -> dict[str, Any]:
    """Pooled latencies of ``Bench.http_burst`` runs; the wall time (first sent → last answered) is the median."""
    latencies = [latency for b in bursts for latency in b["latencies"]]
    return {
        "status": "ok",
        "requests": sum(b["requests"] for b in bursts),
        "failures": sum(b["failures"] for b in bursts),
        **latency_summary(latencies),
        "wall_ms": _ms(statistics.median(b["wall"] for b in bursts)),
    }


def _latencies(requests: list[SpoolRequest]) -> list[float]:
    return [latency for r in requests if (latency := r.latency) is not None]


# ── Statistics ───────────────────────────────────────────────────────────────


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def latency_summary(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"n": 0}
    return {
        "n": len(seconds),
        "p50_ms": _ms(percentile(seconds, 50)),
        "p99_ms": _ms(percentile(seconds, 99)),
        "max_ms": _ms(max(seconds)),
    }


# ── Measurements ─────────────────────────────────────────────────────────────


@dataclass
class Bench:
    config: BenchConfig
    log: Log = field(default=lambda _line: None)
    mcp_phase: McpPhase | None = None

    def __post_init__(self) -> None:
        self.target = Target.parse(self.config.url, self.config.token)
        self.run_id = uuid.uuid4().hex[:8]
        self.random = random.Random(self.config.seed)
        self.channel = f"bench-{self.run_id}"

    async def run(self) -> dict[str, Any]:
        started = datetime.now(UTC)
        sender = Http(self.target)
        try:
            await sender.post("/v1/channels", {"name": self.channel, "created_by": "bench"}, expect=201)
            results: dict[str, Any] = {}
            steps: dict[str, Callable[[Http], Any]] = {
                "posts": self.posts,
                "push": self.push,
                "fanout": self.fanout,
                "relay": self.relay,
                "relay_burst": self.relay_burst,
                "claims": self.claims,
                "idle": self.idle,
                "mcp": self.mcp,
                "a2a": self.a2a,
            }
            for name in MEASUREMENTS:
                if name in self.config.only:
                    self.log(f"bench: {name} ...")
                    step_started = time.perf_counter()
                    try:
                        results[name] = await steps[name](sender)
                    except (BenchError, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                        results[name] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
                    self.log(f"bench: {name} done in {time.perf_counter() - step_started:.1f} s")
        finally:
            await sender.close()
        return {
            "url": self.target.url,
            "started_at": started.isoformat(timespec="seconds"),
            "elapsed_sec": round((datetime.now(UTC) - started).total_seconds(), 1),
            "config": {
                k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.config).items() if k != "token"
            },
            "results": results,
        }

    # posts ------------------------------------------------------------------

    async def posts(self, _sender: Http) -> list[dict[str, Any]]:
        return [await self.post_throughput(c, self.config.posts) for c in self.config.concurrency]

    async def post_throughput(self, concurrency: int, posts: int) -> dict[str, Any]:
        """``posts`` POST /v1/messages from ``concurrency`` clients, each sending its next post on its answer.

        Stops early after ``post_max_sec`` (a slow hub would otherwise take minutes); ``posts`` in the
        result is the number actually sent.
        """
        remaining = posts
        stop_at = time.perf_counter() + self.config.post_max_sec
        latencies: list[float] = []
        errors = 0

        async def client(n: int) -> None:
            nonlocal remaining, errors
            conn = Http(self.target, self.config.wait_sec)
            try:
                while remaining > 0 and time.perf_counter() < stop_at:
                    remaining -= 1
                    payload = {"from_agent": f"bench-poster-{n}", "channel": self.channel, "body": f"post {remaining}"}
                    started = time.perf_counter()
                    try:
                        response = await conn.request("POST", "/v1/messages", payload)
                        ok = response.status == 201
                    except (ConnectionError, OSError, asyncio.IncompleteReadError, BenchError, TimeoutError):
                        await conn.close()
                        ok = False
                    latencies.append(time.perf_counter() - started)
                    errors += not ok
            finally:
                await conn.close()

        cpu_before = cpu_seconds(self.config.server_pids)
        started = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu_after = cpu_seconds(self.config.server_pids)
        summary = latency_summary(latencies)
        result = {
            "concurrency": concurrency,
            "posts": len(latencies),
            "errors": errors,
            "per_sec": round(len(latencies) / elapsed, 1),
            "p50_ms": summary.get("p50_ms"),
            "p99_ms": summary.get("p99_ms"),
        }
        if cpu_before is not None and cpu_after is not None and latencies:
            result["cpu_ms_per_post"] = round((cpu_after - cpu_before) * 1000 / len(latencies), 3)
        return result

    # push -------------------------------------------------------------------

    async def push(self, sender: Http) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for transport in self.config.push_transports:
            try:
                if transport == "longpoll":
                    results[transport] = await self.push_longpoll(sender)
                else:
                    results[transport] = await self.push_stream(sender, transport)
            except Unsupported as exc:
                results[transport] = {"status": "unsupported", "reason": str(exc)}
            except (BenchError, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                results[transport] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
        return results

    async def _marker(self, sender: Http) -> int:
        """Post a marker broadcast and return its id: readers start after it, with no backlog to read."""
        posted = await sender.post("/v1/messages", {"from_agent": "bench", "channel": self.channel, "body": "marker"})
        return int(posted["result"]["id"])

    async def _gap(self, minimum: float = 0.0) -> None:
        await asyncio.sleep(minimum + self.random.uniform(0, self.config.gap_ms / 1000))

    async def push_longpoll(self, sender: Http) -> dict[str, Any]:
        agent = f"bench-lp-{self.run_id}"
        since = await self._marker(sender)
        receiver = Http(self.target, None)  # the long-poll's own wait bounds it
        latencies: list[float] = []
        lost = 0

        async def wait_for(body: str) -> float:
            nonlocal since
            while True:
                query = urlencode({"agent_id": agent, "since_id": since, "timeout": 30})
                response = await receiver.request("GET", f"/v1/events?{query}")
                arrived = time.perf_counter()
                if response.status != 200:
                    raise BenchError(f"long-poll answered {response.status}: {response.body[:300]!r}")
                rows = response.json()["result"]
                for row in rows:
                    since = max(since, int(row["id"]))
                if any(row.get("body") == body for row in rows):
                    return arrived

        deadline = time.monotonic() + self.config.push_max_sec
        waiting: asyncio.Task[float] | None = None
        try:
            for i in range(self.config.push_messages):
                if time.monotonic() > deadline:
                    break
                body = f"push longpoll {self.run_id} {i}"
                waiting = asyncio.create_task(wait_for(body))
                await self._gap(0.01)  # the poll is waiting at the hub by now
                sent = time.perf_counter()
                await sender.post("/v1/messages", {"from_agent": "bench-sender", "to_agent": agent, "body": body})
                try:
                    latencies.append(await asyncio.wait_for(waiting, self.config.wait_sec) - sent)
                except TimeoutError:
                    lost += 1
                    await receiver.close()  # a half-read answer may be on it
        finally:
            if waiting is not None:
                waiting.cancel()
            await receiver.close()
        return {"status": "ok", "lost": lost, **latency_summary(latencies)}

    async def _open_stream(self, kind: str, agent: str, since: int, rooms: str | None = None) -> Stream:
        """An SSE stream or a registered WebSocket for ``agent``, reading after ``since`` (only ``rooms``)."""
        stream: Stream
        if kind == "sse":
            params: dict[str, Any] = {"agent_id": agent, "since_id": since}
            if rooms:
                params["channels"] = rooms
            stream = SseStream(self.target)
            opening = stream.open(f"/v1/stream?{urlencode(params)}")
        elif kind == "ws":
            stream = ws = WebSocket(self.target)

            async def register() -> None:
                await ws.open("/v1/ws")
                await ws_register(ws, agent, self.config.wait_sec)
                if rooms:
                    ws.send({"type": "subscribe", "id": "bench-subscribe", "channels": [rooms], "since_id": since})

            opening = register()
        else:
            raise BenchError(f"unknown transport {kind!r}")
        try:
            await asyncio.wait_for(opening, self.config.wait_sec)
        except BaseException:
            await stream.close()
            raise
        return stream

    async def push_stream(self, sender: Http, kind: str) -> dict[str, Any]:
        agent = f"bench-{kind}-{self.run_id}"
        since = await self._marker(sender)
        stream = await self._open_stream(kind, agent, since)
        latencies: list[float] = []
        lost = 0

        async def wait_for(body: str) -> float:
            while True:
                item = await stream.next(self.config.wait_sec)
                if item is None:
                    raise BenchError(f"the {kind} stream ended")
                message = _frame_message(item[1])
                if message is not None and message.get("body") == body:
                    return item[0]

        waiting: asyncio.Task[float] | None = None
        try:
            await stream.wait_ready(1.0)
            deadline = time.monotonic() + self.config.push_max_sec
            for i in range(self.config.push_messages):
                if time.monotonic() > deadline:
                    break
                body = f"push {kind} {self.run_id} {i}"
                waiting = asyncio.create_task(wait_for(body))
                await self._gap(0.001)
                sent = time.perf_counter()
                await sender.post("/v1/messages", {"from_agent": "bench-sender", "to_agent": agent, "body": body})
                try:
                    latencies.append(await asyncio.wait_for(waiting, self.config.wait_sec) - sent)
                except TimeoutError:
                    lost += 1
        finally:
            if waiting is not None:
                waiting.cancel()
            await stream.close()
        return {"status": "ok", "lost": lost, **latency_summary(latencies)}

    # fan-out ----------------------------------------------------------------

    async def _let_go(self, sender: Http, room: str) -> None:
        """Post twice, apart, to a room whose readers have gone.

        arc.py notices a gone SSE reader only when a write to it fails (the second
        write after the close); until then its thread keeps polling the database
        and would slow every later measurement.
        """
        for _ in range(2):
            await sender.post("/v1/messages", {"from_agent": "bench", "channel": room, "body": "bench: readers gone"})
            await asyncio.sleep(0.6)

    async def fanout(self, sender: Http) -> list[dict[str, Any]]:
        return [await self.fanout_one(sender, n) for n in self.config.fanout_receivers]

    async def _open_many(
        self, kind: str, count: int, prefix: str, since: int, rooms: str | None
    ) -> tuple[list[Stream], list[str]]:
        """Register ``count`` agents, then open a stream for each, one after another; returns them and why any failed.

        Registered, as real agents are: the hub then keeps each reader's delivery records and
        cursor (work an unregistered reader never causes). ``rooms``: only these (a quiet room
        keeps idle streams idle); ``None``: each reads its whole feed.

        One at a time because arc.py listens with a backlog of 5: a burst of connects
        overflows it, and a connection dropped from a full accept queue can look open to
        the client while the server never sees it.
        """
        streams: list[Stream] = []
        failures: list[str] = []
        await self._register(count, prefix)
        for k in range(count):
            try:
                streams.append(await self._open_stream(kind, f"{prefix}-{k}", since, rooms))
            except Unsupported:
                await asyncio.gather(*(s.close() for s in streams))
                raise
            except (BenchError, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
        await asyncio.gather(*(s.wait_ready(1.0) for s in streams))
        return streams, failures

    async def _register(self, count: int, prefix: str, batch: int = 8) -> None:
        """``POST /v1/sessions`` for agents ``prefix-0`` .. ``prefix-(count-1)``, a few at a time."""
        conns = [Http(self.target, self.config.wait_sec) for _ in range(batch)]
        try:

            async def register(conn: Http, ks: range) -> None:
                for k in ks:
                    response = await conn.request("POST", "/v1/sessions", {"agent_id": f"{prefix}-{k}"})
                    if response.status >= 300:
                        raise BenchError(f"registering {prefix}-{k}: HTTP {response.status}")

            await asyncio.gather(*(register(conn, range(i, count, batch)) for i, conn in enumerate(conns)))
        finally:
            await asyncio.gather(*(conn.close() for conn in conns))

    async def fanout_one(self, sender: Http, receivers: int) -> dict[str, Any]:
        """20 broadcasts to ``receivers`` registered agents, each streaming its own whole feed over SSE."""
        room = f"bench-fan-{receivers}-{self.run_id}"
        await sender.post("/v1/channels", {"name": room, "created_by": "bench"}, expect=201)
        since = await self._marker(sender)
        streams, failures = await self._open_many("sse", receivers, f"bench-fan-{receivers}-{self.run_id}", since, None)
        messages = self.config.fanout_messages
        bodies = {f"fanout {room} {j}": j for j in range(messages)}
        arrivals: list[dict[int, float]] = [{} for _ in streams]

        async def read(k: int, stream: Stream) -> None:
            while len(arrivals[k]) < messages:
                item = await stream.next(3600)
                if item is None:
                    return
                j = bodies.get(str(item[1].get("body")))
                if j is not None:
                    arrivals[k].setdefault(j, item[0])

        readers = [asyncio.create_task(read(k, s)) for k, s in enumerate(streams)]
        sent: list[float] = []
        try:
            await asyncio.sleep(0.2)
            spacing = self.config.fanout_spacing_ms / 1000
            start = time.perf_counter()
            for j in range(messages):
                await asyncio.sleep(max(0.0, start + j * spacing - time.perf_counter()))
                sent.append(time.perf_counter())
                await sender.post(
                    "/v1/messages", {"from_agent": "bench-fanout", "channel": room, "body": f"fanout {room} {j}"}
                )
            await asyncio.wait(readers, timeout=self.config.wait_sec)
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*(s.close() for s in streams))
            await self._let_go(sender, room)
        last: list[float] = []
        every: list[float] = []
        for j in range(messages):
            times = [a[j] for a in arrivals if j in a]
            every += [t - sent[j] for t in times]
            if len(times) == len(streams):
                last.append(max(times) - sent[j])
        delivered = sum(len(a) for a in arrivals)
        expected = receivers * messages
        return {
            "receivers": receivers,
            "connected": len(streams),
            "connect_failures": failures[:3],
            "messages": messages,
            "delivered": delivered,
            "expected": expected,
            "all_delivered": delivered == expected,
            "last_p50_ms": _ms(percentile(last, 50)) if last else None,
            "last_max_ms": _ms(max(last)) if last else None,
            "each_p50_ms": _ms(percentile(every, 50)) if every else None,
        }

    # relay ------------------------------------------------------------------

    async def relay(self, _sender: Http) -> dict[str, Any]:
        if not self.config.spool_dir:
            return {"status": "not implemented", "reason": "no --spool-dir given"}
        client = SpoolClient(self.config.spool_dir, f"bench-relay-{self.run_id}", key=self.config.token)
        latencies: list[float] = []
        errors = 0
        deadline = time.monotonic() + self.config.relay_max_sec
        for i in range(self.config.relay_requests):
            if time.monotonic() > deadline:
                break
            await self._gap()
            started = time.perf_counter()
            payload = {"from_agent": client.agent_id, "channel": self.channel, "body": f"relay {i}"}
            answer = await client.call("POST", "/v1/messages", payload, timeout=self.config.wait_sec)
            if answer.get("status") == 598:
                if not latencies:
                    return {"status": "no response", "reason": f"no relay answered within {self.config.wait_sec} s"}
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            errors += answer.get("status") != 201
        return {"status": "ok", "errors": errors, **latency_summary(latencies)}

    def burst_request(self, agent: str, j: int, since: int, *, key: str | None) -> SpoolRequest:
        """The ``j``-th request of ``agent`` in a burst: ``BURST_MIX`` in turn."""
        label, method = BURST_MIX[j % len(BURST_MIX)]
        client = SpoolClient(self.config.spool_dir or "", agent, key=key)
        moves: dict[int, tuple[str, dict[str, Any] | None]] = {
            0: ("/v1/sessions", {"agent_id": agent, "capabilities": ["bench"], "replace": True}),
            1: ("/v1/messages", {"from_agent": agent, "channel": self.channel, "body": f"burst {agent} {j}"}),
            2: ("/v1/messages?" + urlencode({"channel": self.channel, "since_id": since, "limit": 50}), None),
            3: ("/v1/claims", {"owner_agent_id": agent, "claim_key": f"{agent}-{j}", "ttl_sec": 60}),
            4: ("/v1/hub-info", None),
        }
        path, body = moves[j % len(BURST_MIX)]
        return SpoolRequest(client, label, method, path, body)

    async def relay_burst(self, sender: Http) -> dict[str, Any]:
        """``relay_bursts`` times: every agent writes its requests at once; each timed file to file."""
        cfg = self.config
        if not cfg.spool_dir:
            return {"status": "not implemented", "reason": "no --spool-dir given"}
        agents, per_agent = cfg.relay_burst_agents, cfg.relay_burst_per_agent
        shape: dict[str, Any] = {
            "agents": agents,
            "per_agent": per_agent,
            "mix": [label for label, _ in BURST_MIX[: min(per_agent, len(BURST_MIX))]],
        }
        since = await self._marker(sender)
        everything: list[SpoolRequest] = []
        bursts: list[dict[str, Any]] = []
        over_http: list[dict[str, Any]] = []
        for b in range(cfg.relay_bursts):
            # Agent-major order: agent 0's requests, then agent 1's... each written as fast as it can be.
            burst = [
                self.burst_request(f"bench-burst-{self.run_id}-{b}-{k}", j, since, key=cfg.token)
                for k in range(agents)
                for j in range(per_agent)
            ]
            await self._gap(0.05)
            await asyncio.to_thread(spool_burst, burst, max_sec=cfg.relay_burst_max_sec, idle_sec=cfg.wait_sec)
            answered = [r for r in burst if r.answered is not None]
            if not answered and not everything:
                return {
                    "status": "no response",
                    "reason": f"no relay answered any of {len(burst)} requests within {cfg.wait_sec:g} s",
                    **shape,
                    "requests": len(burst),
                    "answered": 0,
                }
            written = [r.written for r in burst if r.written is not None]
            ended = [r.answered for r in answered if r.answered is not None]
            bursts.append(
                {
                    "requests": len(burst),
                    "answered": len(answered),
                    "failures": sum(not r.check() for r in answered),
                    "write_ms": _ms(max(written) - min(written)),
                    # first request in place → last response present
                    "wall_ms": _ms(max(ended) - min(written)) if ended else None,
                    **{k: v for k, v in latency_summary(_latencies(answered)).items() if k != "n"},
                }
            )
            everything += burst
            if cfg.relay_burst_http:
                over_http.append(await self.http_burst(f"bench-http-{self.run_id}-{b}", since))
        answered = [r for r in everything if r.answered is not None]
        problems = [r.problem for r in answered if r.problem is not None]
        by_kind: dict[str, dict[str, Any]] = {}
        for label in shape["mix"]:
            of_kind = [r for r in everything if r.label == label]
            done = [r for r in of_kind if r.answered is not None]
            by_kind[label] = {
                "requests": len(of_kind),
                "answered": len(done),
                "failures": sum(r.problem is not None for r in done),
                "p50_ms": _ms(percentile(_latencies(done), 50)) if done else None,
            }
        walls = [b["wall_ms"] for b in bursts if b["wall_ms"] is not None]
        return {
            "status": "ok",
            **shape,
            "bursts": len(bursts),
            "requests": len(everything),
            "answered": len(answered),
            "failures": len(problems),
            "failure_samples": problems[:5],
            **latency_summary(_latencies(answered)),
            "wall_ms": statistics.median(walls) if walls else None,
            "write_ms": statistics.median(b["write_ms"] for b in bursts),
            "by_kind": by_kind,
            "per_burst": bursts,
            "http": _pool_http_bursts(over_http) if over_http else {"status": "not measured"},
        }

    async def http_burst(self, prefix: str, since: int) -> dict[str, Any]:
        """The burst's requests over HTTP, a connection each, all sent at once; each timed until its answer.

        The connections are opened first, one by one (arc.py listens with a backlog of 5).
        """
        cfg = self.config
        requests = [
            self.burst_request(f"{prefix}-{k}", j, since, key=None)
            for k in range(cfg.relay_burst_agents)
            for j in range(cfg.relay_burst_per_agent)
        ]
        conns = [Http(self.target, cfg.wait_sec) for _ in requests]
        latencies: list[float] = []
        failures = 0

        async def send(conn: Http, request: SpoolRequest) -> None:
            nonlocal failures
            started = time.perf_counter()
            try:
                response = await conn.request(request.method, request.path, request.body)
            except (ConnectionError, OSError, asyncio.IncompleteReadError, BenchError, TimeoutError):
                failures += 1
                return
            latencies.append(time.perf_counter() - started)
            failures += response.status >= 400

        try:
            for conn in conns:
                await conn.connect()
                await asyncio.sleep(0.001)
            started = time.perf_counter()
            await asyncio.gather(*(send(c, r) for c, r in zip(conns, requests, strict=True)))
            wall = time.perf_counter() - started
        finally:
            await asyncio.gather(*(c.close() for c in conns))
        return {"requests": len(requests), "failures": failures, "latencies": latencies, "wall": wall}

    # claims -----------------------------------------------------------------

    async def claims(self, _sender: Http) -> dict[str, Any]:
        """``racers`` clients connect first, then all send ``POST /v1/claims`` for one key at once."""
        conns = [Http(self.target, self.config.wait_sec) for _ in range(self.config.racers)]
        winners: list[int] = []
        consistent = True
        errors = 0
        latencies: list[float] = []
        try:
            for race in range(self.config.races):
                key = f"bench-race-{self.run_id}-{race}"
                for conn in conns:  # one by one: a burst of connects overflows arc.py's backlog of 5
                    await conn.connect()
                    await asyncio.sleep(0.001)

                async def claim(n: int, conn: Http, key: str = key) -> tuple[int, dict[str, Any] | None]:
                    started = time.perf_counter()
                    body = {"owner_agent_id": f"bench-racer-{n}", "claim_key": key, "ttl_sec": 60}
                    try:
                        response = await conn.request("POST", "/v1/claims", body)
                    except (ConnectionError, OSError, asyncio.IncompleteReadError, TimeoutError):
                        await conn.close()
                        return 0, None
                    latencies.append(time.perf_counter() - started)
                    return response.status, response.json()

                answers = await asyncio.gather(*(claim(n, c) for n, c in enumerate(conns)))
                good = [body for status, body in answers if status in (200, 201) and body is not None]
                errors += len(answers) - len(good)
                won = [b for b in good if b.get("acquired") is True]
                winners.append(len(won))
                owners = {b["result"]["owner_agent_id"] for b in good}
                consistent &= len(won) == 1 and owners == {won[0]["result"]["owner_agent_id"]}
        finally:
            await asyncio.gather(*(c.close() for c in conns))
        return {
            "racers": self.config.racers,
            "races": self.config.races,
            "winners": winners,
            "exactly_one": all(w == 1 for w in winners),
            "losers_see_winner": consistent,
            "errors": errors,
            **{k: v for k, v in latency_summary(latencies).items() if k != "n"},
        }

    # idle connections -------------------------------------------------------

    async def idle(self, sender: Http) -> dict[str, Any]:
        """Post throughput at concurrency 8, then again while C idle streams of each transport are open."""
        cfg = self.config
        limit = raise_fd_limit()
        room = f"bench-idle-{self.run_id}"
        await sender.post("/v1/channels", {"name": room, "created_by": "bench"}, expect=201)
        wanted = min(cfg.idle_connections, max(0, limit - open_fd_count() - 64 - cfg.idle_concurrency))
        baseline = await self.post_throughput(cfg.idle_concurrency, cfg.idle_posts)
        transports = {kind: await self.idle_with(sender, kind, wanted, room, baseline) for kind in cfg.idle_transports}
        return {
            "status": "ok",
            "requested": cfg.idle_connections,
            "fd_limit": limit,
            "baseline": baseline,
            "transports": transports,
        }

    async def idle_with(
        self, sender: Http, kind: str, count: int, room: str, baseline: dict[str, Any]
    ) -> dict[str, Any]:
        since = await self._marker(sender)
        opened_at = time.perf_counter()
        try:
            streams, failures = await self._open_many(kind, count, f"bench-idle-{kind}-{self.run_id}", since, room)
        except Unsupported as exc:
            return {"status": "unsupported", "reason": str(exc)}
        open_sec = time.perf_counter() - opened_at
        try:
            await asyncio.sleep(1.0)
            loaded = await self.post_throughput(self.config.idle_concurrency, self.config.idle_posts)
            held = sum(not s.closed for s in streams)
        finally:
            await asyncio.gather(*(s.close() for s in streams))
            await self._let_go(sender, room)
        return {
            "status": "ok",
            "opened": len(streams),
            "open_failures": failures[:3],
            "held": held,
            "open_sec": round(open_sec, 2),
            "with_idle": loaded,
            "ratio": round(loaded["per_sec"] / baseline["per_sec"], 3) if baseline["per_sec"] else None,
        }

    # mcp --------------------------------------------------------------------

    async def mcp(self, _sender: Http) -> dict[str, Any]:
        if self.mcp_phase is None:
            return {"status": "error", "reason": "no MCP client was handed to the bench (coordination.bench_mcp)"}
        pids = self.config.server_pids
        return await self.mcp_phase(self.config, self.run_id, lambda: cpu_seconds(pids))

    # a2a --------------------------------------------------------------------

    async def a2a(self, sender: Http) -> dict[str, Any]:
        """Blocking A2A ``SendMessage`` calls (JSON-RPC, A2A 1.0) to a hub agent that answers each task at once.

        The agent is a worker over REST: it long-polls its feed and answers each ``task_request`` with a
        ``task_result``. Each call is timed from its request to its answer: the finished task, its answer as
        the artifact. A hub without A2A (arc.py) is ``unsupported``.
        """
        agent = f"bench-a2a-{self.run_id}"
        await sender.post("/v1/sessions", {"agent_id": agent, "capabilities": ["bench-echo"]}, expect=201)
        since = await self._marker(sender)
        stop = asyncio.Event()

        async def worker() -> None:
            nonlocal since
            conn = Http(self.target, self.config.wait_sec + 10)
            try:
                while not stop.is_set():
                    got = await conn.request("GET", f"/v1/events?agent_id={agent}&since_id={since}&timeout=5")
                    for message in got.json().get("result", []):
                        since = max(since, int(message["id"]))
                        if message.get("kind") == "task_request":
                            answer = {"from_agent": agent, "body": "pong"}
                            await conn.request("POST", f"/v1/tasks/{message['id']}/result", answer)
            finally:
                await conn.close()

        answering = asyncio.ensure_future(worker())
        rpc = Http(self.target, self.config.wait_sec)
        latencies: list[float] = []
        cpu_before = cpu_seconds(self.config.server_pids)
        try:
            for n in range(self.config.a2a_round_trips):
                message = {"role": "ROLE_USER", "messageId": f"bench-{self.run_id}-{n}", "parts": [{"text": "ping"}]}
                call = {"jsonrpc": "2.0", "id": n, "method": "SendMessage", "params": {"message": message}}
                started = time.perf_counter()
                response = await rpc.request("POST", f"/a2a/agents/{agent}", call, headers=["A2A-Version: 1.0"])
                if response.status == 404:
                    raise Unsupported("no A2A endpoint (/a2a answered 404)")
                task = (response.json().get("result") or {}).get("task") or {}
                if task.get("status", {}).get("state") != "TASK_STATE_COMPLETED":
                    raise BenchError(f"SendMessage answered {response.status}: {response.body[:300]!r}")
                latencies.append(time.perf_counter() - started)
        except Unsupported as exc:
            return {"status": "unsupported", "reason": str(exc)}
        finally:
            stop.set()
            await rpc.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(answering, self.config.wait_sec + 10)
        cpu_after = cpu_seconds(self.config.server_pids)
        result: dict[str, Any] = {"status": "ok", **latency_summary(latencies)}
        if cpu_before is not None and cpu_after is not None and latencies:
            result["cpu_ms_per_call"] = round((cpu_after - cpu_before) * 1000 / len(latencies), 3)
        return result


def raise_fd_limit() -> int:
    """Raise this process's soft open-files limit to the hard one; returns the soft limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def open_fd_count() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


McpPhase = Callable[[BenchConfig, str, Callable[[], float | None]], Awaitable[dict[str, Any]]]


def run(config: BenchConfig, log: Log | None = None, mcp_phase: McpPhase | None = None) -> dict[str, Any]:
    """Run the configured measurements against ``config.url`` and return their JSON-serialisable result.

    ``mcp_phase(config, run_id, cpu)``: runs the ``mcp`` measurement (``coordination.bench_mcp.phase``).
    """
    unknown = set(config.only) - set(MEASUREMENTS)
    if unknown:
        raise BenchError(f"unknown measurements: {', '.join(sorted(unknown))} (one of {', '.join(MEASUREMENTS)})")
    bad = set(config.push_transports) - set(PUSH_TRANSPORTS)
    if bad:
        raise BenchError(f"unknown push transports: {', '.join(sorted(bad))} (one of {', '.join(PUSH_TRANSPORTS)})")
    bad = set(config.idle_transports) - {"sse", "ws"}
    if bad:
        raise BenchError(f"unknown idle transports: {', '.join(sorted(bad))} (sse or ws)")
    bad = set(config.mcp_transports) - set(MCP_TRANSPORTS)
    if bad:
        raise BenchError(f"unknown MCP transports: {', '.join(sorted(bad))} (stdio or http)")
    if "mcp" in config.only and (config.mcp_round_trips < 1 or config.mcp_sends < 1):
        raise BenchError("the MCP phase needs at least one round trip and one send")
    return asyncio.run(Bench(config, log or (lambda _line: None), mcp_phase).run())


# ── Reporting ────────────────────────────────────────────────────────────────

Value = float | int | str | bool | None


def cpu_seconds(pids: Iterable[int]) -> float | None:
    """User + system CPU seconds of these processes so far, from /proc (``None``: none given, or unreadable)."""
    pids = list(pids)
    if not pids:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    try:
        for pid in pids:
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15)
    except (OSError, ValueError, IndexError):
        return None
    return total


def metric_rows(report: dict[str, Any]) -> list[tuple[str, str, Value]]:
    """``(key, label, value)`` for every figure in a report, in table order; keys are stable across runs."""
    results = dict(report.get("results", {}))
    rows: list[tuple[str, str, Value]] = []
    for name, result in list(results.items()):
        if isinstance(result, dict) and result.get("status") == "error":
            rows.append((f"{name}.error", f"{name} failed", str(result.get("reason"))))
            del results[name]
    for r in results.get("posts", []):
        c = r["concurrency"]
        rows += [
            (f"posts.c{c}.per_sec", f"POST /v1/messages c={c}, posts/s", r["per_sec"]),
            (f"posts.c{c}.p50_ms", f"POST c={c} p50 ms", r["p50_ms"]),
            (f"posts.c{c}.p99_ms", f"POST c={c} p99 ms", r["p99_ms"]),
            (f"posts.c{c}.errors", f"POST c={c} errors", r["errors"]),
        ]
        if "cpu_ms_per_post" in r:
            rows.append((f"posts.c{c}.cpu_ms", f"POST c={c} server CPU ms per post", r["cpu_ms_per_post"]))
    names = {"longpoll": "long-poll", "sse": "SSE", "ws": "WebSocket"}
    for transport, r in results.get("push", {}).items():
        label = f"push via {names.get(transport, transport)}"
        if r.get("status") != "ok":
            rows.append((f"push.{transport}.p50_ms", f"{label} p50 ms", r.get("status")))
            continue
        rows += [
            (f"push.{transport}.p50_ms", f"{label} p50 ms", r.get("p50_ms")),
            (f"push.{transport}.p99_ms", f"{label} p99 ms", r.get("p99_ms")),
            (f"push.{transport}.n", f"{label} messages timed", r["n"]),
            (f"push.{transport}.lost", f"{label} messages lost", r["lost"]),
        ]
    for r in results.get("fanout", []):
        n, m = r["receivers"], r["messages"]
        rows += [
            (f"fanout.{n}.last_p50_ms", f"fan-out {n} SSE x {m}: last receiver p50 ms", r["last_p50_ms"]),
            (f"fanout.{n}.last_max_ms", f"fan-out {n} SSE x {m}: last receiver max ms", r["last_max_ms"]),
            (f"fanout.{n}.delivered", f"fan-out {n} SSE x {m}: delivered", f"{r['delivered']}/{r['expected']}"),
        ]
    relay = results.get("relay")
    if relay is not None:
        if relay.get("status") == "ok":
            rows += [
                ("relay.p50_ms", "relay round trip p50 ms", relay.get("p50_ms")),
                ("relay.p99_ms", "relay round trip p99 ms", relay.get("p99_ms")),
            ]
        else:
            rows.append(("relay.p50_ms", "relay round trip p50 ms", relay.get("status")))
    burst = results.get("relay_burst")
    if burst is not None:
        name = "relay burst"
        if "agents" in burst:
            name += f", {burst['agents']} agents x {burst['per_agent']} requests at once"
        if burst.get("status") == "ok":
            rows += [
                ("relay_burst.p50_ms", f"{name}: p50 ms", burst.get("p50_ms")),
                ("relay_burst.p99_ms", f"{name}: p99 ms", burst.get("p99_ms")),
                ("relay_burst.max_ms", f"{name}: max ms", burst.get("max_ms")),
                ("relay_burst.answered", f"{name}: answered", f"{burst['answered']}/{burst['requests']}"),
                ("relay_burst.failures", f"{name}: error answers", burst["failures"]),
                ("relay_burst.wall_ms", f"{name}: first written to last answered ms", burst.get("wall_ms")),
            ]
            http = burst.get("http", {})
            if http.get("status") == "ok":
                rows += [
                    ("relay_burst.http_p50_ms", f"{name}, same over HTTP: p50 ms", http.get("p50_ms")),
                    (
                        "relay_burst.http_wall_ms",
                        f"{name}, same over HTTP: first sent to last answered ms",
                        http["wall_ms"],
                    ),
                ]
        else:
            rows.append(("relay_burst.p50_ms", f"{name}: p50 ms", burst.get("status")))
    claims = results.get("claims")
    if claims is not None:
        rows += [
            (
                "claims.exactly_one",
                f"claim races ({claims['racers']} clients): exactly one winner",
                f"{sum(w == 1 for w in claims['winners'])}/{claims['races']}",
            ),
            ("claims.p50_ms", "claim race answer p50 ms", claims.get("p50_ms")),
        ]
    idle = results.get("idle")
    if idle is not None:
        c = idle["baseline"]["concurrency"]
        rows.append(("idle.baseline_per_sec", f"POST c={c} posts/s, no idle streams", idle["baseline"]["per_sec"]))
        for kind, r in idle["transports"].items():
            name = names.get(kind, kind)
            if r.get("status") != "ok":
                rows.append((f"idle.{kind}.held", f"idle {name} connections held", r.get("status")))
                continue
            rows += [
                (f"idle.{kind}.held", f"idle {name} connections held", f"{r['held']}/{idle['requested']}"),
                (f"idle.{kind}.per_sec", f"POST c={c} posts/s, {name} streams idle", r["with_idle"]["per_sec"]),
                (f"idle.{kind}.ratio", f"throughput with idle {name} / without", r["ratio"]),
            ]
    names = {"stdio": "stdio", "http": "/mcp"}
    for transport, r in results.get("mcp", {}).items():
        label = f"MCP over {names.get(transport, transport)}"
        if r.get("status") != "ok":
            rows.append((f"mcp.{transport}.rt_p50_ms", f"{label}: DM round trip p50 ms", r.get("status")))
            continue
        rows += [
            (f"mcp.{transport}.rt_p50_ms", f"{label}: DM round trip p50 ms", r["round_trip"].get("p50_ms")),
            (f"mcp.{transport}.rt_p99_ms", f"{label}: DM round trip p99 ms", r["round_trip"].get("p99_ms")),
            (f"mcp.{transport}.sends_per_sec", f"{label}: {r['sends']} DMs in a row, sends/s", r["sends_per_sec"]),
        ]
        if "cpu_ms_per_send" in r:
            rows.append((f"mcp.{transport}.cpu_ms", f"{label}: server CPU ms per send", r["cpu_ms_per_send"]))
    a2a = results.get("a2a")
    if a2a is not None:
        label = "A2A SendMessage, blocking"
        if a2a.get("status") != "ok":
            rows.append(("a2a.p50_ms", f"{label}: p50 ms", a2a.get("status")))
        else:
            rows += [
                ("a2a.p50_ms", f"{label}: p50 ms", a2a.get("p50_ms")),
                ("a2a.p99_ms", f"{label}: p99 ms", a2a.get("p99_ms")),
                ("a2a.n", f"{label}: calls answered", a2a["n"]),
            ]
            if "cpu_ms_per_call" in a2a:
                rows.append(("a2a.cpu_ms", f"{label}: server CPU ms per call", a2a["cpu_ms_per_call"]))
    return rows


def format_value(value: Value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    return str(value)


def format_table(report: dict[str, Any]) -> str:
    rows = metric_rows(report)
    width = max((len(label) for _, label, _ in rows), default=10)
    lines = [f"Arc bench: {report.get('url')} ({report.get('started_at')}, {report.get('elapsed_sec')} s)"]
    lines += [f"  {label:<{width}}  {format_value(value)}" for _, label, value in rows]
    return "\n".join(lines)


def median_value(values: list[Value]) -> Value:
    """The median of numeric runs; a non-numeric figure (``unsupported``, ``20/20``) when all runs agree, else the list."""
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if numbers and len(numbers) == len(values):
        middle = statistics.median(numbers)
        return int(middle) if all(isinstance(v, int) for v in numbers) and middle == int(middle) else round(middle, 3)
    if len(set(map(str, values))) == 1:
        return values[0]
    return " / ".join(map(format_value, values))
