"""``/mcp``: the MCP tools over streamable HTTP, inside the hub's ASGI app (docs/mcp.md).

Who is calling is decided here, once per request, by the REST edge's rules
(``coordination.core.access.resolve``): a Bearer agent key acts as its agent (401 for a
bad, revoked or expired key); a loopback client without a key, under
``ARC_AUTH=loopback-open``, names its agent with ``?agent=NAME`` (or an
``X-Arc-Agent`` header); a remote client needs a key and is refused (403) while
remote access is off. ``?capabilities=a,b`` (or ``X-Arc-Capabilities``) are declared
when the agent's session is opened. Refusals are Arc error envelopes, as on ``/v1``.

The SDK's transport runs stateless (``stateless_http=True``): no session lives in a
worker, so any hub process can answer any request. Its session manager normally
starts in the ASGI lifespan, which Daphne never sends, so it is started on the first
request (again if the event loop changed) and stopped when Twisted's reactor shuts
down. The SDK's own DNS-rebinding check is replaced by one that applies where it
matters: an unkeyed request (which may act as any agent) must name a loopback host or
one of ``ARC_ALLOWED_HOSTS``, so a web page that rebinds its name to 127.0.0.1
cannot drive the tools; a keyed request proves itself by its key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from asgiref.sync import sync_to_async
from django.conf import settings

from coordination.core import access, hub
from coordination.core.errors import ArcError, Forbidden, Invalid
from coordination.core.parsing import json_document, reject_nul

log = logging.getLogger("arc.mcp")

PATH = "/mcp"
SCOPE_KEY = "arc.mcp"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

Scope = dict[str, Any]


@dataclass(frozen=True)
class Caller:
    identity: access.Identity
    agent_id: str
    capabilities: list[str]


class McpEndpoint:
    """ASGI app for ``/mcp``: resolve the caller, then hand the request to the SDK's transport."""

    def __init__(self) -> None:
        self._apps: dict[str, Any] = {}  # tool set → the SDK's app serving it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        send = _stamped(send)
        try:
            caller = await _caller(scope)
            tools = _tool_set(scope)
            receive = await _checked_body(scope, receive)
        except ArcError as exc:
            await _refuse(send, getattr(exc, "status", 400), exc.message)
            return
        app = await self._running(tools)
        await app({**scope, SCOPE_KEY: caller}, receive, send)

    async def _running(self, tools: Literal["core", "all"]) -> Any:
        loop = asyncio.get_running_loop()
        if tools in self._apps and self._loop is loop:
            return self._apps[tools]
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop, self._apps = asyncio.Lock(), loop, {}
        async with self._lock:
            if tools not in self._apps:
                self._apps[tools] = await self._start(loop, tools)
        return self._apps[tools]

    async def _start(self, loop: asyncio.AbstractEventLoop, tools: Literal["core", "all"]) -> Any:
        from mcpserver import sdk  # the SDK's import takes a second: only once /mcp is used

        server, app = sdk.tool_server(tools)
        started, stop = asyncio.Event(), asyncio.Event()

        async def run() -> None:
            async with server.session_manager.run():
                started.set()
                await stop.wait()

        task = loop.create_task(run())
        task.add_done_callback(_log_failure)
        await started.wait()
        _on_reactor_shutdown(lambda: loop.call_soon_threadsafe(stop.set))
        return app


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the MCP session manager stopped", exc_info=task.exception())


def _on_reactor_shutdown(callback: Any) -> None:
    """Stop the session manager with Daphne (Twisted), which would otherwise wait on it at SIGTERM."""
    if "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import reactor

    reactor.addSystemEventTrigger("before", "shutdown", callback)  # type: ignore[arg-type]  # (zope interface stubs)


async def _caller(scope: Scope) -> Caller:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    peer = scope.get("client")
    client = peer[0] if peer else None
    authorization = headers.get("authorization")
    if access.needs_database(authorization=authorization, client=client):
        identity = await sync_to_async(access.resolve)(authorization=authorization, client=client)
    else:
        identity = access.resolve(authorization=None, client=client)
    if identity.key_id is None:
        _check_host(headers)
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    named = (query.get("agent") or [headers.get("x-arc-agent", "")])[-1].strip()
    raw_caps = (query.get("capabilities") or [headers.get("x-arc-capabilities", "")])[-1]
    reject_nul([named, raw_caps], "the agent and capabilities")  # before any session is opened for them
    agent_id = identity.act_as(named or None, "agent")
    if not agent_id:
        raise Invalid(f"name the agent: {PATH}?agent=NAME (or an X-Arc-Agent header), or send an agent key")
    capabilities = [c.strip() for c in raw_caps.split(",") if c.strip()]
    return Caller(identity=identity, agent_id=str(agent_id), capabilities=capabilities)


async def _checked_body(scope: Scope, receive: Any) -> Any:
    """A POST's JSON, checked by the hub's one JSON rule before the SDK reads it (same answer as REST).

    The body (already capped by the site's ``BodyLimit``) is read whole and handed on as
    it came. A malformed document, one nested too deep or a number out of range: 400 with
    the hub's message. Text in tool arguments (NUL) is the tools' to refuse, as tool errors.
    """
    if scope.get("method") != "POST":
        return receive
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return _replay([message], receive)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    if body:
        json_document(body, "the JSON-RPC message", text_rule=False)
    return _replay([{"type": "http.request", "body": body, "more_body": False}], receive)


def _replay(first: list[dict[str, Any]], receive: Any) -> Any:
    async def replay() -> dict[str, Any]:
        return first.pop(0) if first else await receive()

    return replay


def _tool_set(scope: Scope) -> Literal["core", "all"]:
    """``?tools=core`` lists the small core set (as ``manage.py mcp --tools core``); ``all`` is the default."""
    chosen = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("tools") or ["all"])[-1]
    if chosen not in ("core", "all"):
        raise Invalid(f"tools must be core or all, not {chosen[:40]}")
    return "core" if chosen == "core" else "all"


def _check_host(headers: dict[str, str]) -> None:
    """An unkeyed request must be addressed to a loopback name (or a configured host), from such an origin."""
    allowed = LOOPBACK_HOSTS | {h for h in settings.ALLOWED_HOSTS if h != "*"}
    host = _hostname(headers.get("host", ""))
    if host not in allowed:
        raise Forbidden(f"{PATH} without an agent key answers requests to a loopback host only, not {host or '(none)'}")
    origin = headers.get("origin")
    if origin and _hostname(urlsplit(origin).netloc) not in allowed:
        raise Forbidden(f"{PATH} without an agent key refuses requests from the web origin {origin}")


def _hostname(netloc: str) -> str:
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc.split("]", 1)[0] + "]"
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def _stamped(send: Any) -> Any:
    """Every answer carries ``X-Arc-Instance``, as the rest of the hub's answers do."""

    async def stamped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            instance = hub.cached_instance_id() or await sync_to_async(hub.instance_id)()
            message = {**message, "headers": [*message.get("headers", []), (b"x-arc-instance", instance.encode())]}
        await send(message)

    return stamped


async def _refuse(send: Any, status: int, message: str) -> None:
    body = json.dumps({"ok": False, "error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="arc"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def mount(app: Any) -> Any:
    """``app`` with ``/mcp`` (and ``/mcp/...``) answered by the MCP endpoint."""
    endpoint = McpEndpoint()

    async def router(scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == PATH or path.startswith(PATH + "/")):
            await endpoint(scope, receive, send)
        else:
            await app(scope, receive, send)

    return router
