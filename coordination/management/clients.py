"""Writing the hub into a coding agent client's configuration, and taking it out again (docs/agents.md).

``manage.py connect <client>`` and ``disconnect <client>`` share this. Each client's files
are merged, never replaced: what the hub owns is found by what it is (the MCP server entry
named ``arc``; hook commands that run ``manage.py hook <client>``; in TOML, the block between
the hub's own marker comments), everything else is kept as it was. JSON is written back in
the indentation it was read in, so a file a client wrote itself keeps its bytes where the hub
did not touch it, and ``disconnect`` after ``connect`` gives back the file it found.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings

from coordination.management import jsonedit

SERVER_NAME = "arc"
HOOK_TIMEOUT_SEC = 10
# (event, matcher) pairs the hub answers; the edit tools' names as each client calls them
CLAUDE_HOOKS = (
    ("SessionStart", None),
    ("UserPromptSubmit", None),
    ("Stop", None),
    ("PreToolUse", "Edit|Write|MultiEdit|NotebookEdit"),
)
CODEX_HOOKS = (("SessionStart", None), ("UserPromptSubmit", None), ("Stop", None), ("PreToolUse", "apply_patch"))
TOML_BEGIN = "# >>> arc hub (manage.py connect codex): managed block, `manage.py disconnect codex` removes it"
TOML_END = "# <<< arc hub"


class ConfigError(Exception):
    """A client file the hub cannot merge into (not JSON, not an object, a clashing entry): nothing is written."""


@dataclass
class Change:
    """One file's new text (``None``: delete it, it held only what the hub had put there)."""

    path: Path
    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        lines = difflib.unified_diff(
            (self.before or "").splitlines(keepends=True),
            (self.after or "").splitlines(keepends=True),
            fromfile=f"{self.path} (before)" if self.before is not None else "/dev/null",
            tofile=f"{self.path} (after)" if self.after is not None else "/dev/null",
        )
        return "".join(lines)

    def apply(self) -> None:
        if not self.changed:
            return
        if self.after is None:
            self.path.unlink(missing_ok=True)
            return
        target = self.path.resolve() if self.path.is_symlink() else self.path  # a linked file stays linked
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o600
        tmp = target.with_name(f".{target.name}.arc-{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)  # its mode from the start, not umask's
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(self.after)
        os.chmod(tmp, mode)
        tmp.replace(target)


# ── commands the client runs ──────────────────────────────────────────────


def manage_command(*args: str) -> list[str]:
    """This checkout's ``manage.py`` run by this Python, as a client starts it."""
    return [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), *args]


def hook_command(client: str, agent: str, url: str, key_file: Path | None, strict: bool) -> str:
    args = ["hook", client, "--agent", agent, "--url", url]
    if key_file is not None:
        args += ["--key-file", str(key_file)]
    if strict:
        args.append("--strict")
    return shlex.join(manage_command(*args))


def mcp_args(agent: str, url: str, key_file: Path | None, tools: str) -> list[str]:
    args = ["mcp", "--agent", agent, "--url", url, "--tools", tools]
    if key_file is not None:
        args += ["--key-file", str(key_file)]
    return manage_command(*args)


def is_ours(handler: Any, client: str) -> bool:
    """Is this hook handler one ``connect`` wrote (a command running ``manage.py hook <client>``, or an HTTP
    hook to the hub's ``/v1/hooks/<client>``)?"""
    if not isinstance(handler, dict):
        return False
    command, url = handler.get("command"), handler.get("url")
    if isinstance(command, str) and re.search(rf"manage\.py'? hook {re.escape(client)}\b", command):
        return True
    return isinstance(url, str) and f"/v1/hooks/{client}?" in url


def codex_home() -> str:
    return os.environ.get("CODEX_HOME") or str(Path.home() / ".codex")


# ── JSON files ────────────────────────────────────────────────────────────


class JsonText:
    """A JSON object's text being edited in place (``coordination.management.jsonedit``)."""

    def __init__(self, text: str) -> None:
        self.text = text

    @property
    def data(self) -> dict[str, Any]:
        value = json.loads(self.text)
        assert isinstance(value, dict)
        return value

    def put(self, path: jsonedit.Path, key: str, value: Any) -> None:
        """Member ``key`` of the object at ``path`` set to ``value`` (replaced if there, else added last)."""
        if key in _at(self.data, path):
            self.text = jsonedit.remove(self.text, (*path, key))
        self.text = jsonedit.add(self.text, path, key, value)

    def append(self, path: jsonedit.Path, value: Any) -> None:
        self.text = jsonedit.append(self.text, path, value)

    def remove(self, path: jsonedit.Path) -> None:
        self.text = jsonedit.remove(self.text, path)


def _at(data: Any, path: jsonedit.Path) -> Any:
    for step in path:
        data = data[step]
    return data


def edit_json(path: Path, edit: Callable[[JsonText], None]) -> Change:
    """``edit`` applied to the JSON object in ``path`` (absent: ``{}``), splicing its text: untouched bytes stay."""
    before = path.read_text(encoding="utf-8") if path.exists() else None
    source = before if before is not None and before.strip() else "{}"
    try:
        value = json.loads(source)
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}): fix or move it, then run this again") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path} holds a JSON {type(value).__name__}, not an object: the hub will not touch it")
    doc = JsonText(source)
    edit(doc)
    if not doc.data:
        return Change(path, before, None)  # only the hub's entries were in it (or it never existed)
    after = doc.text if before is not None and before.strip() else doc.text + "\n"
    return Change(path, before, after)


def hooks_set(client: str, events: tuple[tuple[str, str | None], ...], command: str) -> Callable[[JsonText], None]:
    """An edit that gives each of ``events`` the hub's command hook, replacing the hub's own earlier ones."""
    return _hooks_with(client, events, {"type": "command", "command": command, "timeout": HOOK_TIMEOUT_SEC})


def http_hooks_set(agent: str, url: str, *, authorized: bool, strict: bool) -> Callable[[JsonText], None]:
    """Claude Code's HTTP hooks to the hub (the key, when there is one, from ``$ARC_AGENT_KEY``)."""
    query = urlencode({"agent_id": agent, **({"strict": "1"} if strict else {})})
    handler: dict[str, Any] = {
        "type": "http",
        "url": f"{url}/v1/hooks/claude-code?{query}",
        "timeout": HOOK_TIMEOUT_SEC,
    }
    if authorized:
        handler["headers"] = {"Authorization": "Bearer $ARC_AGENT_KEY"}
        handler["allowedEnvVars"] = ["ARC_AGENT_KEY"]
    return _hooks_with("claude-code", CLAUDE_HOOKS, handler)


def _hooks_with(
    client: str, events: tuple[tuple[str, str | None], ...], handler: dict[str, Any]
) -> Callable[[JsonText], None]:
    def group(matcher: str | None) -> dict[str, Any]:
        return {**({"matcher": matcher} if matcher is not None else {}), "hooks": [dict(handler)]}

    def edit(doc: JsonText) -> None:
        hooks_remove(client)(doc)
        hooks = doc.data.get("hooks")
        if hooks is None:
            doc.put((), "hooks", {event: [group(matcher)] for event, matcher in events})
            return
        if not isinstance(hooks, dict):
            raise ConfigError('"hooks" is not an object: the hub will not touch it')
        for event, matcher in events:
            if event not in hooks:
                doc.put(("hooks",), event, [group(matcher)])
            elif isinstance(hooks[event], list):
                doc.append(("hooks", event), group(matcher))
            else:
                raise ConfigError(f'"hooks.{event}" is not a list: the hub will not touch it')

    return edit


def hooks_remove(client: str) -> Callable[[JsonText], None]:
    """An edit that takes out every hook the hub wrote for ``client``, and the lists and objects that leaves empty."""

    def edit(doc: JsonText) -> None:
        while (found := _first_ours(doc.data, client)) is not None:
            event, group, handler = found
            hooks = doc.data["hooks"]
            if len(hooks[event][group]["hooks"]) > 1:
                doc.remove(("hooks", event, group, "hooks", handler))
            elif len(hooks[event]) > 1:
                doc.remove(("hooks", event, group))
            elif len(hooks) > 1:
                doc.remove(("hooks", event))
            else:
                doc.remove(("hooks",))

    return edit


def _first_ours(data: dict[str, Any], client: str) -> tuple[str, int, int] | None:
    hooks = data.get("hooks")
    if not isinstance(hooks, dict):
        return None
    for event, groups in hooks.items():
        for g, group in enumerate(groups if isinstance(groups, list) else []):
            handlers = group.get("hooks") if isinstance(group, dict) else None
            for h, handler in enumerate(handlers if isinstance(handlers, list) else []):
                if is_ours(handler, client):
                    return event, g, h
    return None


def server_set(entry: dict[str, Any]) -> Callable[[JsonText], None]:
    def edit(doc: JsonText) -> None:
        servers = doc.data.get("mcpServers")
        if servers is None:
            doc.put((), "mcpServers", {SERVER_NAME: entry})
        elif isinstance(servers, dict):
            if servers.get(SERVER_NAME) != entry:
                doc.put(("mcpServers",), SERVER_NAME, entry)
        else:
            raise ConfigError('"mcpServers" is not an object: the hub will not touch it')

    return edit


def server_remove(doc: JsonText) -> None:
    servers = doc.data.get("mcpServers")
    if isinstance(servers, dict) and SERVER_NAME in servers:
        doc.remove(("mcpServers",) if len(servers) == 1 else ("mcpServers", SERVER_NAME))


# ── TOML (Codex) ──────────────────────────────────────────────────────────


def toml_block_set(path: Path, block: str | None) -> Change:
    """``path`` with the hub's marked block replaced by ``block`` (``None``: removed), the rest untouched."""
    before = path.read_text(encoding="utf-8") if path.exists() else None
    text = before or ""
    start, end = text.find(TOML_BEGIN), text.find(TOML_END)
    if start != -1 and end != -1:
        tail = text[end + len(TOML_END) :]
        text = text[:start].rstrip("\n") + ("\n" if text[:start].strip() else "") + tail.lstrip("\n")
    try:
        existing = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}): fix or move it, then run this again") from None
    if block is not None:
        servers = existing.get("mcp_servers")
        if isinstance(servers, dict) and SERVER_NAME in servers:
            raise ConfigError(
                f"{path} already has an [mcp_servers.{SERVER_NAME}] the hub did not write: rename or remove it first"
            )
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + f"{TOML_BEGIN}\n{block.rstrip()}\n{TOML_END}\n"
    return Change(path, before, text if text.strip() else None)


def toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


# ── keys ──────────────────────────────────────────────────────────────────


def key_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "arc-hub" / "keys"


def key_path(agent: str, instance: str) -> Path:
    """Where connect keeps ``agent``'s key for the hub at ``instance`` (host:port): one file per agent (the
    name percent-encoded, so two agents never share one; ``instance`` may be ``*`` for a glob)."""
    return key_dir() / f"{quote(agent, safe='')}@{instance}.key"


def key_write(path: Path, secret: str) -> None:
    """The key in a file only its owner can read, in a directory only its owner can list."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(secret + "\n")
    path.chmod(0o600)
