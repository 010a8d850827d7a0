"""The site's edge: what every HTTP request passes before any view (docs/architecture.md).

``BodyLimit`` is ASGI middleware around the whole app: it answers 413 from the
``Content-Length`` header (or as soon as a chunked body passes the cap) without
reading the rest. ``ArcEdgeMiddleware`` is Django middleware: it refuses
non-loopback clients while remote access is off and stamps ``X-Arc-Instance``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from coordination.api import envelope
from coordination.core import access, hub, services
from coordination.core.errors import ArcError, Forbidden
from coordination.core.parsing import reject_nul

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyLimit:
    """Reject request bodies over ``ARC_MAX_REQUEST_BYTES`` with 413, reading no more than the cap;
    and bodies that take longer than ``ARC_BODY_TIMEOUT_SEC`` to arrive with 408.

    A declared ``Content-Length`` over the cap is answered before any of the body is read; a
    chunked body as soon as it passes the cap. Either way the connection is closed after the
    answer, so the rest is never read. (Under Daphne, which buffers whole bodies first, the
    declared case still answers without the app reading it, but only once Daphne has it.)
    """

    def __init__(self, app: Any, limit: int | None = None, timeout: float | None = None) -> None:
        self.app = app
        self.limit = limit if limit is not None else settings.ARC_MAX_REQUEST_BYTES
        self.timeout = timeout if timeout is not None else settings.ARC_BODY_TIMEOUT_SEC

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            await _reply(send, 400, "Content-Length must be a non-negative integer")
            return
        if declared is not None and declared > self.limit:
            await _reply(send, 413, f"request body exceeds max size ({self.limit} bytes)")
            return
        seen = 0
        refusal: tuple[int, str] | None = None
        body_done = False
        deadline = asyncio.get_running_loop().time() + self.timeout

        async def guarded_receive() -> dict[str, Any]:
            nonlocal seen, refusal, body_done
            if body_done:
                return await receive()  # (Django waiting for the client to leave, during a stream)
            try:
                async with asyncio.timeout_at(deadline):  # (no task per call, unlike wait_for)
                    message = await receive()
            except TimeoutError:
                refusal = (408, f"request body not received within {self.timeout:g}s")
                return {"type": "http.disconnect"}  # the app stops reading; we answer
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if seen > self.limit:
                    refusal = (413, f"request body exceeds max size ({self.limit} bytes)")
                    return {"type": "http.disconnect"}
            return message

        started = False

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            if refusal is not None and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, guarded_receive, tracked_send)
        if refusal is not None and not started:
            await _reply(send, *refusal)


def _content_length(scope: Scope) -> int | None:
    """The declared body length; ``None`` when absent, ``-1`` when not a valid number."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1
            return length if length >= 0 else -1
    return None


async def _reply(send: Send, status: int, message: str) -> None:
    body = json.dumps({"ok": False, "error": message}).encode()
    # Refusals answered here never reach ArcEdgeMiddleware, so they stamp the instance themselves.
    instance = hub.cached_instance_id() or await sync_to_async(hub.instance_id)()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-arc-instance", instance.encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ArcEdgeMiddleware:
    """Who is calling, and the hub's stamp on every response.

    On ``/v1/`` it resolves the request's ``Identity`` (agent key, loopback rules,
    remote access; see ``coordination.core.access``) and answers 401/403 itself when that
    fails; elsewhere (dashboard, admin) it only refuses remote clients while remote
    access is off. Every response gets ``X-Arc-Instance``.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        refusal = self._identify(request)
        response = refusal or self.get_response(request)
        return _stamp(response, hub.instance_id())

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        if _needs_database(request):
            refusal = await sync_to_async(self._identify)(request)
        else:
            refusal = self._identify(request)
        response: HttpResponse = refusal or await self.get_response(request)
        return _stamp(response, hub.cached_instance_id() or await sync_to_async(hub.instance_id)())

    @staticmethod
    def _identify(request: HttpRequest) -> HttpResponse | None:
        client = request.META.get("REMOTE_ADDR")
        try:
            # Every path: the dashboard looks rooms and threads up by them too.
            reject_nul([request.path, list(request.GET.lists())], "the path and query string")
            if request.path.startswith("/v1/"):
                access.attach(
                    request, access.resolve(authorization=request.headers.get("Authorization"), client=client)
                )
            elif not access.is_loopback(client) and not services.remote_allowed():
                raise Forbidden("remote access is off: this hub serves loopback clients only")
        except ArcError as exc:
            return envelope.from_exception(exc)
        return None


def _needs_database(request: HttpRequest) -> bool:
    return access.needs_database(
        authorization=request.headers.get("Authorization"), client=request.META.get("REMOTE_ADDR")
    )


def _stamp(response: HttpResponse, instance: str) -> HttpResponse:
    response["X-Arc-Instance"] = instance
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response
