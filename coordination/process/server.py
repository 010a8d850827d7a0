"""Serving a hub: Uvicorn on ``host:port`` with the sweeper, background services and the pidfile (docs/deployment.md).

The site's ``up`` command composes the pieces (the ASGI application, the in-hub relay)
and hands them here; this module knows how a hub process starts, announces itself and
stops, not which doors it serves. ``coordination.process.workers`` runs several of these
processes on one listening socket.

Why Uvicorn (httptools, uvloop) and not Daphne, which ``runserver`` still uses: Daphne
buffers a whole request body before the application sees any of it, so a 413 cannot
come before the body is read (docs/deployment.md), and its Twisted loop costs more CPU per
request (docs/deployment.md, "The server").
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Protocol

from django.conf import settings

from coordination.core import events
from coordination.process import discovery
from coordination.process.sweeper import Sweeper

log = logging.getLogger("arc.up")

# At SIGTERM: streams are told to reconnect at once; other requests get this long to finish.
DRAIN_SEC = 10


class Background(Protocol):
    """A service that runs on the serving loop beside the doors (the relay): ``run()`` until ``stop()``."""

    def run(self) -> Awaitable[None]: ...

    def stop(self) -> None: ...


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``OSError`` when the port is taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def serve(
    application: Any,
    *,
    host: str,
    port: int,
    background: list[Background],
    on_ready: Callable[[str], None],
    access_log: bool = False,
    sock: socket.socket | None = None,
    pidfile: bool = True,
) -> str | None:
    """Serve until SIGINT/SIGTERM; returns the URL it served at, ``None`` if it could not listen.

    ``sock``: an already listening socket (a worker of several shares its supervisor's);
    otherwise one is opened on ``host:port``. Once listening: the pidfile is written
    (``.arc.pid``, Arc's discovery; a supervisor writes its own instead, ``pidfile=False``),
    the event loop is bound for events published from worker threads, the sweeper and
    every background service start, and ``on_ready(url)`` is called. At SIGTERM streams
    are told to reconnect, requests in flight get ``DRAIN_SEC`` to finish, and the pidfile
    is removed.
    """
    import uvicorn

    if sock is None:
        try:
            sock = listen_socket(host, port)
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s", host, port, exc)
            return None
    bound_port = sock.getsockname()[1]
    url = discovery.base_url(host, bound_port)
    sweeper = Sweeper()
    tasks: list[asyncio.Task[None]] = []

    async def ready() -> None:
        events.bind_loop(asyncio.get_running_loop())
        if pidfile:
            discovery.pidfile_write(port=bound_port, url=url)
        sweeper.start()
        tasks.extend(asyncio.ensure_future(service.run()) for service in background)
        on_ready(url)

    async def draining() -> None:
        for service in background:
            service.stop()
        events.dispatcher.drain()  # streams and long-polls answer now: clients reconnect elsewhere
        if tasks:
            await asyncio.wait(tasks, timeout=DRAIN_SEC)

    config = uvicorn.Config(
        application,
        loop="uvloop",
        http=_guarded_protocol(),
        ws="websockets-sansio",
        lifespan="off",
        log_config=None,
        access_log=access_log,
        proxy_headers=False,  # who is calling is the socket's peer (ARC_BEHIND_PROXY is about TLS only)
        server_header=False,
        ws_ping_interval=None,  # the WebSocket door pings at the protocol's own pace (ARC_WS_PING_SEC)
        # A frame a little over the cap gets the door's own too_large error frame; only one
        # past four times the cap is refused unread (close 1009).
        ws_max_size=4 * settings.ARC_MAX_REQUEST_BYTES,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=DRAIN_SEC,
    )
    server = HubServer(config, on_started=ready, on_stopping=draining)
    try:
        server.run(sockets=[sock])
    finally:
        sweeper.stop()
        if pidfile:
            discovery.pidfile_remove(port=bound_port)
    return url


class HubServer:
    """Uvicorn's server with the hub's start and stop steps, and signals that end it cleanly.

    Uvicorn re-raises a captured SIGTERM once it has stopped, which would end the process
    before the pidfile is removed; the hub's handlers only ask it to stop.
    """

    def __init__(
        self,
        config: Any,
        *,
        on_started: Callable[[], Awaitable[None]],
        on_stopping: Callable[[], Awaitable[None]],
    ) -> None:
        import uvicorn

        hooks = self

        class _Server(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets)
                if self.started:
                    await hooks.on_started()

            async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
                for listening in self.servers:
                    listening.close()  # no new connections while the streams wind down
                await hooks.on_stopping()
                await super().shutdown(sockets)

            @contextmanager
            def capture_signals(self) -> Iterator[None]:
                previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
                try:
                    yield
                finally:
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)

            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                if self.should_exit:
                    self.force_exit = True  # a second Ctrl-C: stop waiting for requests
                self.should_exit = True

        self.on_started, self.on_stopping = on_started, on_stopping
        self.server = _Server(config)

    def run(self, sockets: list[socket.socket]) -> None:
        self.server.run(sockets=sockets)


def _guarded_protocol() -> type:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class Guarded(HttpToolsProtocol):
        """httptools with a deadline for the request line and headers (Uvicorn has none).

        Armed when a connection opens and when a request begins; cleared once the headers
        are complete. A client that never finishes them is closed, not waited on.
        """

        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(settings.ARC_HEADER_TIMEOUT_SEC, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                log.info("closed a connection whose request headers took over %ss", settings.ARC_HEADER_TIMEOUT_SEC)
                self.transport.close()

    return Guarded
