"""What every hub command shares: where the hub is (docs/configuration.md).

``manage.py`` has already copied these arguments into ``ARC_*`` environment variables
before settings loaded; declaring them here documents them in ``--help`` and lets a
command read the effective values from ``settings``.
"""

from __future__ import annotations

import os
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from coordination.process import discovery
from coordination.process.storage import storage_ready


def add_location_arguments(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("hub location (same as the ARC_* environment variables)")
    group.add_argument(
        "--home",
        metavar="DIR",
        help="data directory, ARC_HOME (default ~/.local/share/arc-hub, or $XDG_DATA_HOME/arc-hub)",
    )
    group.add_argument("--storage", metavar="FILE", help="SQLite file, ARC_STORAGE (default ARC_HOME/arc.sqlite3)")
    group.add_argument("--database-url", metavar="URL", help="PostgreSQL URL, ARC_DATABASE_URL (default: SQLite)")
    group.add_argument("--redis-url", metavar="URL", help="Redis channel layer, ARC_REDIS_URL (default: in-memory)")
    group.add_argument("--spool-dir", metavar="DIR", help="relay spool directory, ARC_SPOOL_DIR (default ./.arc-relay)")
    group.add_argument("--host", metavar="HOST", help="interface, ARC_HOST (default 127.0.0.1)")
    group.add_argument("--port", metavar="PORT", help="port, ARC_PORT (default 6969; 0 picks a free one)")


def default_url() -> str:
    url, _ = discovery.running_hub(settings.ARC_HOST, settings.ARC_PORT)
    return url or discovery.base_url(settings.ARC_HOST, settings.ARC_PORT)


KEY_ENV = "ARC_AGENT_KEY"  # where a client command finds its agent key when no file names it


def agent_key(key_file: str | None) -> str | None:
    """A client command's agent key: the file's content (``--key-file``, ``OSError`` if unreadable), else ``$ARC_AGENT_KEY``."""
    key = Path(key_file).read_text(encoding="utf-8") if key_file else os.environ.get(KEY_ENV, "")
    return key.strip() or None


class HubCommand(BaseCommand):
    """A command on the hub's own storage (``invite``, ``keys``, ``revoke``, ``login``, ``a2a``): it is made ready first.

    No system checks: they import the whole site (URLs, API schema, dashboard) to check it, a
    second of every run, and these commands use none of it; ``up`` and ``manage.py check`` run them.
    """

    requires_system_checks: list[str] = []

    def execute(self, *args: Any, **options: Any) -> Any:
        if not options.get("help"):
            storage_ready()
        return super().execute(*args, **options)
