"""Serving a hub: Daphne on ``host:port`` with the sweeper, background services and the pidfile (docs/deployment.md).

The site's ``up`` command composes the pieces (the ASGI application, the in-hub relay)
and hands them here; this module knows how a hub process starts, announces itself and
stops, not which doors it serves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from coordination.core import events
from coordination.process import discovery
from coordination.process.sweeper import Sweeper

log = logging.getLogger("arc.up")


class Background(Protocol):
    """A service that runs on the serving loop beside the doors (the relay): ``run()`` until ``stop()``."""

    def run(self) -> Awaitable[None]: ...

    def stop(self) -> None: ...


def serve(
    application: Any,
    *,
    host: str,
    port: int,
    background: list[Background],
    on_ready: Callable[[str], None],
    access_log: bool = False,
) -> str | None:
    """Serve until SIGINT/SIGTERM; returns the URL it served at, ``None`` if it could not listen.

    Once listening: the pidfile is written (``.arc.pid``, Arc's discovery), the event loop
    is bound for events published from worker threads, the sweeper and every background
    service start, and ``on_ready(url)`` is called. On the way out they stop and the
    pidfile is removed.
    """
    from daphne.endpoints import build_endpoint_description_strings
    from daphne.server import Server

    sweeper = Sweeper()
    bound: dict[str, Any] = {}

    def ready() -> None:
        if not server.listening_addresses:
            return
        bound["port"] = server.listening_addresses[0][1]
        bound["url"] = discovery.base_url(host, bound["port"])
        discovery.pidfile_write(port=bound["port"], url=bound["url"])
        events.bind_loop(asyncio.get_event_loop())  # Daphne set the reactor's loop as current
        sweeper.start()
        bound["tasks"] = [asyncio.ensure_future(service.run()) for service in background]
        on_ready(bound["url"])

    server = Server(
        application=application,
        endpoints=build_endpoint_description_strings(host=host, port=port),
        signal_handlers=True,
        action_logger=_access_log if access_log else None,
        http_timeout=None,
        websocket_timeout=-1,  # sockets live until the client leaves or goes idle (coordination.ws)
        verbosity=0,
        ready_callable=ready,
    )
    try:
        server.run()
    finally:
        for service in background:
            service.stop()
        _finish_pending_tasks()
        if "port" in bound:
            sweeper.stop()
            discovery.pidfile_remove(port=bound["port"])
    return bound.get("url")


def _finish_pending_tasks(timeout: float = 5.0) -> None:
    """Let requests still waiting at shutdown (long-polls, streams) unwind on the loop.

    Daphne cancels them but stops the reactor without running the loop again, so
    their coroutines would be finalised at interpreter exit, after the loop is gone:
    measured here as a segmentation fault on SIGTERM whenever a client was waiting.
    """
    loop = asyncio.get_event_loop()
    if loop.is_closed():
        return
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.wait(pending, timeout=timeout))
    loop.run_until_complete(loop.shutdown_asyncgens())


def _access_log(protocol: str, action: str, details: dict[str, Any]) -> None:
    if protocol == "http" and action == "complete":
        log.info("%s %s %s", details.get("method"), details.get("path"), details.get("status"))
