"""The hub's edge for the doors that speak ASGI themselves (``/mcp``, ``/a2a``): the same rules as ``/v1``.

Django's middleware (``arcsite.middleware``) is the edge of the REST door; a door mounted beside
Django in the ASGI app (the MCP SDK's transport, the A2A SDK's routes) takes the same steps here,
once per request: who is calling (``access.resolve`` from the ``Authorization`` header and the
socket's peer), the hub's one JSON rule on a POST body before the SDK reads it, refusals as Arc
error envelopes, and ``X-Arc-Instance`` on every answer.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import sync_to_async
from django.conf import settings

from coordination.core import access, hub
from coordination.core.errors import Forbidden
from coordination.core.parsing import json_document

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def headers_of(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def identity_of(scope: Scope) -> access.Identity:
    """Who is calling: a key's agent, a loopback client, or ``ArcError`` (401, 403) as REST answers."""
    headers = headers_of(scope)
    peer = scope.get("client")
    client = peer[0] if peer else None
    authorization = headers.get("authorization")
    if access.needs_database(authorization=authorization, client=client):
        identity: access.Identity = await sync_to_async(access.resolve)(authorization=authorization, client=client)
        return identity
    return access.resolve(authorization=None, client=client)


def check_host(headers: dict[str, str], door: str) -> None:
    """An unkeyed request (which may act as any agent) must be addressed to a loopback name or one of
    ``ARC_ALLOWED_HOSTS``, from such an origin: a web page that rebinds its name to 127.0.0.1 cannot
    drive the door; a keyed request proves itself by its key."""
    allowed = LOOPBACK_HOSTS | {h for h in settings.ALLOWED_HOSTS if h != "*"}
    host = _hostname(headers.get("host", ""))
    if host not in allowed:
        raise Forbidden(f"{door} without an agent key answers requests to a loopback host only, not {host or '(none)'}")
    origin = headers.get("origin")
    if origin and _hostname(urlsplit(origin).netloc) not in allowed:
        raise Forbidden(f"{door} without an agent key refuses requests from the web origin {origin}")


def _hostname(netloc: str) -> str:
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc.split("]", 1)[0] + "]"
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


async def checked_body(scope: Scope, receive: Receive, what: str) -> Receive:
    """A POST's JSON, checked by the hub's one JSON rule before an SDK reads it (same answer as REST).

    The body (already capped by the site's ``BodyLimit``) is read whole and handed on as it came.
    A malformed document, one nested too deep or a number out of range: ``Invalid`` (400) with the
    hub's message. Text inside it (NUL) is the operations' to refuse.
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
        json_document(body, what, text_rule=False)
    return _replay([{"type": "http.request", "body": body, "more_body": False}], receive)


def _replay(first: list[dict[str, Any]], receive: Receive) -> Receive:
    async def replay() -> dict[str, Any]:
        return first.pop(0) if first else await receive()

    return replay


def stamped(send: Send) -> Send:
    """Every answer carries ``X-Arc-Instance``, as the rest of the hub's answers do."""

    async def stamp(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            instance = hub.cached_instance_id() or await sync_to_async(hub.instance_id)()
            message = {**message, "headers": [*message.get("headers", []), (b"x-arc-instance", instance.encode())]}
        await send(message)

    return stamp


async def refuse(send: Send, status: int, message: str) -> None:
    """An Arc error envelope, as REST answers it (with ``WWW-Authenticate`` on a 401)."""
    body = json.dumps({"ok": False, "error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="arc"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
