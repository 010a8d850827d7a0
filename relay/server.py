"""The file-spool relay for sandboxed agents (docs/relay.md): Arc's spool, served concurrently.

``RelayServer`` watches ``<spool>/requests`` and hands every request it takes to a
``Forwarder`` as its own asyncio task, so a slow request (a long-poll over the relay)
holds up nothing else. The forwarder is where the hub's rules come from:

- ``AsgiForwarder`` (the relay inside ``manage.py up``): calls the hub's own ASGI
  application in process, as a loopback client — the same edge middleware, views,
  validation and access rules as HTTP, without a network hop;
- ``HttpForwarder`` (``manage.py relay`` on its own): sends the request to the hub's URL.

A request carrying ``"key"`` is sent with ``Authorization: Bearer <key>``; one without
acts under the loopback rules (``ARC_AUTH``). Bad request files (not JSON, not an
object, too large, a path outside ``/v1``) get an error response file; a handler that
fails gets a 500 response file; nothing stops the relay.

Arc's relay scans every 250 ms and serves one request at a time. This one looks every
few milliseconds while requests keep coming (``ACTIVE_POLL_SEC``) and every
``IDLE_POLL_SEC`` otherwise; a look is one directory listing plus a ``stat`` per agent
directory (``Spool.take_new`` lists an agent's directory only when it changed). Spool
file operations run on the event loop: on a local spool each takes microseconds, less
than a hop to a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from coordination.core.errors import Invalid
from coordination.core.parsing import json_object
from relay.spool import Spool, Ticket, error_envelope, iso_now

log = logging.getLogger("arc.relay")

ACTIVE_POLL_SEC = 0.002
IDLE_POLL_SEC = 0.02
ACTIVE_WINDOW_SEC = 2.0
MAX_CONCURRENT = 256
# Requests that answer at once are served a few at a time, in the order taken: the hub
# does their work on one thread anyway, and interleaving a hundred of them would make
# every one wait for all. Requests that may wait (long-polls, waiting for peers, asks)
# bypass this, so they never hold up the quick ones.
QUICK_LANE = 8
# Longest a relayed request may take: the longest wait the hub allows (``POST /v1/ask``, 300 s) plus slack.
REQUEST_TIMEOUT_SEC = 330.0
NOT_RELAYED = ("/v1/stream", "/v1/ws")  # streams cannot pass through files: use /v1/events?timeout=
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


@dataclass(frozen=True)
class RelayRequest:
    request_id: str
    method: str
    path: str
    query: str
    body: bytes | None
    key: str | None
    idempotency_key: str | None = None

    @property
    def may_wait(self) -> bool:
        """Can the hub hold this request open (a long-poll, ``wait_for``, ``/v1/ask``)?"""
        if self.path in ("/v1/ask",) or self.path.endswith("/replies"):
            return True
        params = parse_qs(self.query)
        return any(params.get(name, ["0"])[-1] not in ("", "0", "0.0") for name in ("timeout", "wait_for"))


class BadRequest(ValueError):
    pass


def parse_request(raw: bytes, *, fallback_request_id: str) -> RelayRequest:
    """Validate a request envelope as Arc does (``_validate_request_envelope``), plus ``key`` and a ``/v1/`` path."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request file is not UTF-8: {exc}") from exc
    try:
        payload = json_object(text, "the request envelope")  # the hub's one JSON rule (numbers, NUL, ...)
    except Invalid as exc:
        raise BadRequest(f"request file is not valid JSON: {exc.message}") from exc
    if not text.strip():
        raise BadRequest("request envelope must be a JSON object")
    request_id = str(payload.get("request_id") or fallback_request_id).strip()[:200] or fallback_request_id
    method = payload.get("method")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise BadRequest(f"request envelope needs a method (one of {', '.join(sorted(METHODS))})")
    path = payload.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise BadRequest("request path must be a string starting with '/'")
    if "\x00" in path or any(ord(ch) < 32 for ch in path):
        raise BadRequest("request path must not contain control characters")
    parts = urlsplit(path)
    if not parts.path.startswith("/v1/"):
        raise BadRequest("the relay serves the /v1 API only; path must start with /v1/")
    if parts.path.rstrip("/") in NOT_RELAYED:
        raise BadRequest(f"{parts.path} streams; over the relay use GET /v1/events?timeout= (a long-poll)")
    body = payload.get("body")
    if body is not None and not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object when provided")
    key = payload.get("key")
    if key is not None and (not isinstance(key, str) or not key.isprintable() or len(key) > 500):
        raise BadRequest("key must be an agent key string")
    retry_key = payload.get("idempotency_key")
    if retry_key is not None and (
        not isinstance(retry_key, str) or not retry_key.isprintable() or len(retry_key) > 200
    ):
        raise BadRequest("idempotency_key must be 1 to 200 printable characters")
    return RelayRequest(
        request_id=request_id,
        method=method.upper(),
        path=parts.path,
        query=parts.query,
        body=json.dumps(body).encode("utf-8") if body is not None else None,
        key=key or None,
        idempotency_key=retry_key or None,
    )


# ── Forwarders: where a request gets the hub's answer ───────────────────────

Forwarder = Callable[[RelayRequest, float], Awaitable[tuple[int, bytes]]]


class AsgiForwarder:
    """Serve a request with the hub's ASGI application in this process, as a loopback client."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, request: RelayRequest, timeout: float) -> tuple[int, bytes]:
        headers = [(b"host", b"127.0.0.1"), (b"user-agent", b"arc-relay")]
        if request.body is not None:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(request.body)).encode())]
        if request.key:
            headers.append((b"authorization", f"Bearer {request.key}".encode()))
        if request.idempotency_key:
            headers.append((b"idempotency-key", request.idempotency_key.encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": "http",
            "path": unquote(request.path),  # ASGI paths are decoded; raw_path keeps the bytes sent
            "raw_path": request.path.encode("utf-8", "surrogateescape"),
            "query_string": request.query.encode("latin-1", "replace"),
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 0),
        }
        sent_body = False
        finished = asyncio.Event()
        status = 500
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": request.body or b"", "more_body": False}
            await finished.wait()  # the "client" stays until the answer is complete
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    finished.set()

        try:
            await asyncio.wait_for(self.app(scope, receive, send), timeout)
        finally:
            finished.set()
        return status, b"".join(chunks)


class HttpForwarder:
    """Send a request to a hub's URL (``manage.py relay`` running beside a hub)."""

    def __init__(self, base_url: str, threads: int = 64) -> None:
        self.base_url = base_url.rstrip("/")
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="arc-relay-http")
        self._local = threading.local()

    async def __call__(self, request: RelayRequest, timeout: float) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._send, request, timeout)

    def _send(self, request: RelayRequest, timeout: float) -> tuple[int, bytes]:
        import requests

        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        headers = {"Content-Type": "application/json"} if request.body is not None else {}
        if request.key:
            headers["Authorization"] = f"Bearer {request.key}"
        if request.idempotency_key:
            headers["Idempotency-Key"] = request.idempotency_key
        url = self.base_url + request.path + (f"?{request.query}" if request.query else "")
        try:
            response = session.request(request.method, url, data=request.body, headers=headers, timeout=timeout)
        except requests.RequestException as exc:
            message = json.dumps(
                {"ok": False, "error": f"connection error: cannot reach the hub at {self.base_url}: {exc}"}
            )
            return 599, message.encode()
        return response.status_code, response.content

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# ── The relay ──────────────────────────────────────────────────────────────


class RelayServer:
    def __init__(
        self,
        spool_dir: Path,
        forward: Forwarder,
        *,
        max_request_bytes: int,
        request_timeout: float = REQUEST_TIMEOUT_SEC,
    ) -> None:
        self.spool = Spool(spool_dir)
        self.forward = forward
        self.max_request_bytes = max_request_bytes
        self.request_timeout = request_timeout
        self.served = 0
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        self._quick = asyncio.Semaphore(QUICK_LANE)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Serve until ``stop()``; requests in flight then get a few seconds to finish."""
        await asyncio.to_thread(self.spool.ensure)
        last_seen = 0.0
        while not self._stop.is_set():
            try:
                taken = self._take_batch()  # a few stat calls: cheaper than a thread hop
            except Exception:  # a spool that cannot be read now may be readable next time
                log.exception("relay: could not scan %s", self.spool.requests)
                taken = []
            for ticket in taken:
                await self._slots.acquire()
                task = asyncio.get_running_loop().create_task(self._serve(ticket))
                self._tasks.add(task)
                task.add_done_callback(self._done)
            now = time.monotonic()
            if taken:
                last_seen = now
            pause = ACTIVE_POLL_SEC if now - last_seen < ACTIVE_WINDOW_SEC else IDLE_POLL_SEC
            await asyncio.sleep(pause)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    def _take_batch(self) -> list[Ticket]:
        return list(self.spool.take_new())

    async def _serve(self, ticket: Ticket) -> None:
        """Answer one request; whatever happens, its agent gets a response file (or the failure is logged)."""
        try:
            response = await self._answer(ticket)
        except Exception as exc:  # one request's failure is that request's 500, never the relay's
            log.exception("relay: request %s/%s failed", ticket.agent_dir, ticket.request_id)
            response = error_envelope(ticket.request_id, 500, f"relay failed to serve the request: {exc}")
        try:
            self.spool.respond(ticket, response)
            self.served += 1
        except Exception:
            log.exception("relay: could not write the response to %s/%s", ticket.agent_dir, ticket.request_id)

    async def _answer(self, ticket: Ticket) -> dict[str, Any]:
        if ticket.refusal is not None:
            log.warning("relay: refused request %s/%s: %s", ticket.agent_dir, ticket.request_id, ticket.refusal)
            return error_envelope(ticket.request_id, 400, f"invalid relay request: {ticket.refusal}")
        try:
            raw = self.spool.read(ticket, self.max_request_bytes)
        except OverflowError as exc:
            return error_envelope(ticket.request_id, 413, f"invalid relay request: {exc}")
        except (OSError, ValueError) as exc:
            return error_envelope(ticket.request_id, 400, f"invalid relay request: {exc}")
        try:
            request = parse_request(raw, fallback_request_id=ticket.request_id)
        except BadRequest as exc:
            return error_envelope(ticket.request_id, 400, f"invalid relay request: {exc}")
        try:
            if request.may_wait:
                status, content = await self.forward(request, self.request_timeout)
            else:
                async with self._quick:
                    status, content = await self.forward(request, self.request_timeout)
        except TimeoutError:
            return error_envelope(request.request_id, 504, f"the hub did not answer within {self.request_timeout:g}s")
        return response_envelope(request.request_id, status, content)


def response_envelope(request_id: str, status: int, content: bytes) -> dict[str, Any]:
    """Arc's response envelope: the hub's JSON answer under ``body``, its ``ok`` and ``error`` lifted up."""
    try:
        body: Any = json.loads(content.decode("utf-8")) if content else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = content.decode("utf-8", "replace")
    ok = bool(body.get("ok", False)) if isinstance(body, dict) else 200 <= status < 300
    payload: dict[str, Any] = {
        "request_id": request_id,
        "ok": ok,
        "status": status,
        "body": body,
        "completed_at": iso_now(),
    }
    error = body.get("error") if isinstance(body, dict) else (None if ok else str(body))
    if isinstance(error, str) and error:
        payload["error"] = error
    return payload
