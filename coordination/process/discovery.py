"""Finding a running hub the way Arc does: the ``.arc.pid`` file, then a probe.

The pidfile sits beside the SQLite database (``ARC_HOME`` on PostgreSQL) and
holds ``{"pid", "port", "url"}``. Discovery searches for it upward from the
current directory and from the storage directory, then probes
``/v1/channels``; the port binding itself is the mutex between two starters.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings

PIDFILE_NAME = ".arc.pid"


def storage_dir() -> Path:
    if settings.ARC_DATABASE_URL:
        return Path(settings.ARC_HOME)
    return Path(settings.ARC_STORAGE).parent


def pidfile_path() -> Path:
    return storage_dir() / PIDFILE_NAME


def base_url(host: str, port: int) -> str:
    host = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host
    return f"http://[{host}]:{port}" if ":" in host and not host.startswith("[") else f"http://{host}:{port}"


def pidfile_write(*, port: int, url: str, workers: list[int] | None = None) -> Path:
    """Arc's pidfile (``pid``, ``port``, ``url``), and the worker pids of a hub of several processes.

    ``pid`` is always the process that ``stop`` signals: the one process, or the supervisor.
    """
    path = pidfile_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{PIDFILE_NAME}.{os.getpid()}.tmp")
    payload: dict[str, Any] = {"pid": os.getpid(), "port": port, "url": url}
    if workers:
        payload["workers"] = workers
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    tmp.replace(path)
    return path


def pidfile_read(path: Path) -> dict[str, Any] | None:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict):
        return None
    try:
        info: dict[str, Any] = {
            "pid": int(payload["pid"]),
            "port": int(payload["port"]),
            "url": str(payload["url"]),
            "path": str(path),
        }
        if isinstance(payload.get("workers"), list):
            info["workers"] = [int(pid) for pid in payload["workers"]]
        return info
    except (KeyError, TypeError, ValueError):
        return None


def pidfile_remove(*, port: int) -> None:
    """Remove the pidfile only if it is ours (same pid and port), as Arc does."""
    path = pidfile_path()
    info = pidfile_read(path)
    if info and info["pid"] == os.getpid() and info["port"] == port:
        with contextlib.suppress(OSError):
            path.unlink()


def pidfile_candidates() -> list[Path]:
    """Arc's search (``.arc.pid`` upward from the current and the storage directory), plus our
    default home: ``<dir>/.arc/.arc.pid`` at each level, so an agent in a subdirectory of the
    project finds the project's hub."""
    seen: set[Path] = set()
    out: list[Path] = []
    for root in (Path.cwd().resolve(), storage_dir().resolve()):
        for base in (root, *root.parents):
            for candidate in (base / PIDFILE_NAME, base / ".arc" / PIDFILE_NAME):
                if candidate not in seen:
                    seen.add(candidate)
                    out.append(candidate)
    return out


def pidfile_discover() -> dict[str, Any] | None:
    for candidate in pidfile_candidates():
        info = pidfile_read(candidate)
        if info is not None:
            return info
    return None


def probe(url: str, timeout: float = 2.0) -> bool:
    """Does an Arc hub answer at ``url``? Any answer stamped ``X-Arc-Instance`` says so, a 401 or 403
    included (a hub under ``ARC_AUTH=required`` refuses an unkeyed probe, but it is there)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{url}/v1/channels", method="GET"), timeout=timeout):
            return True
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(Exception):
            exc.close()
        return exc.headers.get("X-Arc-Instance") is not None
    except (urllib.error.URLError, OSError, ValueError):
        return False


def running_hub(host: str, port: int) -> tuple[str | None, dict[str, Any] | None]:
    """``(url, pidfile info)`` of a running hub, or ``(None, info)`` when none answers."""
    info = pidfile_discover()
    if info and probe(info["url"]):
        return info["url"], info
    url = base_url(host, port)
    if probe(url):
        return url, info
    return None, info
