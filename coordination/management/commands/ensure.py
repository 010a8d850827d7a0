from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from coordination.process import signin
from coordination.process.cli import add_location_arguments
from coordination.process.control import hub_ensure


class Command(BaseCommand):
    help = (
        "Start the hub in the background unless one is already running (found through .arc.pid or a probe of "
        "--host:--port), wait until it answers, and print JSON {running, started, url, login_url}. login_url is "
        "a one-time dashboard sign-in link for your login name (as `manage.py login` prints), given when the hub "
        "serves this storage. Idempotent: a second call prints started: false. The hub logs to ARC_HOME/hub.log; "
        "exit status 1 if no hub answers."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        add_location_arguments(parser)
        parser.add_argument(
            "--allow-remote", action="store_true", help="accept non-loopback clients (ARC_ALLOW_REMOTE)"
        )
        parser.add_argument(
            "--workers",
            metavar="N",
            help="worker processes for a hub it starts, a number or 'auto' (ARC_WORKERS; more than one needs Redis)",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=10.0,
            metavar="SEC",
            help="seconds to wait for the hub to answer (default 10)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        result = hub_ensure(
            timeout=options["timeout"], allow_remote=options["allow_remote"], workers=options["workers"]
        )
        if result["running"]:
            result.update(signin.sign_in_url(result["url"]))
        self.stdout.write(json.dumps(result, indent=2))
        if not result["running"]:
            raise CommandError(result["error"])
