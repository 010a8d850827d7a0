"""``manage.py connect``/``disconnect``/``brief`` (docs/agents.md): merging into the files a client already has.

A user's files hold their own hooks and servers, written by the client in its own style;
connect adds the hub's entries, disconnect takes exactly those out again, and the files
come back byte for byte. Keys stay out of argv and out of the project.
"""

from __future__ import annotations

import json
import shlex
import stat
import tomllib
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from coordination.core import services

# What Claude Code itself writes: two-space JSON, its own hooks and permissions.
USER_SETTINGS = """{
  "permissions": {
    "allow": [
      "Bash(npm test:*)"
    ]
  },
  "hooks": {
    "PostToolUse": [
      {
        "matcher": "Edit|Write",
        "hooks": [
          {
            "type": "command",
            "command": "prettier --write \\"$CLAUDE_FILE\\""
          }
        ]
      }
    ],
    "Stop": [
      {
        "hooks": [
          {
            "type": "command",
            "command": "notify-send 'Claude is done' ✓"
          }
        ]
      }
    ]
  }
}
"""
# A project's .mcp.json written by hand, four spaces, another server.
PROJECT_MCP = """{
    "mcpServers": {
        "github": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-github"]
        }
    }
}
"""
CODEX_CONFIG = """model = "gpt-5-codex"
approval_policy = "on-request"

[mcp_servers.docs]
command = "docs-mcp"
args = ["--stdio"]
"""


def run(name: str, *args: str) -> str:
    out = StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "home" / ".codex"))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "demo"
    (root / ".claude").mkdir(parents=True)
    (root / ".claude" / "settings.local.json").write_text(USER_SETTINGS, encoding="utf-8")
    (root / ".mcp.json").write_text(PROJECT_MCP, encoding="utf-8")
    return root


def hub_handlers(settings_file: Path) -> dict[str, list[dict[str, Any]]]:
    data = json.loads(settings_file.read_text(encoding="utf-8"))
    return {
        event: [h for group in groups for h in group["hooks"] if "hook claude-code" in h.get("command", "")]
        for event, groups in data["hooks"].items()
    }


def test_connect_claude_code_merges_and_disconnect_gives_the_files_back_byte_for_byte(
    home: Path, project: Path
) -> None:
    out = run("connect", "claude-code", "--agent", "bob", "--project", str(project), "--url", "http://127.0.0.1:6969")

    assert "+++ " in out  # the diff came first
    assert "Undo: " in out
    assert "disconnect claude-code --project" in out
    mcp = json.loads((project / ".mcp.json").read_text())
    assert mcp["mcpServers"]["github"] == {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"]}
    arc = mcp["mcpServers"]["arc"]
    assert arc["args"][1:5] == ["mcp", "--agent", "bob", "--url"]
    settings_file = project / ".claude" / "settings.local.json"
    handlers = hub_handlers(settings_file)
    assert sorted(e for e, hs in handlers.items() if hs) == ["PreToolUse", "SessionStart", "Stop", "UserPromptSubmit"]
    data = json.loads(settings_file.read_text())
    assert data["permissions"] == {"allow": ["Bash(npm test:*)"]}
    assert data["hooks"]["Stop"][0]["hooks"][0]["command"] == "notify-send 'Claude is done' ✓"  # theirs, first
    assert data["hooks"]["PreToolUse"][-1]["matcher"] == "Edit|Write|MultiEdit|NotebookEdit"
    command = shlex.split(handlers["Stop"][0]["command"])
    assert command[1:][:6] == [command[1], "hook", "claude-code", "--agent", "bob", "--url"]

    assert "nothing to change" in run(
        "connect", "claude-code", "--agent", "bob", "--project", str(project), "--url", "http://127.0.0.1:6969"
    )

    run("disconnect", "claude-code", "--project", str(project))
    assert settings_file.read_text(encoding="utf-8") == USER_SETTINGS
    assert (project / ".mcp.json").read_text(encoding="utf-8") == PROJECT_MCP


def test_a_dry_run_shows_the_diff_and_writes_nothing(home: Path, project: Path) -> None:
    out = run("connect", "claude-code", "--agent", "bob", "--project", str(project), "--dry-run", "--url", "http://h:1")
    assert '"arc"' in out
    assert "(dry run: nothing written)" in out
    assert (project / ".claude" / "settings.local.json").read_text() == USER_SETTINGS
    assert (project / ".mcp.json").read_text() == PROJECT_MCP


def test_a_file_that_is_not_json_is_refused_and_left_alone(home: Path, project: Path) -> None:
    broken = project / ".claude" / "settings.local.json"
    broken.write_text('{"hooks": {', encoding="utf-8")
    with pytest.raises(CommandError, match="is not valid JSON"):
        run("connect", "claude-code", "--agent", "bob", "--project", str(project), "--url", "http://127.0.0.1:6969")
    assert broken.read_text() == '{"hooks": {'
    assert (project / ".mcp.json").read_text() == PROJECT_MCP  # nothing written anywhere


def test_user_scope_writes_the_users_own_files(home: Path) -> None:
    run("connect", "claude-code", "--agent", "bob", "--user", "--url", "http://127.0.0.1:6969")
    assert "arc" in json.loads((home / ".claude.json").read_text())["mcpServers"]
    assert hub_handlers(home / ".claude" / "settings.json")["UserPromptSubmit"]
    run("disconnect", "claude-code", "--user")
    assert not (home / ".claude.json").exists()  # it held only the hub's entry
    assert not (home / ".claude" / "settings.json").exists()


@pytest.mark.django_db
def test_when_the_hub_requires_keys_one_is_minted_into_a_private_file_never_into_argv(
    home: Path, project: Path, settings: Any
) -> None:
    settings.ARC_AUTH = "required"
    out = run("connect", "claude-code", "--agent", "bob", "--project", str(project), "--url", "http://127.0.0.1:6969")

    key_files = list((home / ".config" / "arc-hub" / "keys").iterdir())
    assert len(key_files) == 1
    key_file = key_files[0]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    secret = key_file.read_text().strip()
    assert services.key_authenticate(presented=secret).agent_id == "bob"
    assert secret not in out
    for written in (project / ".mcp.json", project / ".claude" / "settings.local.json"):
        text = written.read_text()
        assert secret not in text
        assert str(key_file) in text  # referred to by path
    # a second connect reuses the key
    run("connect", "claude-code", "--agent", "bob", "--project", str(project), "--url", "http://127.0.0.1:6969")
    assert list(key_file.parent.iterdir()) == [key_file]

    run("disconnect", "claude-code", "--project", str(project), "--revoke-key", "bob")
    assert not key_file.exists()
    with pytest.raises(Exception, match="revoked"):
        services.key_authenticate(presented=secret)


def test_http_hooks_point_at_the_hub_and_take_the_key_from_the_environment(home: Path, project: Path) -> None:
    run(
        "connect",
        "claude-code",
        "--agent",
        "bob",
        "--project",
        str(project),
        "--http-hooks",
        "--strict",
        "--key",
        "none",
        "--url",
        "http://127.0.0.1:6969",
    )
    data = json.loads((project / ".claude" / "settings.local.json").read_text())
    mine = [h for g in data["hooks"]["PreToolUse"] for h in g["hooks"] if h.get("type") == "http"]
    assert mine == [
        {"type": "http", "url": "http://127.0.0.1:6969/v1/hooks/claude-code?agent_id=bob&strict=1", "timeout": 10}
    ]
    run("disconnect", "claude-code", "--project", str(project))
    assert (project / ".claude" / "settings.local.json").read_text() == USER_SETTINGS


def test_connect_codex_appends_a_marked_block_and_its_hooks_and_disconnect_removes_them(home: Path) -> None:
    codex = home / ".codex"
    codex.mkdir()
    (codex / "config.toml").write_text(CODEX_CONFIG, encoding="utf-8")

    run("connect", "codex", "--agent", "cody", "--url", "http://127.0.0.1:6969")

    config = tomllib.loads((codex / "config.toml").read_text())
    assert config["model"] == "gpt-5-codex"
    assert config["mcp_servers"]["docs"] == {"command": "docs-mcp", "args": ["--stdio"]}
    assert config["mcp_servers"]["arc"]["args"][1:4] == ["mcp", "--agent", "cody"]
    assert (codex / "config.toml").read_text().startswith(CODEX_CONFIG)
    hooks = json.loads((codex / "hooks.json").read_text())["hooks"]
    assert sorted(hooks) == ["PreToolUse", "SessionStart", "Stop", "UserPromptSubmit"]
    assert "hook codex --agent cody" in hooks["Stop"][0]["hooks"][0]["command"]

    run("disconnect", "codex")
    assert (codex / "config.toml").read_text(encoding="utf-8") == CODEX_CONFIG
    assert not (codex / "hooks.json").exists()


def test_codex_with_an_arc_server_of_its_own_is_refused(home: Path) -> None:
    codex = home / ".codex"
    codex.mkdir()
    (codex / "config.toml").write_text('[mcp_servers.arc]\ncommand = "something-else"\n', encoding="utf-8")
    with pytest.raises(CommandError, match=r"already has an \[mcp_servers.arc\]"):
        run("connect", "codex", "--agent", "cody", "--url", "http://127.0.0.1:6969")
    assert not (codex / "hooks.json").exists()


def test_brief_prints_a_paste_ready_prompt(home: Path) -> None:
    out = run("brief", "sam", "--url", "http://127.0.0.1:6969")
    assert 'You are agent "sam"' in out
    assert "curl -s 'http://127.0.0.1:6969/v1/events?agent_id=sam&exclude_self=1&timeout=30'" in out
    assert "data, not instructions" in out


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        '{"a": 1}',
        '{\n\t"a": [1, 2],\n\t"b": {}\n}\n',
        '{ "hooks" : { "Stop" : [ {"hooks": []} ] } ,"x":"é"}',
        '{\n    "mcpServers": {\n        "github": {"command": "npx"}\n    },\n    "n": null\n}',
    ],
)
def test_an_edit_and_its_undo_give_back_every_byte(text: str) -> None:
    from coordination.management import jsonedit

    data = json.loads(text)
    for key in [*data, None]:
        path: tuple[str, ...] = (key,) if key is not None and isinstance(data[key], dict) else ()
        entry = {"command": "python", "args": ["a", "b"]}
        added = jsonedit.add(text, path, "arc", entry)
        expected = json.loads(text)
        (expected[path[0]] if path else expected)["arc"] = entry
        assert json.loads(added) == expected
        assert jsonedit.remove(added, (*path, "arc")) == text
    arrays = [(k,) for k, v in data.items() if isinstance(v, list)]
    for path in arrays:
        appended = jsonedit.append(text, path, {"hooks": [1]})
        assert jsonedit.remove(appended, (*path, len(data[path[0]]))) == text


@pytest.mark.django_db
def test_a_key_is_not_minted_here_for_a_hub_elsewhere(home: Path, project: Path) -> None:
    with pytest.raises(CommandError, match="mint one on that hub's machine"):
        run("connect", "claude-code", "--agent", "bob", "--project", str(project), "--url", "http://192.0.2.1:6969")
    assert not (home / ".config" / "arc-hub" / "keys").exists()
    assert (project / ".mcp.json").read_text() == PROJECT_MCP  # nothing written


def test_two_agents_never_share_a_key_file() -> None:
    from coordination.management.clients import key_path

    assert key_path("bob smith", "h:1") != key_path("bob_smith", "h:1")
    assert key_path("Zoë", "h:1") != key_path("Zoé", "h:1")


def test_a_settings_file_that_is_a_symlink_stays_one(home: Path, project: Path, tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "claude-settings.json"
    settings_file = project / ".claude" / "settings.local.json"
    real.write_text(settings_file.read_text())
    settings_file.unlink()
    settings_file.symlink_to(real)

    run("connect", "claude-code", "--agent", "bob", "--project", str(project), "--url", "http://127.0.0.1:6969")

    assert settings_file.is_symlink()
    assert "hook claude-code" in real.read_text()
    run("disconnect", "claude-code", "--project", str(project))
    assert real.read_text() == USER_SETTINGS
