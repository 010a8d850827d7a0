"""Starting and stopping a hub from outside it: ``ensure`` (idempotent background start) and ``stop``.

Both find a running hub as Arc does (``discovery``: the pidfile, then a probe); the
port binding itself is the mutex between two starters.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from coordination.process import discovery

PROBE_INTERVAL_SEC = 0.15  # Arc's bootstrap algorithm: probe every 150 ms until the timeout


def hub_ensure(*, timeout: float, allow_remote: bool = False, workers: str | None = None) -> dict[str, Any]:
    """Find a running hub or start ``manage.py up --quiet`` detached (``workers``: its ``--workers``), and wait for it to answer."""
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
                env=_hub_env(allow_remote=allow_remote, workers=workers),
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


def _hub_env(*, allow_remote: bool, workers: str | None = None) -> dict[str, str]:
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
    env["ARC_WORKERS"] = workers or settings.ARC_WORKERS
    return env


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        tail = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return ("\n  " + "\n  ".join(tail)) if tail else ""


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
