"""``manage.py hook <client>``: a coding agent client's command hook, answered by the hub (docs/agents.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

from django.core.management.base import BaseCommand, CommandParser

from coordination.core.parsing import repository_name
from coordination.process.cli import KEY_ENV, add_location_arguments, agent_key, default_url

MAX_INPUT_BYTES = 1_000_000
CLIENTS = ("claude-code", "codex")


class Command(BaseCommand):
    help = (
        "Answer a Claude Code or Codex command hook as --agent: read the hook's JSON input on stdin, ask the hub "
        "(POST /v1/hooks/<client>), print the hook output on stdout. Fails open: when the hub is down, slow or "
        "refuses, it prints nothing and exits 0, saying why on stderr, so the client goes on as without the hook. "
        f"The agent key comes from --key-file (a file only you can read) or ${KEY_ENV}."
    )
    requires_system_checks: list[str] = []  # a hub client: it never opens the database

    def add_arguments(self, parser: CommandParser) -> None:
        add_location_arguments(parser)
        parser.add_argument("client", choices=CLIENTS, help="the client whose hook this is")
        parser.add_argument("--agent", required=True, help="the agent this client session is")
        parser.add_argument("--url", metavar="URL", help="hub URL (default: the running hub found through .arc.pid)")
        parser.add_argument("--key-file", metavar="FILE", help=f"file holding the agent key (default: ${KEY_ENV})")
        parser.add_argument(
            "--strict", action="store_true", help="refuse an edit of a file another agent locked (default: warn)"
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=4.0,
            metavar="SEC",
            help="give up on the hub after this long (default 4; keep it under the hook's own timeout)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        try:
            output = self._answer(options, started)
        except Exception as exc:  # noqa: BLE001 (fail open, whatever went wrong: the hub must not hold the client up)
            sys.stderr.write(f"arc hook: no answer from the hub ({type(exc).__name__}: {exc}); going on without it\n")
            return
        if output:
            sys.stdout.write(output + "\n")

    def _answer(self, options: dict[str, Any], started: float) -> str:
        raw = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        if len(raw) > MAX_INPUT_BYTES:
            raise ValueError(f"hook input over {MAX_INPUT_BYTES} bytes")
        payload = json.loads(raw or b"{}")
        if isinstance(payload, dict) and payload.get("cwd") and "repo_root" not in payload:
            payload.update(_repository(str(payload["cwd"])))
        url = (options["url"] or default_url()).rstrip("/")
        query = {"agent_id": options["agent"], **({"strict": "1"} if options["strict"] else {})}
        request = urllib.request.Request(
            f"{url}/v1/hooks/{options['client']}?{urlencode(query)}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", **_authorization(agent_key(options["key_file"]))},
            method="POST",
        )
        left = max(0.5, options["timeout"] - (time.monotonic() - started))
        try:
            with urllib.request.urlopen(request, timeout=left) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500]
            raise RuntimeError(f"HTTP {exc.code}: {detail}") from None
        if not isinstance(answer, dict):
            raise ValueError("the hub's answer is not a JSON object")
        return json.dumps(answer, ensure_ascii=False) if answer else ""


def _authorization(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _repository(cwd: str) -> dict[str, str]:
    """``repo_root`` (the working tree's top level) and ``repo`` (the repository's name, which its every
    worktree shares: its origin URL, else its common git directory), or nothing outside git."""
    out = _git(cwd, "rev-parse", "--show-toplevel", "--git-common-dir").splitlines()
    if len(out) != 2:
        return {}
    root, common = out
    origin = _git(cwd, "config", "--get", "remote.origin.url").strip()
    return {"repo_root": root, "repo": repository_name(origin) or os.path.normpath(os.path.join(cwd, common))}


def _git(cwd: str, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", cwd, *args], capture_output=True, text=True, timeout=1, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""
