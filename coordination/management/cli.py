"""Bases of the commands: those on the hub's storage, and Arc's agent commands (clients of a running hub)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from coordination.client import ArcClient, ArcError
from coordination.process.cli import HubCommand, add_location_arguments, default_url

__all__ = ["AgentCommand", "HubCommand"]


class AgentCommand(BaseCommand):
    """Arc's agent CLI (``post``, ``poll``, ``whoami``): talk to a running hub over HTTP as ``--agent``.

    Each run registers the agent with ``replace=True`` first, as ``arc.py`` does.
    """

    requires_system_checks: list[str] = []  # a hub client: it never opens the database itself

    def add_arguments(self, parser: CommandParser) -> None:
        add_location_arguments(parser)
        parser.add_argument("--agent", required=True, help="your agent id (registered with replace=True)")
        parser.add_argument(
            "--url",
            "--base-url",
            dest="url",
            metavar="URL",
            help="hub URL (default: the running hub found through .arc.pid, else http://ARC_HOST:ARC_PORT)",
        )
        parser.add_argument("--key", metavar="KEY", help="agent key, sent as Authorization: Bearer KEY")

    def handle(self, *args: Any, **options: Any) -> None:
        url = options["url"] or default_url()
        try:
            client = ArcClient(options["agent"], base_url=url, key=options["key"])
            client.register(replace=True)
            self.run(client, options)
        except ArcError as exc:
            raise CommandError(f"arc error: {exc.error}") from None

    def run(self, client: ArcClient, options: dict[str, Any]) -> None:
        raise NotImplementedError
