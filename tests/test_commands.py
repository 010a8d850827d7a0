"""Arc's CLI as management commands: ``post``/``poll``/``whoami`` against a live hub, and
``ensure``/``stop``/``reset`` managing a real background hub in a temporary ARC_HOME.

Personas: ``alice`` posts; ``bob`` polls and receives her direct messages.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.hubproc import ROOT, Hub, hub_env, live_database

pytestmark = pytest.mark.live

COMMANDS = ("ensure", "stop", "reset", "post", "poll", "whoami")


def manage(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=str(cwd) if cwd else None,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run(name: str, *args: Any, **options: Any) -> str:
    out = StringIO()
    call_command(name, *args, stdout=out, **options)
    return out.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/channels", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def process_gone(pid: int, wait: float = 5.0) -> bool:
    """Whether ``pid`` has exited (a zombie awaiting its reaper counts as exited) within ``wait`` s."""
    deadline = time.monotonic() + wait
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


# ── post / poll / whoami against a running hub ────────────────────────────


def test_post_prints_the_stored_message(live_hub: Hub) -> None:
    message = json.loads(run("post", "hello from the cli", agent="alice", url=live_hub.url, thread_id="t-cli"))
    assert (message["from_agent"], message["channel"], message["thread_id"]) == ("alice", "general", "t-cli")
    status, stored = live_hub.call("GET", "/v1/messages?channel=general")
    assert status == 200
    assert [(m["id"], m["body"]) for m in stored["result"]] == [(message["id"], "hello from the cli")]


def test_post_with_to_sends_a_direct_message(live_hub: Hub) -> None:
    message = json.loads(run("post", "psst", agent="alice", to="bob", kind="status_update", url=live_hub.url))
    assert (message["to_agent"], message["channel"], message["kind"]) == ("bob", "direct", "status_update")
    status, inbox = live_hub.call("GET", "/v1/inbox/bob")
    assert status == 200
    assert [m["id"] for m in inbox["result"]] == [message["id"]]


def test_post_registers_the_agent_first(live_hub: Hub) -> None:
    run("post", "hi", agent="alice", url=live_hub.url)
    status, agents = live_hub.call("GET", "/v1/agents")
    assert status == 200
    assert "alice" in {a["agent_id"] for a in agents["result"]}


def test_poll_prints_one_json_line_per_message(live_hub: Hub) -> None:
    first = json.loads(run("post", "one", agent="alice", url=live_hub.url))
    second = json.loads(run("post", "two", agent="alice", to="bob", url=live_hub.url))
    run("post", "mine", agent="bob", url=live_hub.url)

    lines = run("poll", agent="bob", url=live_hub.url, timeout=0).splitlines()
    assert [json.loads(line)["id"] for line in lines] == [first["id"], second["id"]]

    later = run("poll", agent="bob", url=live_hub.url, timeout=0, since_id=first["id"], include_self=True)
    assert [json.loads(line)["body"] for line in later.splitlines()] == ["two", "mine"]

    only_general = run("poll", agent="bob", url=live_hub.url, timeout=0, channel="general")
    assert [json.loads(line)["body"] for line in only_general.splitlines()] == ["one"]


def test_poll_waits_for_a_message_and_prints_nothing_on_timeout(live_hub: Hub) -> None:
    started = time.monotonic()
    assert run("poll", agent="bob", url=live_hub.url, timeout=0.5) == ""
    assert time.monotonic() - started >= 0.5


def test_whoami_prints_the_bootstrap(live_hub: Hub) -> None:
    posted = json.loads(run("post", "hello", agent="alice", url=live_hub.url))
    me = json.loads(run("whoami", agent="bob", url=live_hub.url))
    assert me["agent_id"] == "bob"
    assert me["session"]["agent_id"] == "bob"
    assert me["latest_visible_id"] == posted["id"]


def test_hub_errors_become_clear_command_errors(live_hub: Hub) -> None:
    with pytest.raises(CommandError, match=r"^arc error: channel does not exist: nowhere"):
        run("post", "hello", agent="alice", channel="nowhere", url=live_hub.url)


def test_cli_post_and_poll_over_a_real_command_line(live_hub: Hub, tmp_path: Path) -> None:
    env = hub_env(tmp_path)
    posted = manage(
        "post", "--agent", "alice", "--base-url", live_hub.url, "--to", "bob", "from a shell", env=env, cwd=tmp_path
    )
    assert posted.returncode == 0, posted.stderr
    message = json.loads(posted.stdout)
    polled = manage("poll", "--agent", "bob", "--url", live_hub.url, "--timeout", "0", env=env, cwd=tmp_path)
    assert polled.returncode == 0, polled.stderr
    assert [json.loads(line)["id"] for line in polled.stdout.splitlines()] == [message["id"]]


def test_an_unreachable_hub_is_an_error_without_traceback(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = manage("whoami", "--agent", "alice", "--url", url, env=hub_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert "arc error: connection error: cannot reach the hub at " + url in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# ── ensure / stop / reset ──────────────────────────────────────────────────


@dataclass
class Home:
    """A temporary ARC_HOME with its own port (and, on the PostgreSQL run, its own database)."""

    path: Path
    port: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.path / ".arc.pid"

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return manage(*args, "--port", str(self.port), env=self.env, cwd=self.path)

    def json(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = self.manage(*args)
        assert "Traceback" not in result.stderr, result.stderr
        return result.returncode, json.loads(result.stdout)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    path = tmp_path / "arc-home"
    path.mkdir()
    with live_database() as database_url:
        home = Home(path=path, port=free_port(), env=hub_env(path, database_url))
        try:
            yield home
        finally:
            _kill_leftover_hub(home.pidfile)


def _kill_leftover_hub(pidfile: Path) -> None:
    try:
        pid = json.loads(pidfile.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not process_gone(pid, wait=10):
        os.kill(pid, signal.SIGKILL)


def test_ensure_starts_a_hub_once_and_stop_stops_it(home: Home) -> None:
    code, started = home.json("ensure", "--timeout", "60")
    assert code == 0
    assert (started["running"], started["started"], started["url"]) == (True, True, home.url)
    assert answers(home.url)
    pid = json.loads(home.pidfile.read_text())["pid"]
    assert started["pid"] == pid
    assert (home.path / "hub.log").exists()

    code, again = home.json("ensure")
    assert code == 0
    assert (again["running"], again["started"], again["url"]) == (True, False, home.url)
    assert json.loads(home.pidfile.read_text())["pid"] == pid  # still the first hub

    code, stopped = home.json("stop")
    assert code == 0
    assert stopped == {"stopped": True, "pid": pid, "url": home.url}
    assert process_gone(pid)
    assert not home.pidfile.exists()
    assert not answers(home.url)


def test_a_hub_requiring_keys_is_found_not_mistaken_for_no_hub(home: Home) -> None:
    # Its unkeyed probe answers 401: a hub is there, and ensure, post and stop find it.
    home.env["ARC_AUTH"] = "required"
    code, started = home.json("ensure", "--timeout", "60")
    assert (code, started["started"]) == (0, True)

    code, again = home.json("ensure")
    assert (code, again["running"], again["started"], again["url"]) == (0, True, False, home.url)
    refused = home.manage("post", "--agent", "alice", "hello")
    assert refused.returncode == 1
    assert "this hub requires an agent key" in refused.stderr  # it reached the hub, which asked for a key

    code, stopped = home.json("stop")
    assert (code, stopped["stopped"], stopped["pid"]) == (0, True, started["pid"])


def test_stop_without_a_running_hub_fails_cleanly(home: Home) -> None:
    result = home.manage("stop")
    assert result.returncode == 1
    assert json.loads(result.stdout)["stopped"] is False
    assert "no running hub found" in result.stderr
    assert "Traceback" not in result.stderr


def test_ensure_reports_a_hub_that_cannot_start(home: Home) -> None:
    with socket.socket() as squatter:  # something that is not a hub holds the port
        squatter.bind(("127.0.0.1", home.port))
        squatter.listen()
        result = home.manage("ensure", "--timeout", "60")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert (report["running"], report["started"]) == (False, False)
    assert "the hub exited with status 1 before answering" in report["error"]
    assert "could not listen" in report["error"]  # the tail of hub.log says why
    assert "Traceback" not in result.stderr


def test_reset_refuses_without_yes(home: Home) -> None:
    code, started = home.json("ensure", "--timeout", "60")
    assert (code, started["running"]) == (0, True)
    result = home.manage("reset")
    assert result.returncode == 1
    assert "--yes" in result.stderr
    assert "Traceback" not in result.stderr
    assert answers(home.url)  # nothing was stopped


def test_reset_stops_the_hub_and_deletes_its_data(home: Home) -> None:
    code, started = home.json("ensure", "--timeout", "60")
    assert (code, started["started"]) == (0, True)
    posted = manage("post", "--agent", "alice", "--url", home.url, "before the reset", env=home.env, cwd=home.path)
    assert posted.returncode == 0, posted.stderr
    pid = json.loads(home.pidfile.read_text())["pid"]

    code, reset = home.json("reset", "--yes")
    assert code == 0
    assert reset["reset"] is True
    assert reset["stopped"] == {"pid": pid, "url": home.url}
    assert process_gone(pid)
    assert not answers(home.url)
    if "ARC_DATABASE_URL" in home.env:
        assert reset["flushed"] is True
    else:
        assert reset["removed"][0] == "arc.sqlite3"
        assert not (home.path / "arc.sqlite3").exists()
        assert not (home.path / "arc.sqlite3-wal").exists()

    code, restarted = home.json("ensure", "--timeout", "60")
    assert (code, restarted["started"]) == (0, True)
    with urllib.request.urlopen(f"{home.url}/v1/messages?channel=general", timeout=5) as response:
        assert json.loads(response.read())["result"] == []
    with urllib.request.urlopen(f"{home.url}/v1/channels", timeout=5) as response:
        assert {c["name"] for c in json.loads(response.read())["result"]} >= {"general", "direct"}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name: str, tmp_path: Path) -> None:
    result = manage(name, "--help", env=hub_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--database-url" in result.stdout
    assert "--port" in result.stdout


def test_discovery_finds_the_default_home_pidfile_from_a_subdirectory(tmp_path, monkeypatch):
    """A hub started in a project (pidfile in ./.arc) is found from a subdirectory of that project."""
    from coordination.process import discovery

    project = tmp_path / "project"
    (project / ".arc").mkdir(parents=True)
    (project / "src" / "deep").mkdir(parents=True)
    (project / ".arc" / ".arc.pid").write_text('{"pid": 4242, "port": 7001, "url": "http://127.0.0.1:7001"}')
    monkeypatch.chdir(project / "src" / "deep")

    found = discovery.pidfile_discover()

    assert found is not None
    assert found["url"] == "http://127.0.0.1:7001"
    assert found["path"] == str(project / ".arc" / ".arc.pid")


# ── Where commands keep state ──────────────────────────────────────────────


def _clean_env(home: Path) -> dict[str, str]:
    """No ARC_* variable and a HOME of the test's own: what a user's shell in a project looks like."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARC_", "XDG_"))}
    env["HOME"] = str(home)
    env["DJANGO_SETTINGS_MODULE"] = "arcsite.settings"
    return env


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "command",
    [
        ("post", "--agent", "alice", "--url", "http://127.0.0.1:9", "hello"),
        ("poll", "--agent", "alice", "--url", "http://127.0.0.1:9"),
        ("whoami", "--agent", "alice", "--url", "http://127.0.0.1:9"),
        ("mcp", "--agent", "alice", "--url", "http://127.0.0.1:9"),
    ],
    ids=lambda c: c[0],
)
def test_a_client_command_creates_no_hub_state_where_it_runs(tmp_path: Path, command: tuple[str, ...]) -> None:
    # MCP clients and hooks start these inside a user's project: no secret or database may appear there.
    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    home.mkdir()

    result = manage(*command, env=_clean_env(home), cwd=project)

    assert result.returncode == 1, result.stderr  # the hub is not there: a clean failure
    assert "Traceback" not in result.stderr
    assert _files(project) == []
    assert not [f for f in _files(home) if "arc-hub" in f and "state" not in f], _files(home)


def test_the_default_home_is_the_users_data_directory_not_the_working_directory(tmp_path: Path) -> None:
    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    home.mkdir()

    result = manage("keys", env=_clean_env(home), cwd=project)  # a hub-side command: it opens the database

    assert result.returncode == 0, result.stderr
    assert _files(project) == []
    data = home / ".local" / "share" / "arc-hub"
    assert (data / "secret_key").stat().st_mode & 0o777 == 0o600
    assert (data / "arc.sqlite3").exists()


def test_a_home_inside_a_repository_ignores_itself(tmp_path: Path) -> None:
    project, home = tmp_path / "project", tmp_path / "home"
    (project / ".git").mkdir(parents=True)
    home.mkdir()
    env = {**_clean_env(home), "ARC_HOME": str(project / ".arc")}

    result = manage("keys", env=env, cwd=project)

    assert result.returncode == 0, result.stderr
    assert (project / ".arc" / ".gitignore").read_text().splitlines()[-1] == "*"
    tracked = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", "init", "-q", str(project)], capture_output=True, check=False
    )
    if tracked.returncode == 0:  # with git on the machine: nothing of the hub's shows as a change
        status = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True)
        assert ".arc" not in status.stdout
