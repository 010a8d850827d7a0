from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connection

from coordination.core import hub, services
from coordination.process import discovery
from coordination.process.cli import add_location_arguments
from coordination.process.control import hub_stop


class Command(BaseCommand):
    help = (
        "Delete all hub data: stop the running hub, then remove the SQLite file and its -wal/-shm files "
        "(on PostgreSQL: empty every table and re-create the default rooms). Needs --yes. Prints JSON {reset, ...}."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        add_location_arguments(parser)
        parser.add_argument(
            "--yes", action="store_true", help="confirm: delete every message, session, claim, lock and task"
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=10.0,
            metavar="SEC",
            help="seconds to wait for a running hub to stop (default 10)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        target = hub.storage_path()
        if not options["yes"]:
            raise CommandError(
                f"reset deletes every message, session, claim, lock and task in {target}; "
                "run it again with --yes to confirm"
            )
        result: dict[str, Any] = {"reset": False, "storage": target}
        url, _ = discovery.running_hub(settings.ARC_HOST, settings.ARC_PORT)
        if url is not None and _serves(url, target):
            stopped = hub_stop(host=settings.ARC_HOST, port=settings.ARC_PORT, timeout=options["timeout"])
            if not stopped["stopped"]:
                result["error"] = f"could not stop the running hub: {stopped['error']}"
                self._fail(result)
            result["stopped"] = {"pid": stopped["pid"], "url": stopped["url"]}
        try:
            if settings.ARC_DATABASE_URL:
                _flush_postgresql()
                result["flushed"] = True
            else:
                result["removed"] = _remove_sqlite(Path(settings.ARC_STORAGE))
                if not result["removed"]:
                    result["note"] = "database did not exist"
        except (OSError, DatabaseError) as exc:
            result["error"] = f"could not reset {target}: {exc}"
            self._fail(result)
        result["reset"] = True
        self.stdout.write(json.dumps(result, indent=2))

    def _fail(self, result: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(result, indent=2))
        raise CommandError(result["error"])


def _serves(url: str, storage: str) -> bool:
    """Whether the hub at ``url`` uses ``storage``; a hub on another database is left running."""
    try:
        with urllib.request.urlopen(f"{url}/v1/hub-info", timeout=2) as response:
            info = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return True  # cannot tell: assume it is ours rather than delete a database under a live hub
    reported = info.get("result", {}).get("storage_path") if isinstance(info, dict) else None
    return reported is None or reported == storage


def _remove_sqlite(db: Path) -> list[str]:
    connection.close()
    removed = []
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{db}{suffix}")
        if path.exists():
            path.unlink()
            removed.append(path.name)
    return removed


def _flush_postgresql() -> None:
    # migrate first: flush only empties tables that exist, and the default rooms need theirs.
    call_command("migrate", interactive=False, verbosity=0)
    call_command("flush", interactive=False, verbosity=0)
    services.rooms_ensure_defaults()
