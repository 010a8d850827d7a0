from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from coordination.core.errors import ArcError
from coordination.management.cli import HubCommand
from coordination.process import discovery, signin
from coordination.process.cli import add_location_arguments


class Command(HubCommand):
    help = (
        "Print a one-time link that signs you in to the dashboard as --user (default: your "
        "login name): a staff user, created as a superuser without a password if absent; an existing user must "
        "already be an active staff user. The link works once, within 24 hours. `up` and `ensure` print one too. "
        "Whoever can run this on the hub's storage is its administrator."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_location_arguments(parser)
        parser.add_argument("--user", default="", help="dashboard user name (default: your login name)")
        parser.add_argument("--url", help="hub URL for the link (default: the running hub, else ARC_HOST:ARC_PORT)")

    def handle(self, *args: Any, **options: Any) -> None:
        url = options["url"] or discovery.running_hub(settings.ARC_HOST, settings.ARC_PORT)[0]
        url = url or discovery.base_url(settings.ARC_HOST, settings.ARC_PORT)
        try:
            self.stdout.write(
                url.rstrip("/") + signin.sign_in_path(username=options["user"] or signin.local_username())
            )
        except ArcError as exc:
            raise CommandError(exc.message) from exc
