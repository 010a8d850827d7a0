"""``/mcp``: the MCP tools over streamable HTTP, inside the hub's ASGI app (docs/mcp.md).

Who is calling is decided here, once per request, by the REST edge's rules
(``coordination.core.access.resolve``): a Bearer agent key acts as its agent (401 for a
bad, revoked or expired key); a loopback client without a key, under
``ARC_AUTH=loopback-open``, names its agent with ``?agent=NAME`` (or an
``X-Arc-Agent`` header); a remote client needs a key and is refused (403) while
remote access is off. ``?capabilities=a,b`` (or ``X-Arc-Capabilities``) are declared
when the agent's session is opened. Refusals are Arc error envelopes, as on ``/v1``.

The edge steps are the core's (``coordination.core.edge``), shared with ``/a2a``.

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
import logging
import sys
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

from coordination.core import access, edge
from coordination.core.errors import ArcError, Invalid
from coordination.core.parsing import reject_nul

log = logging.getLogger("arc.mcp")

PATH = "/mcp"
SCOPE_KEY = "arc.mcp"

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
        send = edge.stamped(send)
        try:
            caller = await _caller(scope)
            tools = _tool_set(scope)
            receive = await edge.checked_body(scope, receive, "the JSON-RPC message")
        except ArcError as exc:
            await edge.refuse(send, getattr(exc, "status", 400), exc.message)
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
    headers = edge.headers_of(scope)
    identity = await edge.identity_of(scope)
    if identity.key_id is None:
        edge.check_host(headers, PATH)
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    named = (query.get("agent") or [headers.get("x-arc-agent", "")])[-1].strip()
    raw_caps = (query.get("capabilities") or [headers.get("x-arc-capabilities", "")])[-1]
    reject_nul([named, raw_caps], "the agent and capabilities")  # before any session is opened for them
    agent_id = identity.act_as(named or None, "agent")
    if not agent_id:
        raise Invalid(f"name the agent: {PATH}?agent=NAME (or an X-Arc-Agent header), or send an agent key")
    capabilities = [c.strip() for c in raw_caps.split(",") if c.strip()]
    return Caller(identity=identity, agent_id=str(agent_id), capabilities=capabilities)


def _tool_set(scope: Scope) -> Literal["core", "all"]:
    """``?tools=core`` lists the small core set (as ``manage.py mcp --tools core``); ``all`` is the default."""
    chosen = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("tools") or ["all"])[-1]
    if chosen not in ("core", "all"):
        raise Invalid(f"tools must be core or all, not {chosen[:40]}")
    return "core" if chosen == "core" else "all"


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
