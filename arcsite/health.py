"""``/healthz`` and ``/readyz``: for a load balancer or supervisor in front of the hub's workers (docs/deployment.md).

``/healthz`` says this process serves, touching nothing else (a hub whose database is down
is alive, and restarting it would not help). ``/readyz`` says whether it can do its work:
the database answers a query and the channel layer (Redis across workers) a round trip; 503
naming what failed otherwise, so a balancer sends agents to another hub.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse

from coordination.api.envelope import error

CHECK_TIMEOUT_SEC = 2.0


async def healthz(request: HttpRequest) -> JsonResponse:
    if request.method not in ("GET", "HEAD"):
        return _get_only(request)
    return JsonResponse({"ok": True, "result": {"status": "alive", "pid": os.getpid()}})


async def readyz(request: HttpRequest) -> JsonResponse:
    if request.method not in ("GET", "HEAD"):
        return _get_only(request)
    checks = {"database": await sync_to_async(_database)(), "channel_layer": await _channel_layer()}
    ready = all(value == "ok" for value in checks.values())
    body = {"ok": ready, "result": {"status": "ready" if ready else "not ready", "pid": os.getpid(), **checks}}
    if not ready:
        body["error"] = "not ready: " + ", ".join(f"{name} {value}" for name, value in checks.items() if value != "ok")
    return JsonResponse(body, status=200 if ready else 503)


def _get_only(request: HttpRequest) -> JsonResponse:
    response = error(f"{request.path} answers GET only, not {request.method}", 405)
    response["Allow"] = "GET, HEAD"
    return response


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return f"unavailable ({type(exc).__name__})"
    return "ok"


_probe: tuple[Any, Any] | None = None  # (the event loop, the layer instance the probe uses on it)


def _probe_layer() -> Any:
    """A layer instance of the probe's own (one per process and loop), so that another receiver in this
    process (the event dispatcher, waiting on Redis) cannot hold the probe's answer back: channels_redis
    serves one instance's receivers through one blocking pop, which a new channel's first message can
    wait a whole pop timeout (5 s) for."""
    import asyncio

    from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

    global _probe
    loop = asyncio.get_running_loop()
    if _probe is None or _probe[0] is not loop:
        if get_channel_layer() is None:
            return None
        _probe = (loop, channel_layers.make_backend(DEFAULT_CHANNEL_LAYER))
    return _probe[1]


async def _channel_layer() -> str:
    """A message to a fresh channel of our own and back: the layer carries events."""
    import asyncio

    layer = _probe_layer()
    if layer is None:
        return "unavailable (none configured)"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SEC):
            channel = await layer.new_channel("arc.ready.")
            probe = uuid.uuid4().hex
            await layer.send(channel, {"type": "arc.ready", "probe": probe})
            answer = await layer.receive(channel)
    except Exception as exc:  # noqa: BLE001  (any failure of the layer means: not ready, and says which)
        return f"unavailable ({type(exc).__name__})"
    return "ok" if answer.get("probe") == probe else "unavailable (wrong answer)"
