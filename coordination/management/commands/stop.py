from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from coordination import discovery
from coordination.management.cli import add_location_arguments


class Command(BaseCommand):
    help = (
        "Stop the running hub: find it through .arc.pid (or a probe of --host:--port), send SIGTERM to the pid "
        "in the pidfile, wait until it exits, remove the pidfile and print JSON {stopped, pid, url}. "
        "Exit status 1 if no hub was running or it did not stop."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        add_location_arguments(parser)
        parser.add_argument(
            "--timeout",
            type=float,
            default=10.0,
            metavar="SEC",
            help="seconds to wait for the hub to exit (default 10)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        result = hub_stop(host=settings.ARC_HOST, port=settings.ARC_PORT, timeout=options["timeout"])
        self.stdout.write(json.dumps(result, indent=2))
        if not result["stopped"]:
            raise CommandError(result["error"])


def hub_stop(*, host: str, port: int, timeout: float) -> dict[str, Any]:
    """SIGTERM the hub found by discovery and wait for it to go. Never raises for an expected failure."""
    url, info = discovery.running_hub(host, port)
    if url is None:
        return {
            "stopped": False,
            "error": f"no running hub found (no live .arc.pid, nothing answering at {discovery.base_url(host, port)})",
        }
    # Only a pidfile whose hub answered identifies the process; a stale one may name a recycled pid.
    if info is None or info["url"] != url:
        return {
            "stopped": False,
            "url": url,
            "error": f"a hub answers at {url} but no .arc.pid names its process; stop it where it runs "
            f"(Ctrl-C) or with POST {url}/v1/shutdown",
        }
    pid = info["pid"]
    if pid <= 1 or pid == os.getpid():
        return {
            "stopped": False,
            "pid": pid,
            "url": url,
            "error": f"refusing to signal pid {pid} named in {info['path']}",
        }
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return {"stopped": False, "pid": pid, "url": url, "error": f"pid {pid} from {info['path']} is not running"}
    except PermissionError as exc:
        return {"stopped": False, "pid": pid, "url": url, "error": f"not allowed to stop pid {pid}: {exc}"}

    pidfile = Path(info["path"])
    deadline = time.monotonic() + timeout
    while not _stopped(pid, url, pidfile):
        if time.monotonic() >= deadline:
            return {
                "stopped": False,
                "pid": pid,
                "url": url,
                "error": f"hub pid {pid} was sent SIGTERM but is still running after {timeout:g}s",
            }
        time.sleep(0.1)
    # The hub removes its own pidfile on a clean stop; this covers a hub that could not.
    current = discovery.pidfile_read(pidfile)
    if current is not None and current["pid"] == pid:
        with contextlib.suppress(OSError):
            pidfile.unlink()
    return {"stopped": True, "pid": pid, "url": url}


def _stopped(pid: int, url: str, pidfile: Path) -> bool:
    if _process_gone(pid):
        return True
    # A hub started by a process that has not reaped it yet stays a zombie; it is stopped
    # once it stops answering and has taken its pidfile away.
    current = discovery.pidfile_read(pidfile)
    return (current is None or current["pid"] != pid) and not discovery.probe(url, timeout=0.5)


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        # /proc/<pid>/stat: "pid (comm) state ..."; Z = exited, waiting to be reaped.
        state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state == "Z"
