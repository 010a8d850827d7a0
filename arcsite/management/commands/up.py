"""``manage.py up``: the composition root that starts a hub (docs/architecture.md).

It puts the doors together (the site's ASGI application, the in-hub relay over it) and
serves them with ``coordination.process.server``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from coordination.core import access, hub, services
from coordination.process import discovery, duty, server, signin, workers
from coordination.process.cli import add_location_arguments
from coordination.process.storage import storage_ready
from gateway.bridge import Bridge
from gateway.push import Pusher
from relay.server import AsgiForwarder, RelayServer


class Command(BaseCommand):
    help = (
        "Run the hub in the foreground: create ARC_HOME, apply migrations, serve REST, long-poll, SSE and "
        "WebSocket on --host:--port (default 127.0.0.1:6969), serve the file-spool relay for sandboxed "
        "agents on --spool-dir (default ./.arc-relay; --no-relay turns it off), write .arc.pid beside the "
        "database and print the URL and a one-time dashboard sign-in link (see `manage.py login`). Stop with "
        "Ctrl-C or SIGTERM (or `manage.py stop`). With --workers N (ARC_WORKERS) N processes serve the one "
        "port; more than one needs Redis (--redis-url / ARC_REDIS_URL) for push across them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_location_arguments(parser)
        parser.add_argument(
            "--allow-remote", action="store_true", help="accept non-loopback clients (ARC_ALLOW_REMOTE)"
        )
        parser.add_argument(
            "--no-relay", action="store_true", help="do not serve the file-spool relay (see `manage.py relay`)"
        )
        parser.add_argument(
            "--workers",
            metavar="N",
            default=None,
            help="worker processes serving the port, a number or 'auto' (CPU count); ARC_WORKERS, default 1. "
            "More than one needs Redis (--redis-url)",
        )
        parser.add_argument("--access-log", action="store_true", help="log every request to stderr")
        parser.add_argument("--quiet", action="store_true", help="print nothing but errors")

    def handle(self, *args: Any, **options: Any) -> None:
        from arcsite.asgi import application

        host, port = settings.ARC_HOST, settings.ARC_PORT
        quiet = options["quiet"]
        try:
            count = workers.worker_count(options["workers"] or settings.ARC_WORKERS)
        except ValueError as exc:
            raise CommandError(f"--workers: {exc}") from exc
        worker_sock = workers.worker_socket()
        if count > 1 and worker_sock is None:
            self._supervise(count, host, port, quiet=quiet)
            return
        if worker_sock is None:
            storage_ready()  # (a supervisor did it before starting its workers)
        connection.close()  # requests use their own connections; this thread is the loop's
        background: list[server.Background] = [duty.OnDuty("a2a-outbound", Bridge)]  # (docs/a2a.md, outbound)
        if settings.ARC_A2A_PUSH:
            background.append(duty.OnDuty("a2a-push", Pusher))  # (docs/a2a.md, push notifications)
        relay = None
        if not options["no_relay"]:
            spool = settings.ARC_SPOOL_DIR
            relay = duty.OnDuty(
                duty.relay_duty(spool),
                lambda: RelayServer(
                    spool, AsgiForwarder(application), max_request_bytes=settings.ARC_MAX_REQUEST_BYTES
                ),
            )
            background.append(relay)
        if worker_sock is not None:
            served = server.serve(
                application,
                host=host,
                port=port,
                background=background,
                on_ready=lambda url: workers.worker_ready(),
                access_log=options["access_log"],
                sock=worker_sock,  # type: ignore[arg-type]
                pidfile=False,
            )
            return
        banner = self._banner(quiet, relay=relay is not None)

        served = server.serve(
            application,
            host=host,
            port=port,
            background=background,
            on_ready=lambda url: banner(url, [os.getpid()]),
            access_log=options["access_log"],
        )
        if served is None:
            raise CommandError(f"could not listen on {host}:{port} (is another hub or program using the port?)")
        if not quiet:
            self.stdout.write("Arc hub stopped.")

    def _supervise(self, count: int, host: str, port: int, *, quiet: bool) -> None:
        if not settings.ARC_REDIS_URL:
            raise CommandError(
                f"--workers {count} needs Redis, so that a message posted to one worker reaches streams on another: "
                "start redis-server and pass --redis-url redis://127.0.0.1:6379/0 (or set ARC_REDIS_URL); "
                "or run one worker (the default), which needs no Redis"
            )
        problem = _redis_problem(settings.ARC_REDIS_URL)
        if problem:
            raise CommandError(f"Redis at {settings.ARC_REDIS_URL} is not usable: {problem}")
        storage_ready()
        connection.close()
        argv = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "up", *sys.argv[2:]]
        banner = self._banner(quiet, relay="--no-relay" not in sys.argv[2:], count=count)
        served = workers.supervise(count=count, host=host, port=port, worker_argv=argv, on_ready=banner)
        if served is None:
            raise CommandError(f"could not serve {host}:{port} (the port is taken, or the workers did not start)")
        if not quiet:
            self.stdout.write("Arc hub stopped.")

    def _banner(self, quiet: bool, *, relay: bool, count: int = 1) -> Any:
        instance = hub.instance_id()
        storage = hub.storage_path()
        login = "" if quiet else signin.sign_in_path(username=signin.local_username())
        host = settings.ARC_HOST
        if not access.is_loopback(host) and not services.remote_allowed():
            self.stderr.write(
                f"warning: listening on {host} but remote access is off; non-loopback clients get 403 "
                "until --allow-remote or POST /v1/network"
            )
        connection.close()

        def ready(url: str, pids: list[int]) -> None:
            if quiet:
                return
            push = (
                f"Redis {settings.ARC_REDIS_URL}" if settings.ARC_REDIS_URL else "in-memory channel layer (one process)"
            )
            self.stdout.write(f"Arc hub ready at {url}")
            self.stdout.write(f"  storage  {storage} (instance {instance})")
            self.stdout.write(f"  push     {push}")
            if count > 1:
                self.stdout.write(f"  workers  {count} (pids {', '.join(map(str, pids))}; supervisor {os.getpid()})")
            self.stdout.write(f"  pidfile  {discovery.pidfile_path()}")
            if relay:
                self.stdout.write(f"  relay    {settings.ARC_SPOOL_DIR} (file spool for sandboxed agents)")
            self.stdout.write(f"  try      curl {url}/v1/hub-info")
            self.stdout.write(f"  sign in  {url}{login} (dashboard; one-time link, `manage.py login` for another)")
            sys.stdout.flush()

        return ready


def _redis_problem(url: str) -> str | None:
    """Why Redis at ``url`` cannot be used (``None``: it answers)."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    return None
