"""This process's share of the hub's one-at-a-time jobs (``coordination.core.services.duties``).

Every worker runs the sweeper's loop and offers to serve the relay; only the holder of a
duty does its work. ``HOLDER`` names this process (host, pid, a nonce); a holder on this
machine whose pid is gone is known dead, so a restarted hub takes its duties at once
instead of waiting out the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from asgiref.sync import sync_to_async
from django.db import DatabaseError

from coordination.core import services

if TYPE_CHECKING:
    from coordination.process.server import Background

log = logging.getLogger("arc.duty")

HOSTNAME = socket.gethostname()
HOLDER = f"{HOSTNAME}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_gone(holder: str) -> bool:
    """Is ``holder`` a process of this machine that no longer runs?"""
    parts = holder.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != HOSTNAME or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists (another user's)
    return False


def hold(name: str, *, ttl_sec: float) -> bool:
    return services.duty_hold(name, HOLDER, ttl_sec=ttl_sec, is_gone=holder_gone)


def release(name: str) -> None:
    services.duty_release(name, HOLDER)


def relay_duty(spool_dir: object) -> str:
    """The duty of serving one spool directory (its path, hashed when too long for the key)."""
    path = str(spool_dir)
    return f"relay:{path}" if len(path) <= 250 else f"relay:sha256:{hashlib.sha256(path.encode()).hexdigest()}"


class OnDuty:
    """Run a background service (the relay) only while this process holds ``name``.

    Checked every ``ttl_sec / 3`` seconds on the serving loop; the service is made afresh by
    ``make()`` each time the duty is taken, and stopped when it is lost or the process stops
    (then the duty is released, so another worker takes it at its next check).
    """

    def __init__(self, name: str, make: Callable[[], Background], *, ttl_sec: float = 10.0) -> None:
        self.name, self.make, self.ttl_sec = name, make, ttl_sec
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        service: Background | None = None
        task: asyncio.Future[None] | None = None
        try:
            while not self._stop.is_set():
                try:
                    held = await sync_to_async(hold)(self.name, ttl_sec=self.ttl_sec)
                except Exception:
                    log.exception("could not check duty %s; trying again", self.name)
                    held = service is not None  # keep what we had until the database answers
                if held and service is None:
                    log.info("took duty %s", self.name)
                    service = self.make()
                    task = asyncio.ensure_future(service.run())
                elif not held and service is not None:
                    log.info("lost duty %s to another process", self.name)
                    await _stopped(service, task)
                    service = task = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.ttl_sec / 3)
        finally:
            if service is not None:
                await _stopped(service, task)
                try:
                    await sync_to_async(release)(self.name)
                except DatabaseError:
                    log.warning("could not release duty %s (it expires by itself)", self.name)


async def _stopped(service: Background, task: asyncio.Future[None] | None) -> None:
    service.stop()
    if task is not None:
        await asyncio.wait([task], timeout=10)
