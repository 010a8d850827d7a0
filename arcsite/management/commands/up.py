"""``manage.py up``: the composition root that starts a hub (docs/architecture.md).

It puts the doors together (the site's ASGI application, the in-hub relay over it) and
serves them with ``coordination.process.server``.
"""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from coordination.core import access, hub, services
from coordination.process import discovery, server, signin
from coordination.process.cli import add_location_arguments
from coordination.process.storage import storage_ready
from relay.server import AsgiForwarder, RelayServer


class Command(BaseCommand):
    help = (
        "Run the hub in the foreground: create ARC_HOME, apply migrations, serve REST, long-poll, SSE and "
        "WebSocket on --host:--port (default 127.0.0.1:6969), serve the file-spool relay for sandboxed "
        "agents on --spool-dir (default ./.arc-relay; --no-relay turns it off), write .arc.pid beside the "
        "database and print the URL and a one-time dashboard sign-in link (see `manage.py login`). Stop with "
        "Ctrl-C or SIGTERM (or `manage.py stop`)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_location_arguments(parser)
        parser.add_argument(
            "--allow-remote", action="store_true", help="accept non-loopback clients (ARC_ALLOW_REMOTE)"
        )
        parser.add_argument(
            "--no-relay", action="store_true", help="do not serve the file-spool relay (see `manage.py relay`)"
        )
        parser.add_argument("--access-log", action="store_true", help="log every request to stderr")
        parser.add_argument("--quiet", action="store_true", help="print nothing but errors")

    def handle(self, *args: Any, **options: Any) -> None:
        from arcsite.asgi import application

        host, port = settings.ARC_HOST, settings.ARC_PORT
        quiet = options["quiet"]
        storage_ready()
        instance = hub.instance_id()
        storage = hub.storage_path()
        login = "" if quiet else signin.sign_in_path(username=signin.local_username())
        connection.close()  # requests use their own connections; this thread is the reactor's
        if not access.is_loopback(host) and not services.remote_allowed():
            self.stderr.write(
                f"warning: listening on {host} but remote access is off; non-loopback clients get 403 "
                "until --allow-remote or POST /v1/network"
            )
        relay = None
        if not options["no_relay"]:
            relay = RelayServer(
                settings.ARC_SPOOL_DIR, AsgiForwarder(application), max_request_bytes=settings.ARC_MAX_REQUEST_BYTES
            )

        def ready(url: str) -> None:
            if quiet:
                return
            push = (
                f"Redis {settings.ARC_REDIS_URL}" if settings.ARC_REDIS_URL else "in-memory channel layer (one process)"
            )
            self.stdout.write(f"Arc hub ready at {url}")
            self.stdout.write(f"  storage  {storage} (instance {instance})")
            self.stdout.write(f"  push     {push}")
            self.stdout.write(f"  pidfile  {discovery.pidfile_path()}")
            if relay is not None:
                self.stdout.write(f"  relay    {settings.ARC_SPOOL_DIR} (file spool for sandboxed agents)")
            self.stdout.write(f"  try      curl {url}/v1/hub-info")
            self.stdout.write(f"  sign in  {url}{login} (dashboard; one-time link, `manage.py login` for another)")
            sys.stdout.flush()

        served = server.serve(
            application,
            host=host,
            port=port,
            background=[relay] if relay is not None else [],
            on_ready=ready,
            access_log=options["access_log"],
        )
        if served is None:
            raise CommandError(f"could not listen on {host}:{port} (is another hub or program using the port?)")
        if not quiet:
            self.stdout.write("Arc hub stopped.")
