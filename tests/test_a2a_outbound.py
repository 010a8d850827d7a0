"""A2A outbound (docs/a2a.md): hub agents delegate to A2A agents elsewhere as to their own.

The agent elsewhere is the official ``a2a-sdk`` server (``tests.a2a_remote``), started here on loopback,
which the hub is allowed to reach (``ARC_A2A_ALLOW_NETWORKS=127.0.0.0/8``); an admin registers it with
``manage.py a2a add``; ada, a hub agent, hands it tasks over REST by its name or by a capability.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gateway import outbound
from tests.a2a_remote import Remote, serve
from tests.hubproc import ROOT, Hub, live_database, running_hub, start_hub

TOKEN = "tok-9f2c51e7-not-for-logs"
WAIT_SEC = 60


def a2a(
    hub: Hub, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``manage.py a2a …`` beside the hub, as its operator runs it."""
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "a2a", *args],
        env={**hub.env, **(env or {})},
        cwd=str(hub.home),
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


@pytest.fixture(scope="module")
def echo() -> Iterator[Remote]:
    remote = serve(token=TOKEN, streaming=True)
    yield remote
    remote.stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, echo: Remote) -> Iterator[Hub]:
    env = {"ARC_A2A_ALLOW_NETWORKS": "127.0.0.0/8", "ARC_A2A_TIMEOUT_SEC": "8", "ARC_A2A_ATTEMPTS": "3"}
    with running_hub(tmp_path_factory.mktemp("a2a-out"), args=("--no-relay",), extra_env=env) as hub:
        added = a2a(hub, "add", "echo", echo.url, "--credential-env", "ECHO_TOKEN", env={"ECHO_TOKEN": TOKEN})
        assert added.returncode == 0, added.stderr
        assert hub.call("POST", "/v1/sessions", {"agent_id": "ada"})[0] == 201
        yield hub


def delegate(hub: Hub, body: str, **to: Any) -> int:
    status, answer = hub.call("POST", "/v1/tasks", {"from_agent": "ada", "body": body, **to})
    assert status == 201, answer
    return int(answer["result"]["id"])


def finished(hub: Hub, task_id: int) -> dict[str, Any]:
    """The task once it is finished (the bridge answers it as the agent elsewhere)."""
    deadline = time.monotonic() + WAIT_SEC
    while time.monotonic() < deadline:
        _, listed = hub.call("GET", "/v1/tasks")
        task = next(t for t in listed["result"] if t["task_id"] == task_id)
        if task["status"] not in ("open", "in_progress"):
            return task
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} did not finish in {WAIT_SEC} s")


def hub_instance(hub: Hub) -> str:
    _, info = hub.call("GET", "/v1/hub-info")
    return str(info["result"]["instance_id"])


def answer_of(hub: Hub, task_id: int) -> dict[str, Any]:
    _, got = hub.call("GET", f"/v1/events?agent_id=ada&since_id={task_id}&timeout=0")
    return next(m for m in got["result"] if m["kind"] == "task_result" and m["reply_to"] == task_id)


def test_the_registered_agent_is_live_with_its_cards_skills_as_capabilities_and_its_credential_unshown(
    hub: Hub, echo: Remote
) -> None:
    _, roster = hub.call("GET", "/v1/agents")
    mine = next(s for s in roster["result"] if s["agent_id"] == "echo")
    assert mine["capabilities"] == ["echo", "repeat", "text-in"]
    assert mine["display_name"] == "Echo"
    assert mine["metadata"]["a2a"] == {"card_url": echo.url + "/.well-known/agent-card.json"}
    listed = a2a(hub, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert entry["has_credential"] is True
    assert entry["problem"] is None
    said = a2a(hub, "list").stdout + a2a(hub, "check", "echo").stdout
    assert "credential stored (not shown)" in said
    assert TOKEN not in listed.stdout + said


def test_a_task_by_name_is_sent_with_the_sdk_and_its_artifact_is_the_result(hub: Hub, echo: Remote) -> None:
    task_id = delegate(hub, "hello there", to_agent="echo")
    task = finished(hub, task_id)
    assert task["status"] == "done"
    assert task["assignee"] == "echo"
    answer = answer_of(hub, task_id)
    assert answer["from_agent"] == "echo"
    assert answer["body"] == "echo: hello there"
    [sent] = [m for m in echo.seen.message_ids if m.endswith(f"-task-{task_id}")]
    assert sent == f"arc-{hub_instance(hub)}-task-{task_id}"  # the hub's and the task's: the same on every attempt


def test_a_task_by_capability_reaches_it_like_a_local_worker(hub: Hub) -> None:
    task_id = delegate(hub, "by skill", to_capability="repeat")
    assert finished(hub, task_id)["status"] == "done"
    assert answer_of(hub, task_id)["body"] == "echo: by skill"


def test_its_failure_fails_the_task_with_its_reason(hub: Hub) -> None:
    task_id = delegate(hub, "fail on purpose", to_agent="echo")
    task = finished(hub, task_id)
    assert task["status"] == "failed"
    assert "cannot do that: fail on purpose" in task["failure_reason"]


def test_a_task_it_does_not_finish_in_time_fails_and_is_canceled_there(hub: Hub, echo: Remote) -> None:
    task_id = delegate(hub, "slow, never ends", to_agent="echo")  # ARC_A2A_TIMEOUT_SEC is 8 here
    task = finished(hub, task_id)
    assert task["status"] == "failed"
    assert "timed out waiting for the A2A agent" in task["failure_reason"]
    assert len(echo.seen.canceled) >= 1


def test_the_requester_failing_it_cancels_the_remote_task(hub: Hub, echo: Remote) -> None:
    before = len(echo.seen.canceled)
    task_id = delegate(hub, "slow, to be called off", to_agent="echo")
    deadline = time.monotonic() + WAIT_SEC
    while not any(m.endswith(f"-task-{task_id}") for m in echo.seen.message_ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    status, _ = hub.call("POST", f"/v1/tasks/{task_id}/fail", {"actor": "ada", "reason": "not needed"})
    assert status == 200
    while len(echo.seen.canceled) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(echo.seen.canceled) == before + 1
    assert finished(hub, task_id)["failure_reason"] == "not needed"


def test_an_agent_that_does_not_stream_is_answered_by_the_blocking_send(hub: Hub) -> None:
    plain = serve(token=TOKEN, streaming=False, name="Plain")
    try:
        added = a2a(hub, "add", "plain", plain.url + "/.well-known/agent-card.json", "--credential-stdin", stdin=TOKEN)
        assert added.returncode == 0, added.stderr
        task_id = delegate(hub, "no stream", to_agent="plain")
        assert finished(hub, task_id)["status"] == "done"
        assert answer_of(hub, task_id)["body"] == "echo: no stream"
    finally:
        plain.stop()
        assert a2a(hub, "remove", "plain").returncode == 0


def test_a_wrong_credential_fails_the_task_at_once_with_the_refusal(hub: Hub) -> None:
    other = serve(token="another-token", streaming=True, name="Locked")
    try:
        assert a2a(hub, "add", "locked", other.url, "--credential-env", "T", env={"T": TOKEN}).returncode == 0
        task_id = delegate(hub, "let me in", to_agent="locked")
        task = finished(hub, task_id)
        assert task["status"] == "failed"
        assert "answered with an error" in task["failure_reason"]
        assert other.seen.refused == 1  # refused once: not tried again
    finally:
        other.stop()
        a2a(hub, "remove", "locked")


def test_an_unreachable_agent_fails_the_task_after_bounded_attempts(hub: Hub) -> None:
    gone = serve(token=TOKEN, streaming=True, name="Gone")
    assert a2a(hub, "add", "gone", gone.url, "--credential-env", "T", env={"T": TOKEN}).returncode == 0
    gone.stop()
    task_id = delegate(hub, "anyone there?", to_agent="gone")
    task = finished(hub, task_id)
    assert task["status"] == "failed"
    assert "could not be reached (3 attempts)" in task["failure_reason"]
    removed = a2a(hub, "remove", "gone")
    assert removed.stdout.strip() == "removed gone"
    _, roster = hub.call("GET", "/v1/agents")
    assert "gone" not in [s["agent_id"] for s in roster["result"]]


@pytest.mark.parametrize(
    ("url", "allow", "said"),
    [
        ("file:///etc/passwd", "127.0.0.0/8", "only http and https URLs are followed, not file"),
        ("http://user:pw@127.0.0.1:9/", "127.0.0.0/8", "a URL carrying a user name or password is refused"),
        ("http://127.0.0.1:9/", "", "127.0.0.1, a loopback, private or link-local address"),
        ("http://169.254.169.254/latest", "127.0.0.0/8", "169.254.169.254, a loopback, private or link-local"),
        ("http://10.1.2.3/", "", "10.1.2.3, a loopback, private or link-local address"),
        ("http://[::1]:9/", "", "::1, a loopback, private or link-local address"),
        ("not a url", "", "only http and https URLs are followed, not a URL without a scheme"),
    ],
)
def test_hostile_card_urls_are_refused_with_a_clear_error(hub: Hub, url: str, allow: str, said: str) -> None:
    refused = a2a(hub, "add", "hostile", url, env={"ARC_A2A_ALLOW_NETWORKS": allow})
    assert refused.returncode == 1
    assert said in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "hostile" not in a2a(hub, "list").stdout


def test_a_card_whose_interface_leads_inside_is_refused(hub: Hub) -> None:
    inside = serve(token=TOKEN, streaming=True, name="Inside", interface_url="http://10.9.9.9/rpc")
    try:
        refused = a2a(hub, "add", "inside", inside.url)  # (its card's URL is allowed: loopback, here)
        assert refused.returncode == 1
        assert "10.9.9.9 is at 10.9.9.9, a loopback, private or link-local address" in refused.stderr
    finally:
        inside.stop()


def test_a_name_a_live_local_agent_holds_is_refused(hub: Hub, echo: Remote) -> None:
    refused = a2a(hub, "add", "ada", echo.url)
    assert refused.returncode == 1
    assert "ada is a live agent of this hub" in refused.stderr


def test_the_credential_is_never_in_the_hubs_log(hub: Hub) -> None:
    assert any("took duty a2a-outbound" in line for line in hub.output) or hub.output  # (it logged something)
    assert TOKEN not in "\n".join(hub.output)


def test_a_task_sent_before_a_restart_is_followed_there_not_sent_again(tmp_path: Any) -> None:
    env = {"ARC_A2A_ALLOW_NETWORKS": "127.0.0.0/8"}
    echo = serve(token=TOKEN, streaming=True)
    with live_database() as database_url:
        hub = start_hub(tmp_path, database_url=database_url, args=("--no-relay",), extra_env=env)
        try:
            assert a2a(hub, "add", "echo", echo.url, "--credential-env", "T", env={"T": TOKEN}).returncode == 0
            assert hub.call("POST", "/v1/sessions", {"agent_id": "ada"})[0] == 201
            task_id = delegate(hub, "wait restart", to_agent="echo")
            deadline = time.monotonic() + WAIT_SEC
            while (
                not any(m.endswith(f"-task-{task_id}") for m in echo.seen.message_ids) and time.monotonic() < deadline
            ):
                time.sleep(0.1)
            hub.stop()  # (a graceful stop: the bridge lets go of the task; the agent elsewhere works on)
            hub = start_hub(tmp_path, database_url=database_url, args=("--no-relay",), extra_env=env)
            echo.release("restart")
            assert finished(hub, task_id)["status"] == "done"
            assert answer_of(hub, task_id)["body"] == "echo: wait restart"
            assert len(echo.seen.message_ids) == 1
        finally:
            hub.stop()
            echo.stop()


def fake_resolver(table: dict[str, list[str]]) -> Any:
    def resolve(host: str) -> list[str]:
        if host not in table:
            raise OSError("Name or service not known")
        return table[host]

    return resolve


@pytest.mark.parametrize(
    ("addresses", "allow", "ok"),
    [
        (["93.184.215.14"], [], True),
        (["93.184.215.14", "10.0.0.7"], [], False),  # one address inside is enough to refuse
        (["fe80::1%eth0"], [], False),
        (["100.64.0.1"], [], False),  # shared address space (carrier-grade NAT) is not the public internet
        (["192.168.1.20"], ["192.168.1.0/24"], True),
        (["192.168.2.20"], ["192.168.1.0/24"], False),
        (["::ffff:127.0.0.1"], [], False),
    ],
)
def test_the_guard_refuses_any_address_off_the_public_internet_unless_allowed(
    settings: Any, addresses: list[str], allow: list[str], ok: bool
) -> None:
    settings.ARC_A2A_ALLOW_NETWORKS = allow
    resolve = fake_resolver({"agent.example": addresses})
    if ok:
        assert (
            outbound.target_check("https://agent.example/card.json", resolve=resolve)
            == "https://agent.example/card.json"
        )
    else:
        with pytest.raises(outbound.Refused, match="loopback, private or link-local"):
            outbound.target_check("https://agent.example/card.json", resolve=resolve)


def test_the_guard_says_what_is_wrong_with_a_url(settings: Any) -> None:
    settings.ARC_A2A_ALLOW_NETWORKS = []
    resolve = fake_resolver({})
    with pytest.raises(outbound.Unreachable, match=r"nowhere\.example does not resolve"):
        outbound.target_check("https://nowhere.example/", resolve=resolve)
    with pytest.raises(outbound.Refused, match="1 to 2000 characters"):
        outbound.target_check("https://a.example/" + "x" * 2000, resolve=resolve)
    with pytest.raises(outbound.Refused, match="names no host"):
        outbound.target_check("https:///card.json", resolve=resolve)
    assert (
        outbound.card_url_of("https://a.example/agents/x") == "https://a.example/agents/x/.well-known/agent-card.json"
    )
    assert outbound.card_url_of("https://a.example/my-card.json") == "https://a.example/my-card.json"
