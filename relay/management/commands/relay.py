from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from coordination.process.cli import add_location_arguments, default_url
from relay.server import HttpForwarder, RelayServer


class Command(BaseCommand):
    help = (
        "Serve the file-spool relay on its own, forwarding to a running hub over HTTP: requests from "
        "<spool>/requests/<agent>/<id>.json are answered in <spool>/responses/<agent>/<id>.json (Arc's "
        "layout). `manage.py up` already serves the relay unless --no-relay; run this one for a spool "
        "the hub process cannot see, or beside a hub started with --no-relay. Stop with Ctrl-C or SIGTERM."
    )
    requires_system_checks: list[str] = []  # a hub client: it never opens the database itself

    def add_arguments(self, parser: CommandParser) -> None:
        add_location_arguments(parser)
        parser.add_argument(
            "--url",
            metavar="URL",
            help="hub URL (default: the running hub found through .arc.pid, else http://ARC_HOST:ARC_PORT)",
        )
        parser.add_argument("--quiet", action="store_true", help="print nothing but errors")

    def handle(self, *args: Any, **options: Any) -> None:
        url = options["url"] or default_url()
        forwarder = HttpForwarder(url)
        relay = RelayServer(settings.ARC_SPOOL_DIR, forwarder, max_request_bytes=settings.ARC_MAX_REQUEST_BYTES)
        if not options["quiet"]:
            self.stdout.write(f"Arc relay serving {settings.ARC_SPOOL_DIR} for the hub at {url}")
            self.stdout.flush()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, relay.stop)
            await relay.run()

        try:
            asyncio.run(main())
        finally:
            forwarder.close()
        if not options["quiet"]:
            self.stdout.write(f"Arc relay stopped ({relay.served} requests served).")
