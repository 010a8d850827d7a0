"""The hub's housekeeping loop, run inside every serving process (no cron).

It expires stale sessions (releasing their claims and locks with recovery
notices), tells holders whose claims, locks and delivery leases ran out, expires
deliveries past their ttl, times out overdue tasks (telling their requesters) and forgets
idempotency records past their retention,
every 5 s (sooner when ``ARC_PRESENCE_TTL_SEC`` is small). Every worker process runs the loop; only
the holder of the ``sweeper`` duty sweeps (``coordination.process.duty``), and another takes over
within three intervals when it dies. Every step is also a conditional update, so even two
sweepers on one database would never do the same work twice.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from coordination.core import idempotency, services
from coordination.process import duty

log = logging.getLogger("arc.sweeper")

DUTY = "sweeper"


class Sweeper:
    def __init__(self, interval_sec: float | None = None) -> None:
        # Every few seconds: expiry notices should reach holders soon after the fact.
        self.interval_sec = interval_sec or max(1.0, min(5.0, settings.ARC_PRESENCE_TTL_SEC / 3))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arc-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def sweep_once(self) -> None:
        services.sessions_prune_expired()
        services.leases_tell_expired()
        services.deliveries_settle()
        services.tasks_time_out()
        idempotency.records_expire()

    def _run(self) -> None:
        held = False
        while not self._stop.wait(self.interval_sec):
            try:
                close_old_connections()
                was, held = held, duty.hold(DUTY, ttl_sec=self.interval_sec * 3)
                if held != was:
                    log.info("%s the sweeper duty", "took" if held else "lost")
                if held:
                    self.sweep_once()
            except Exception:  # housekeeping must outlive one bad tick (logged)
                log.exception("sweep failed; retrying next tick")
        if held:
            try:
                duty.release(DUTY)
            except DatabaseError:
                log.warning("could not release the sweeper duty (it expires by itself)")
        connection.close()
