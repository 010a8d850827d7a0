from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from coordination.core import services
from coordination.core.errors import ArcError
from coordination.management.cli import HubCommand
from coordination.process.cli import add_location_arguments


class Command(HubCommand):
    help = (
        "Revoke agent keys, named by key id (the `key_id` `manage.py keys` shows, with or without `arc_`), by the "
        "whole key (`arc_<id>_<secret>`), or with --agent NAME every live key of that agent. Takes effect at once: "
        "the key's next request gets 401 and its open streams and sockets close within a second. Prints the keys "
        "revoked as JSON (never a secret) and a line per key on stderr; exits 1, saying what did not match, when "
        "a key or an agent matches nothing. Revoking a revoked key again changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_location_arguments(parser)
        parser.add_argument("keys", nargs="*", metavar="KEY", help="a key id (a1b2c3d4e5f6), or a whole key")
        parser.add_argument("--agent", action="append", default=[], metavar="NAME", help="every live key of NAME")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["keys"] and not options["agent"]:
            raise CommandError("name a key (its id or the whole key) or an agent (--agent NAME)")
        revoked: list[dict[str, Any]] = []
        missing: list[str] = []
        for reference in options["keys"]:
            try:
                key = services.key_find(reference=reference)
                revoked.append(services.key_revoke(key_id=key.prefix).as_wire())
            except ArcError as exc:
                missing.append(f"{_shown(reference)}: {exc.message}")
        for agent in options["agent"]:
            try:
                revoked += [key.as_wire() for key in services.keys_revoke_agent(agent_id=agent)]
            except ArcError as exc:
                missing.append(exc.message)
        for wire in revoked:
            self.stderr.write(f"revoked key {wire['key_id']} of {wire['agent_id']} ({wire['label'] or 'no label'})")
        self.stdout.write(json.dumps(revoked, indent=2))
        if missing:
            raise CommandError("nothing revoked for " + "; ".join(missing))


def _shown(reference: str) -> str:
    """A key as it may be printed: its id only, never its secret."""
    parts = reference.strip().split("_", 2)
    return f"arc_{parts[1]}_…" if len(parts) == 3 and parts[0] == "arc" else reference
