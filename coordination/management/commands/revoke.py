from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from coordination.core import services
from coordination.core.errors import ArcError
from coordination.process.cli import add_location_arguments


class Command(BaseCommand):
    help = (
        "Revoke agent keys by id (the `key_id` shown by `manage.py keys`). Takes effect at once: the key's next "
        "request gets 401 and its open streams and sockets close within a second."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_location_arguments(parser)
        parser.add_argument("key_ids", nargs="+", metavar="KEY_ID", help="key ids (the part after arc_ in the key)")

    def handle(self, *args: Any, **options: Any) -> None:
        revoked = []
        for key_id in options["key_ids"]:
            try:
                revoked.append(services.key_revoke(key_id=key_id).as_wire())
            except ArcError as exc:
                raise CommandError(exc.message) from None
        self.stdout.write(json.dumps(revoked, indent=2))
