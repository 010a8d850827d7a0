from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from coordination.process.cli import add_location_arguments
from coordination.process.control import hub_stop


class Command(BaseCommand):
    help = (
        "Stop the running hub: find it through .arc.pid (or a probe of --host:--port), send SIGTERM to the pid "
        "in the pidfile, wait until it exits, remove the pidfile and print JSON {stopped, pid, url}. "
        "Exit status 1 if no hub was running or it did not stop."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        add_location_arguments(parser)
        parser.add_argument(
            "--timeout",
            type=float,
            default=10.0,
            metavar="SEC",
            help="seconds to wait for the hub to exit (default 10)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        result = hub_stop(host=settings.ARC_HOST, port=settings.ARC_PORT, timeout=options["timeout"])
        self.stdout.write(json.dumps(result, indent=2))
        if not result["stopped"]:
            raise CommandError(result["error"])
