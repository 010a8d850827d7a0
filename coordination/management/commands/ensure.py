from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from coordination import discovery
from coordination.management.cli import add_location_arguments

PROBE_INTERVAL_SEC = 0.15  # Arc's bootstrap algorithm: probe every 150 ms until the timeout


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
            "--timeout",
            type=float,
            default=10.0,
            metavar="SEC",
            help="seconds to wait for the hub to answer (default 10)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        result = hub_ensure(timeout=options["timeout"], allow_remote=options["allow_remote"])
        if result["running"]:
            result.update(_login(result["url"]))
        self.stdout.write(json.dumps(result, indent=2))
        if not result["running"]:
            raise CommandError(result["error"])


def hub_ensure(*, timeout: float, allow_remote: bool = False) -> dict[str, Any]:
    """Find a running hub or start ``manage.py up --quiet`` detached, and wait for it to answer."""
    host, port = settings.ARC_HOST, settings.ARC_PORT
    url, _ = discovery.running_hub(host, port)
    if url is not None:
        return {"running": True, "started": False, "url": url}
    base = discovery.base_url(host, port)
    log_path = Path(settings.ARC_HOME) / "hub.log"
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            # A new session: the hub outlives this command and ignores the terminal's Ctrl-C.
            proc = subprocess.Popen(
                [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "up", "--quiet"],
                env=_hub_env(allow_remote=allow_remote),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except OSError as exc:
        return {"running": False, "started": False, "url": base, "error": f"could not start the hub: {exc}"}

    deadline = time.monotonic() + timeout
    while True:
        # Our child writes .arc.pid once it listens; with --port 0 that is the only way to learn its URL.
        info = discovery.pidfile_read(discovery.pidfile_path())
        if info is not None and info["pid"] == proc.pid and discovery.probe(info["url"]):
            return {"running": True, "started": True, "url": info["url"], "pid": proc.pid}
        code = proc.poll()
        if code is not None:
            # The port binding is the mutex: another starter may have won the race.
            url, _ = discovery.running_hub(host, port)
            if url is not None:
                return {"running": True, "started": False, "url": url}
            return {
                "running": False,
                "started": False,
                "url": base,
                "error": f"the hub exited with status {code} before answering; see {log_path}{_log_tail(log_path)}",
            }
        if time.monotonic() >= deadline:
            return {
                "running": False,
                "started": True,
                "url": base,
                "pid": proc.pid,
                "error": f"the hub (pid {proc.pid}) did not answer within {timeout:g}s; it may still be starting, "
                f"see {log_path}",
            }
        time.sleep(PROBE_INTERVAL_SEC)


def _login(url: str) -> dict[str, str]:
    """A one-time dashboard link (``login_url``), if the hub at ``url`` serves this storage."""
    import requests

    from coordination import hub
    from coordination.management.commands.login import local_username
    from dashboard.auth import login_path

    try:
        answered = requests.get(f"{url}/v1/hub-info", timeout=5).headers.get("X-Arc-Instance")
        if answered != hub.instance_id():
            return {"login": "the hub at this URL serves other storage: run `manage.py login` beside it"}
        return {"login_url": url.rstrip("/") + login_path(username=local_username())}
    except Exception as exc:  # noqa: BLE001 - the hub runs either way; only the link is missing
        return {"login": f"no login link: {exc}"}


def _hub_env(*, allow_remote: bool) -> dict[str, str]:
    """This process's environment with the effective hub location spelled out, so the child opens the same hub."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "arcsite.settings"
    env["ARC_HOME"] = str(settings.ARC_HOME)
    env["ARC_HOST"] = settings.ARC_HOST
    env["ARC_PORT"] = str(settings.ARC_PORT)
    env["ARC_SPOOL_DIR"] = str(settings.ARC_SPOOL_DIR)
    if settings.ARC_DATABASE_URL:
        env["ARC_DATABASE_URL"] = settings.ARC_DATABASE_URL
    else:
        env["ARC_STORAGE"] = str(settings.ARC_STORAGE)
    if settings.ARC_REDIS_URL:
        env["ARC_REDIS_URL"] = settings.ARC_REDIS_URL
    if allow_remote or settings.ARC_ALLOW_REMOTE:
        env["ARC_ALLOW_REMOTE"] = "1"
    return env


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        tail = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return ("\n  " + "\n  ".join(tail)) if tail else ""
