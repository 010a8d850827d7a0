from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandParser

from coordination.core import selectors
from coordination.management.cli import HubCommand
from coordination.process.cli import add_location_arguments


class Command(HubCommand):
    help = "List agent keys (never their secrets): id, agent, rooms, admin, expiry, last use. Usable keys only unless --all."

    def add_arguments(self, parser: CommandParser) -> None:
        add_location_arguments(parser)
        parser.add_argument("--agent", help="only this agent's keys")
        parser.add_argument("--all", action="store_true", help="include revoked and expired keys")
        parser.add_argument("--json", action="store_true", help="JSON instead of a table")

    def handle(self, *args: Any, **options: Any) -> None:
        keys = [k.as_wire() for k in selectors.keys_list(agent_id=options["agent"], usable_only=not options["all"])]
        if options["json"]:
            self.stdout.write(json.dumps(keys, indent=2))
            return
        if not keys:
            self.stdout.write("no keys (mint one with: manage.py invite AGENT)")
            return
        columns = ("key_id", "agent_id", "rooms", "admin", "expires_at", "last_used_at", "revoked_at", "label")
        rows = [[_cell(k[c]) for c in columns] for k in keys]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
        self.stdout.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
        for row in rows:
            self.stdout.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(value) or "all"
    return str(value)
