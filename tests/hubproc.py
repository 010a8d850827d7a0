"""Real hub processes for tests: ``manage.py up`` in a subprocess, on a free port.

On the PostgreSQL run (``ARC_DATABASE_URL`` set) each live hub gets a fresh
database of its own, created here and dropped afterwards, so live tests never
share state with pytest-django's test database.

A fresh hub's storage starts as a copy of one migrated once per test process (a SQLite
file; a PostgreSQL template database): the same schema ``manage.py up`` would build, made
once instead of at each of the suite's hundred hub starts. Only the schema and the
migrations' own rows (the default rooms) are in it: each hub is still born on its first
start (its birth marker, so its instance id, is its own). ``up`` still checks its
migrations and finds none pending. A first start on empty storage is tested where the commands
start their own hubs (``ensure`` and ``up`` in tests/test_commands.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("ARC_DATABASE_URL", "")


@dataclass
class Hub:
    url: str
    home: Path
    proc: subprocess.Popen[str]
    env: dict[str, str]
    output: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(
        self, method: str, path: str, payload: Any = None, *, raw: bytes | None = None, timeout: float = 30.0
    ) -> tuple[int, dict[str, Any]]:
        data = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else None)
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def hub_env(home: Path, database_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARC_")}
    env["ARC_HOME"] = str(home)
    env["DJANGO_SETTINGS_MODULE"] = "arcsite.settings"
    if database_url:
        env["ARC_DATABASE_URL"] = database_url
    env.update(extra)
    return env


_template_lock = threading.Lock()
_templates: dict[str, str] = {}


def _migrated_once(kind: str, make: Any) -> str:
    """The storage template of this kind for this test process, made by ``make()`` on first use."""
    with _template_lock:
        if kind not in _templates:
            _templates[kind] = make()
        return _templates[kind]


def _migrate(env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def _sqlite_template() -> str:
    def make() -> str:
        home = Path(tempfile.mkdtemp(prefix="arc-template-"))
        _migrate(hub_env(home))
        return str(home / "arc.sqlite3")  # the last connection closed: the WAL is folded into the file

    return _migrated_once("sqlite", make)


def _pg_template() -> str:
    """A PostgreSQL database migrated once, to create each live hub's database from (``CREATE DATABASE ... TEMPLATE``)."""

    def make() -> str:
        import atexit

        import psycopg

        name = f"arc_template_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        admin = _with_database(PG_URL, "postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        _migrate(hub_env(Path(tempfile.mkdtemp(prefix="arc-template-")), _with_database(PG_URL, name)))

        def drop() -> None:
            with suppress(Exception), psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        atexit.register(drop)
        return name

    return _migrated_once("postgres", make)


def start_hub(
    home: Path,
    *,
    database_url: str | None = None,
    port: int = 0,
    args: tuple[str, ...] = (),
    timeout: float = 60.0,
    extra_env: dict[str, str] | None = None,
) -> Hub:
    """Start ``manage.py up`` and wait until it prints its URL; ``extra_env`` adds environment variables.

    On SQLite a home without a database gets a copy of the migrated template (see the module's
    docstring), unless ``extra_env`` names its own ``ARC_STORAGE``.
    """
    home.mkdir(parents=True, exist_ok=True)
    env = hub_env(home, database_url, **(extra_env or {}))
    storage = home / "arc.sqlite3"
    if not (database_url or "ARC_STORAGE" in env or storage.exists()):
        shutil.copyfile(_sqlite_template(), storage)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "up", "--port", str(port), *args],
        cwd=str(home),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line.rstrip())
        if line.startswith("Arc hub ready at "):
            url = line.split("Arc hub ready at ", 1)[1].strip()
            hub = Hub(url=url, home=home, proc=proc, env=env, output=lines)
            _drain(proc, lines)
            return hub
    proc.kill()
    raise RuntimeError("hub did not start:\n" + "\n".join(lines))


def _drain(proc: subprocess.Popen[str], lines: list[str]) -> None:
    """Keep reading the hub's output so a full pipe never blocks it."""
    import threading

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())

    threading.Thread(target=pump, daemon=True).start()


@contextmanager
def live_database() -> Iterator[str | None]:
    """A fresh PostgreSQL database for one live hub on the PostgreSQL run; ``None`` (SQLite) otherwise."""
    if not PG_URL:
        yield None
        return
    import psycopg

    name = f"arc_live_{uuid.uuid4().hex[:12]}"
    template = _pg_template()
    admin = _with_database(PG_URL, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield _with_database(PG_URL, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn, suppress(Exception):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@contextmanager
def running_hub(home: Path, **kwargs: Any) -> Iterator[Hub]:
    with live_database() as database_url:
        hub = start_hub(home, database_url=database_url, **kwargs)
        try:
            yield hub
        finally:
            hub.stop()


def manage(hub: Hub, *args: str) -> str:
    """Run ``manage.py`` beside a live hub (its environment and data), as an operator would; its stdout."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=hub.env,
        cwd=str(hub.home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def mint_key(hub: Hub, agent: str, *flags: str) -> str:
    """An agent key for a live hub, minted with ``manage.py invite AGENT --key-only [flags]``."""
    return manage(hub, "invite", agent, "--key-only", *flags)


def sign_in(session: Any, link: str, timeout: float = 30.0) -> Any:
    """Use a one-time sign-in link as a browser does: its GET shows a button, whose POST signs in.

    ``session`` is a ``requests.Session``; returns the answer to the POST (the overview, after its redirect).
    """
    page = session.get(link, timeout=timeout)
    assert page.status_code == 200, page.text
    token = session.cookies["csrftoken"]
    return session.post(link, data={"csrfmiddlewaretoken": token}, headers={"Referer": link}, timeout=timeout)
