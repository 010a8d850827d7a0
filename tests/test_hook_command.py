"""``manage.py hook`` run as Claude Code runs a command hook: the event JSON on stdin, a live hub (docs/agents.md).

And when the hub is gone: the hook prints nothing, exits 0 and says why on stderr, in time.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hubproc import ROOT, Hub, mint_key, running_hub

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("hooks"), args=("--no-relay",)) as hub:
        yield hub


def run_hook(
    url: str, event: dict[str, Any], *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ARC_")}
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "hook", "claude-code", "--url", url, *args],
        input=json.dumps(event),
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def event(name: str, session: str, **fields: Any) -> dict[str, Any]:
    return {
        "session_id": session,
        "transcript_path": "/tmp/t.jsonl",
        "cwd": str(ROOT),
        "hook_event_name": name,
        **fields,
    }


def test_a_prompt_hook_prints_the_new_messages_as_additional_context(hub: Hub) -> None:
    run_hook(hub.url, event("SessionStart", "s1", source="startup"), "--agent", "dana")
    status, posted = hub.call("POST", "/v1/messages", {"from_agent": "erin", "to_agent": "dana", "body": "PR #12 ok?"})
    assert status == 201

    done = run_hook(hub.url, event("UserPromptSubmit", "s1", prompt="next"), "--agent", "dana")

    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)
    assert output["hookSpecificOutput"]["hookEventName"] == "UserPromptSubmit"
    assert "PR #12 ok?" in output["hookSpecificOutput"]["additionalContext"]
    _, status_answer = hub.call("GET", f"/v1/messages/{posted['result']['id']}/status")
    assert status_answer["result"]["recipients"][0]["state"] == "delivered"
    # nothing new: nothing printed at all (an empty stdout is "no opinion" to the client)
    again = run_hook(hub.url, event("UserPromptSubmit", "s1", prompt="next"), "--agent", "dana")
    assert again.returncode == 0
    assert again.stdout == ""


def test_stop_blocks_through_the_command_with_the_decision_json(hub: Hub) -> None:
    run_hook(hub.url, event("SessionStart", "s2"), "--agent", "fay")
    hub.call("POST", "/v1/messages", {"from_agent": "erin", "to_agent": "fay", "body": "are you there?"})
    done = run_hook(hub.url, event("Stop", "s2", stop_hook_active=False), "--agent", "fay")
    output = json.loads(done.stdout)
    assert output["decision"] == "block"
    assert "are you there?" in output["reason"]


def test_the_key_comes_from_a_file_and_names_the_agent(hub: Hub, tmp_path: Path) -> None:
    key_file = tmp_path / "gus.key"
    key_file.write_text(mint_key(hub, "gus") + "\n")
    key_file.chmod(0o600)
    hub.call("POST", "/v1/messages", {"from_agent": "erin", "to_agent": "gus", "body": "hello gus"})
    done = run_hook(hub.url, event("SessionStart", "s3"), "--agent", "gus", "--key-file", str(key_file))
    assert "hello gus" in json.loads(done.stdout)["hookSpecificOutput"]["additionalContext"]
    # a key of another agent is refused by the hub: the hook still fails open
    wrong = run_hook(hub.url, event("SessionStart", "s3"), "--agent", "erin", "--key-file", str(key_file))
    assert wrong.returncode == 0
    assert wrong.stdout == ""
    assert "HTTP 403" in wrong.stderr


def test_the_edit_of_a_locked_file_names_the_holder_relative_to_the_repository(hub: Hub) -> None:
    hub.call("POST", "/v1/locks", {"file_path": "docs/agents.md", "agent_id": "erin", "ttl_sec": 600})
    edit = event("PreToolUse", "s4", tool_name="Write", tool_input={"file_path": str(ROOT / "docs" / "agents.md")})
    warned = json.loads(run_hook(hub.url, edit, "--agent", "hal").stdout)
    assert "locked by erin" in warned["systemMessage"]
    refused = json.loads(run_hook(hub.url, edit, "--agent", "hal", "--strict").stdout)
    assert refused["hookSpecificOutput"]["permissionDecision"] == "deny"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_with_the_hub_down_the_hook_fails_open_in_time() -> None:
    started = time.monotonic()
    done = run_hook(f"http://127.0.0.1:{_closed_port()}", event("UserPromptSubmit", "s5"), "--agent", "ivy")
    assert done.returncode == 0
    assert done.stdout == ""
    assert "no answer from the hub" in done.stderr
    assert time.monotonic() - started < 30  # the client's own default timeout is 60 s


def test_a_hub_that_accepts_but_never_answers_is_given_up_on_at_the_timeout() -> None:
    with socket.socket() as silent:  # listens, never reads, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        done = run_hook(
            f"http://127.0.0.1:{silent.getsockname()[1]}", event("Stop", "s6"), "--agent", "ivy", "--timeout", "1"
        )
    assert done.returncode == 0
    assert done.stdout == ""
    assert "timed out" in done.stderr


def test_input_that_is_not_json_fails_open_too(hub: Hub) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ARC_")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "hook", "claude-code", "--url", hub.url, "--agent", "ivy"],
        input="{not json",
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert done.stdout == ""
    assert "JSONDecodeError" in done.stderr


def test_what_a_hook_showed_is_not_polled_again_through_the_mcp_tools(hub: Hub) -> None:
    import anyio
    from mcp import Client, StdioServerParameters

    run_hook(hub.url, event("SessionStart", "s7"), "--agent", "jo")
    hub.call("POST", "/v1/messages", {"from_agent": "erin", "to_agent": "jo", "body": "seen at the prompt"})
    shown = run_hook(hub.url, event("UserPromptSubmit", "s7"), "--agent", "jo")
    assert "seen at the prompt" in shown.stdout

    async def poll_twice() -> list[list[str]]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("ARC_")}
        params = StdioServerParameters(
            command=sys.executable, args=[str(ROOT / "manage.py"), "mcp", "--agent", "jo", "--url", hub.url], env=base
        )
        bodies = []
        async with Client(params) as client:
            for _ in range(2):
                result = await client.call_tool("arc_poll_messages", {"timeout": 0})
                assert isinstance(result.structured_content, dict)
                bodies.append([m["body"] for m in result.structured_content["messages"]])
                hub.call("POST", "/v1/messages", {"from_agent": "erin", "to_agent": "jo", "body": "after the prompt"})
        return bodies

    first, second = anyio.run(poll_twice)
    assert first == []
    assert len(second) == 1
    assert "after the prompt" in second[0]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed: no worktrees to make")
def test_two_git_worktrees_share_their_locks_through_the_command_hook(hub: Hub, tmp_path: Path) -> None:
    main, feature = tmp_path / "app", tmp_path / "app-feature"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", str(main)], check=True)
    (main / "app.py").write_text("print(1)\n")
    subprocess.run([*git, "-C", str(main), "add", "."], check=True)
    subprocess.run([*git, "-C", str(main), "commit", "-qm", "one"], check=True)
    subprocess.run([*git, "-C", str(main), "worktree", "add", "-q", str(feature)], check=True)

    for agent, tree in (("kim", main), ("lou", feature)):
        start = {"session_id": f"wt-{agent}", "cwd": str(tree), "hook_event_name": "SessionStart"}
        assert run_hook(hub.url, start, "--agent", agent).returncode == 0
    status, locked = hub.call("POST", "/v1/locks", {"file_path": str(main / "app.py"), "agent_id": "kim"})
    assert status == 201, locked
    assert locked["result"]["file_path"].endswith(":app.py")

    edit = {
        "session_id": "wt-lou",
        "cwd": str(feature),
        "hook_event_name": "PreToolUse",
        "tool_name": "Edit",
        "tool_input": {"file_path": str(feature / "app.py")},
    }
    warned = json.loads(run_hook(hub.url, edit, "--agent", "lou").stdout)
    assert "is locked by kim" in warned["systemMessage"]


def test_a_hub_that_was_stopped_leaves_the_hook_silent_and_the_client_going(tmp_path: Path) -> None:
    with running_hub(tmp_path / "gone", args=("--no-relay",)) as hub:
        assert run_hook(hub.url, event("SessionStart", "s8"), "--agent", "max").returncode == 0
        hub.stop()
        started = time.monotonic()
        done = run_hook(hub.url, event("UserPromptSubmit", "s8", prompt="still there?"), "--agent", "max")
    assert done.returncode == 0
    assert done.stdout == ""
    assert "no answer from the hub" in done.stderr
    assert time.monotonic() - started < 30
