from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from coordination import discovery, events, hub, services
from coordination.management.cli import add_location_arguments
from coordination.management.commands.login import local_username
from coordination.middleware import is_loopback
from coordination.sweeper import Sweeper
from dashboard.auth import login_path
from relay.server import AsgiForwarder, RelayServer

log = logging.getLogger("arc.up")


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
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server

        from arcsite.asgi import application

        host, port = settings.ARC_HOST, settings.ARC_PORT
        quiet = options["quiet"]
        call_command("migrate", interactive=False, verbosity=0)
        services.rooms_ensure_defaults()
        instance = hub.instance_id()
        storage = hub.storage_path()
        login = "" if quiet else login_path(username=local_username())
        connection.close()  # requests use their own connections; this thread is the reactor's
        if not is_loopback(host) and not services.remote_allowed():
            self.stderr.write(
                f"warning: listening on {host} but remote access is off; non-loopback clients get 403 "
                "until --allow-remote or POST /v1/network"
            )

        sweeper = Sweeper()
        relay = (
            None
            if options["no_relay"]
            else RelayServer(
                settings.ARC_SPOOL_DIR, AsgiForwarder(application), max_request_bytes=settings.ARC_MAX_REQUEST_BYTES
            )
        )
        bound: dict[str, Any] = {}

        def ready() -> None:
            if not server.listening_addresses:
                return
            bound["port"] = server.listening_addresses[0][1]
            bound["url"] = discovery.base_url(host, bound["port"])
            discovery.pidfile_write(port=bound["port"], url=bound["url"])
            events.bind_loop(asyncio.get_event_loop())  # Daphne set the reactor's loop as current
            sweeper.start()
            if relay is not None:
                bound["relay"] = asyncio.ensure_future(relay.run())
            if not quiet:
                self.stdout.write(f"Arc hub ready at {bound['url']}")
                self.stdout.write(f"  storage  {storage} (instance {instance})")
                self.stdout.write(
                    f"  push     {'Redis ' + settings.ARC_REDIS_URL if settings.ARC_REDIS_URL else 'in-memory channel layer (one process)'}"
                )
                self.stdout.write(f"  pidfile  {discovery.pidfile_path()}")
                if relay is not None:
                    self.stdout.write(f"  relay    {settings.ARC_SPOOL_DIR} (file spool for sandboxed agents)")
                self.stdout.write("  try      curl " + bound["url"] + "/v1/hub-info")
                self.stdout.write(
                    f"  sign in  {bound['url']}{login} (dashboard; one-time link, `manage.py login` for another)"
                )
                sys.stdout.flush()

        server = Server(
            application=application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            signal_handlers=True,
            action_logger=_access_log if options["access_log"] else None,
            http_timeout=None,
            websocket_timeout=-1,  # sockets live until the client leaves or goes idle (consumers.py)
            verbosity=0,
            ready_callable=ready,
        )
        try:
            server.run()
        finally:
            if relay is not None:
                relay.stop()
            _finish_pending_tasks()
            if "port" in bound:
                sweeper.stop()
                discovery.pidfile_remove(port=bound["port"])
        if "port" not in bound:
            raise CommandError(f"could not listen on {host}:{port} (is another hub or program using the port?)")
        if not quiet:
            self.stdout.write("Arc hub stopped.")


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
