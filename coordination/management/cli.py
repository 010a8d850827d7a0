"""Arguments every hub command shares (SPEC section 8).

``manage.py`` has already copied them into ``ARC_*`` environment variables
before settings loaded; declaring them here documents them in ``--help`` and
lets a command read the effective values from ``settings``.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from coordination import discovery
from coordination.client import ArcClient, ArcError


def add_location_arguments(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("hub location (same as the ARC_* environment variables)")
    group.add_argument("--home", metavar="DIR", help="data directory, ARC_HOME (default ./.arc)")
    group.add_argument("--storage", metavar="FILE", help="SQLite file, ARC_STORAGE (default ARC_HOME/arc.sqlite3)")
    group.add_argument("--database-url", metavar="URL", help="PostgreSQL URL, ARC_DATABASE_URL (default: SQLite)")
    group.add_argument("--redis-url", metavar="URL", help="Redis channel layer, ARC_REDIS_URL (default: in-memory)")
    group.add_argument("--spool-dir", metavar="DIR", help="relay spool directory, ARC_SPOOL_DIR (default ./.arc-relay)")
    group.add_argument("--host", metavar="HOST", help="interface, ARC_HOST (default 127.0.0.1)")
    group.add_argument("--port", metavar="PORT", help="port, ARC_PORT (default 6969; 0 picks a free one)")


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


def default_url() -> str:
    url, _ = discovery.running_hub(settings.ARC_HOST, settings.ARC_PORT)
    return url or discovery.base_url(settings.ARC_HOST, settings.ARC_PORT)
