"""``manage.py a2a``: the admin's door to A2A agents elsewhere (docs/a2a.md, outbound)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser

from coordination.core import selectors, services
from coordination.core.errors import ArcError
from coordination.process.cli import HubCommand, add_location_arguments
from gateway import outbound


class Command(HubCommand):
    help = (
        "A2A agents elsewhere, reached by the hub's agents as agents of the hub: `add NAME URL` fetches the "
        "Agent Card at URL (or URL/.well-known/agent-card.json) and registers it as NAME, its skills as "
        "capabilities (a task_request to NAME, or to one of those capabilities, is then sent to it while a hub "
        "is up); `list`; `check NAME` fetches its card again; `remove NAME` (its unfinished tasks fail). URLs "
        "must lead to the public internet unless ARC_A2A_ALLOW_NETWORKS allows their network. A credential "
        "(a Bearer token the hub presents to it) is read from an environment variable or stdin, stored, and "
        "never shown again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_location_arguments(parser)
        verbs = parser.add_subparsers(dest="verb", required=True, metavar="{add,list,check,remove}")
        add = verbs.add_parser("add", help="register the A2A agent whose card is at URL as NAME")
        add.add_argument("name", help="its name on the hub (an agent id: letters, digits, . _ - :)")
        add.add_argument("url", help="its Agent Card's URL, or the base URL it is served under")
        given = add.add_mutually_exclusive_group()
        given.add_argument("--credential-env", metavar="VAR", help="read the Bearer token it wants from $VAR")
        given.add_argument("--credential-stdin", action="store_true", help="read the Bearer token from stdin")
        add.add_argument("--by", default="admin", help="who registered it (kept beside it; default admin)")
        listing = verbs.add_parser("list", help="the registered A2A agents (never their credentials)")
        listing.add_argument("--json", action="store_true", help="JSON instead of lines")
        check = verbs.add_parser("check", help="fetch NAME's card again now")
        check.add_argument("name")
        remove = verbs.add_parser("remove", help="forget NAME (its session closes; its unfinished tasks fail)")
        remove.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, f"_{options['verb']}")(options)
        except (outbound.Refused, outbound.Unreachable) as exc:
            raise CommandError(str(exc)) from None
        except ArcError as exc:
            raise CommandError(exc.message) from None

    def _add(self, options: dict[str, Any]) -> None:
        credential = _credential(options)
        card, data = asyncio.run(outbound.card_fetch(options["url"], credential or ""))
        remote = services.remote_register(
            agent_id=options["name"],
            card_url=outbound.card_url_of(options["url"].strip()),
            credential=credential,
            card=data,
            capabilities=outbound.capabilities_of(card),
            by=options["by"],
        )
        self.stdout.write(f"registered {remote.agent_id}: {_line(remote.as_wire())}")

    def _list(self, options: dict[str, Any]) -> None:
        remotes = [r.as_wire() for r in selectors.remote_agents()]
        if options["json"]:
            self.stdout.write(json.dumps(remotes, indent=2))
        elif not remotes:
            self.stdout.write("no A2A agents (register one with: manage.py a2a add NAME URL)")
        for remote in [] if options["json"] else remotes:
            self.stdout.write(f"{remote['agent_id']}: {_line(remote)}")

    def _check(self, options: dict[str, Any]) -> None:
        remote = next((r for r in selectors.remote_agents() if r.agent_id == options["name"]), None)
        if remote is None:
            raise CommandError(f"no A2A agent {options['name']} is registered")
        try:
            card, data = asyncio.run(outbound.card_fetch(remote.card_url, remote.credential))
        except (outbound.Refused, outbound.Unreachable) as exc:
            services.remote_checked(agent_id=remote.agent_id, card=None, capabilities=[], problem=str(exc))
            raise CommandError(f"{remote.agent_id} is not live: {exc}") from None
        services.remote_checked(
            agent_id=remote.agent_id, card=data, capabilities=outbound.capabilities_of(card), problem=""
        )
        remote.refresh_from_db()
        self.stdout.write(f"{remote.agent_id}: {_line(remote.as_wire())}")

    def _remove(self, options: dict[str, Any]) -> None:
        remote = services.remote_remove(agent_id=options["name"])
        self.stdout.write(f"removed {remote.agent_id}")


def _credential(options: dict[str, Any]) -> str | None:
    if options["credential_env"]:
        value = os.environ.get(options["credential_env"], "").strip()
        if not value:
            raise CommandError(f"${options['credential_env']} is empty or not set")
        return value
    if options["credential_stdin"]:
        value = sys.stdin.readline().strip()
        if not value:
            raise CommandError("no credential on stdin")
        return value
    return None  # (keeps the one stored, if any)


def _line(remote: dict[str, Any]) -> str:
    state = f"not live: {remote['problem']}" if remote["problem"] else "live"
    credential = "credential stored (not shown)" if remote["has_credential"] else "no credential"
    capabilities = ", ".join(remote["capabilities"]) or "none"
    return (
        f"{remote['name'] or '(no name)'} at {remote['card_url']}; {state}; capabilities: {capabilities}; {credential}"
    )
