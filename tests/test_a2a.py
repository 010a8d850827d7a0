"""A2A inbound (docs/a2a.md): the official ``a2a-sdk`` client against a live hub.

wren is a hub agent (a worker registered with a capability, answering its tasks over REST, as any
hub agent does); the A2A client finds her by her card and sends her work.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskState,
)

from tests.hubproc import Hub, manage, mint_key, running_hub

pytestmark = pytest.mark.live
WAIT_SEC = 60


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("a2a"), args=("--no-relay",)) as hub:
        status, _ = hub.call("POST", "/v1/sessions", {"agent_id": "wren", "capabilities": ["summarize", "review"]})
        assert status == 201
        yield hub


def answer_next_task(hub: Hub, agent: str, reply: str, since: int | None = None) -> threading.Thread:
    """``agent`` takes the next task_request for it from its feed and answers it (a worker, over REST).

    The next one: posted after this call (its feed is read from the newest message now).
    """
    _, boot = hub.call("GET", f"/v1/bootstrap?agent_id={agent}")
    start = int(boot["result"]["latest_visible_id"]) if since is None else since

    def work() -> None:
        since = start
        while True:
            _, got = hub.call("GET", f"/v1/events?agent_id={agent}&since_id={since}&timeout=30", timeout=WAIT_SEC)
            for message in got["result"]:
                since = max(since, message["id"])
                if message["kind"] == "task_request":
                    hub.call("POST", f"/v1/tasks/{message['id']}/result", {"from_agent": agent, "body": reply})
                    return

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def hub_task(hub: Hub, task_id: str) -> dict[str, Any]:
    _, listed = hub.call("GET", "/v1/tasks")
    return next(t for t in listed["result"] if str(t["task_id"]) == task_id)


def text_message(text: str, **fields: Any) -> Message:
    return Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[Part(text=text)], **fields)


async def send(
    url: str, request: Any, *, key: str | None = None, method: str = "send_message", binding: str = "JSONRPC"
) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(headers=headers, timeout=WAIT_SEC) as http:
        config = ClientConfig(streaming=False, httpx_client=http, supported_protocol_bindings=[binding])
        client = await create_client(url, client_config=config)
        if method == "send_message":
            responses = [r async for r in client.send_message(request)]
            assert len(responses) == 1
            return responses[0].task
        return await getattr(client, method)(request)


def test_the_hub_card_lists_its_agents_skills_and_each_agent_has_a_card_with_its_tenant(hub: Hub) -> None:
    with urllib.request.urlopen(hub.url + "/.well-known/agent-card.json", timeout=WAIT_SEC) as response:
        card = json.loads(response.read())
    assert card["name"] == "Arc hub"
    assert {s["id"] for s in card["skills"]} >= {"wren:summarize", "wren:review"}
    assert [i["protocolBinding"] for i in card["supportedInterfaces"]] == ["JSONRPC", "HTTP+JSON"]
    assert card["securitySchemes"]["arcKey"]["httpAuthSecurityScheme"]["scheme"] == "bearer"
    with urllib.request.urlopen(hub.url + "/a2a/agents/wren/.well-known/agent-card.json", timeout=WAIT_SEC) as r:
        wren = json.loads(r.read())
    assert wren["name"] == "wren"
    assert wren["supportedInterfaces"][0]["tenant"] == "wren"
    assert wren["supportedInterfaces"][0]["url"] == hub.url + "/a2a"
    assert wren["supportedInterfaces"][1] == {
        "url": hub.url + "/a2a/rest",
        "protocolBinding": "HTTP+JSON",
        "tenant": "wren",
        "protocolVersion": "1.0",
    }


def test_a_blocking_send_returns_the_finished_task_with_the_answer_as_artifact(hub: Hub) -> None:
    worker = answer_next_task(hub, "wren", "Three points: a, b, c.")
    task: Task = anyio.run(send, hub.url + "/a2a/agents/wren", SendMessageRequest(message=text_message("Summarize X")))
    worker.join(WAIT_SEC)
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert [p.text for a in task.artifacts for p in a.parts] == ["Three points: a, b, c."]
    assert task.history[0].parts[0].text == "Summarize X"
    # it is the hub's task: REST sees the same one, done, assigned to wren
    rest = hub_task(hub, task.id)
    assert (rest["status"], rest["assignee"]) == ("done", "wren")


def test_the_rest_binding_serves_the_same_tasks_with_the_tenant_in_the_path(hub: Hub) -> None:
    url = hub.url + "/a2a/agents/wren"
    worker = answer_next_task(hub, "wren", "over REST")
    task: Task = anyio.run(lambda: send(url, SendMessageRequest(message=text_message("rest?")), binding="HTTP+JSON"))
    worker.join(WAIT_SEC)
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    got: Task = anyio.run(lambda: send(url, GetTaskRequest(id=task.id), method="get_task", binding="HTTP+JSON"))
    assert [p.text for a in got.artifacts for p in a.parts] == ["over REST"]
    plain = urllib.request.Request(f"{hub.url}/a2a/rest/wren/tasks/{task.id}", headers={"A2A-Version": "1.0"})
    with urllib.request.urlopen(plain, timeout=WAIT_SEC) as response:
        assert json.loads(response.read())["id"] == task.id
    # no A2A-Version header reads as 0.3, which this hub does not speak: the spec's version error
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{hub.url}/a2a/rest/wren/tasks/{task.id}", timeout=WAIT_SEC)
    assert refused.value.code == 400
    assert "version" in refused.value.read().decode().lower()


def test_return_immediately_then_get_task_sees_it_finish(hub: Hub) -> None:
    url = hub.url + "/a2a/agents/wren"
    request = SendMessageRequest(
        message=text_message("Review Y", context_id="release-7"),
        configuration=SendMessageConfiguration(return_immediately=True),
    )
    worker = answer_next_task(hub, "wren", "LGTM")
    task: Task = anyio.run(send, url, request)
    assert task.status.state in (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_COMPLETED)
    assert task.context_id == "release-7"  # the thread
    worker.join(WAIT_SEC)
    again: Task = anyio.run(lambda: send(url, GetTaskRequest(id=task.id), method="get_task"))
    assert again.status.state == TaskState.TASK_STATE_COMPLETED
    listed = anyio.run(lambda: send(url, ListTasksRequest(context_id="release-7"), method="list_tasks"))
    assert [t.id for t in listed.tasks] == [task.id]


async def stream(url: str, request: Any, *, subscribe: bool = False) -> list[Any]:
    """Every event of a streaming send (or of a subscription), as the SDK's streaming client yields them."""
    async with httpx.AsyncClient(timeout=WAIT_SEC) as http:
        client = await create_client(url, client_config=ClientConfig(streaming=True, httpx_client=http))
        events = client.subscribe(request) if subscribe else client.send_message(request)
        return [event async for event in events]


def kinds(events: list[Any]) -> list[str]:
    return [str(e.WhichOneof("payload")) for e in events]


def test_a_streaming_send_tells_each_state_and_the_artifact_then_ends(hub: Hub) -> None:
    worker = answer_next_task(hub, "wren", "streamed answer")
    events = anyio.run(stream, hub.url + "/a2a/agents/wren", SendMessageRequest(message=text_message("stream it")))
    worker.join(WAIT_SEC)
    assert kinds(events)[0] == "task"
    assert kinds(events)[-2:] == ["artifact_update", "status_update"]
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    assert events[-2].artifact_update.artifact.parts[0].text == "streamed answer"


def test_subscribing_to_a_task_follows_it_from_where_it_is(hub: Hub) -> None:
    url = hub.url + "/a2a/agents/wren"
    request = SendMessageRequest(
        message=text_message("follow me"), configuration=SendMessageConfiguration(return_immediately=True)
    )
    task: Task = anyio.run(send, url, request)
    hub.call("POST", f"/v1/tasks/{task.id}/start", {})  # wren starts it before anyone subscribes
    worker = answer_next_task(hub, "wren", "followed", since=int(task.id) - 1)
    events = anyio.run(lambda: stream(url, SubscribeToTaskRequest(id=task.id), subscribe=True))
    worker.join(WAIT_SEC)
    assert events[0].task.status.state in (TaskState.TASK_STATE_WORKING, TaskState.TASK_STATE_COMPLETED)
    assert events[-1].WhichOneof("payload") in ("status_update", "task")
    final = events[-1].status_update.status if events[-1].HasField("status_update") else events[-1].task.status
    assert final.state == TaskState.TASK_STATE_COMPLETED


def test_a_retried_message_is_one_task(hub: Hub) -> None:
    url = hub.url + "/a2a/agents/wren"
    message = text_message("only once")
    request = SendMessageRequest(message=message, configuration=SendMessageConfiguration(return_immediately=True))
    first: Task = anyio.run(send, url, request)
    second: Task = anyio.run(send, url, request)
    assert first.id == second.id


def test_keys_and_scopes_are_the_hubs(hub: Hub) -> None:
    url = hub.url + "/a2a/agents/wren"
    request = SendMessageRequest(
        message=text_message("with a key"), configuration=SendMessageConfiguration(return_immediately=True)
    )
    key = mint_key(hub, "yara")
    task: Task = anyio.run(lambda: send(url, request, key=key))
    assert hub_task(hub, task.id)["requester"] == "yara"
    hub.call("POST", "/v1/channels", {"name": "secret"})
    _, posted = hub.call(
        "POST",
        "/v1/messages",
        {"from_agent": "vic", "to_agent": "wren", "channel": "secret", "kind": "task_request", "body": "hush"},
    )
    scoped = mint_key(hub, "zed", "--rooms", "general")
    with pytest.raises(Exception, match="HTTP 403"):
        anyio.run(lambda: send(url, GetTaskRequest(id=str(posted["result"]["id"])), key=scoped, method="get_task"))
    status, body = raw(hub, b'{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "1"}}', key="arc_x_y")
    assert status == 401
    assert body["ok"] is False
    revoked = mint_key(hub, "yves")
    anyio.run(lambda: send(url, GetTaskRequest(id=task.id), key=revoked, method="get_task"))  # (works until revoked)
    manage(hub, "revoke", revoked)
    status, body = raw(hub, b'{"jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": {"id": "1"}}', key=revoked)
    assert status == 401
    assert "revoked" in body["error"]


def test_a_task_between_two_other_agents_shows_its_state_but_not_their_words(hub: Hub) -> None:
    _, posted = hub.call(
        "POST",
        "/v1/messages",
        {"from_agent": "uma", "to_agent": "wren", "kind": "task_request", "body": "private request"},
    )
    task_id = str(posted["result"]["id"])
    hub.call("POST", f"/v1/tasks/{task_id}/result", {"from_agent": "wren", "body": "private answer"})
    carol = mint_key(hub, "carol")  # a key for every room, a party to neither message
    task: Task = anyio.run(
        lambda: send(hub.url + "/a2a/agents/wren", GetTaskRequest(id=task_id), key=carol, method="get_task")
    )
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert list(task.history) == []
    assert list(task.artifacts) == []
    uma = mint_key(hub, "uma")  # the requester reads both
    mine: Task = anyio.run(
        lambda: send(hub.url + "/a2a/agents/wren", GetTaskRequest(id=task_id), key=uma, method="get_task")
    )
    assert mine.history[0].parts[0].text == "private request"
    assert mine.artifacts[0].parts[0].text == "private answer"


def raw(hub: Hub, data: bytes, *, key: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", "A2A-Version": "1.0"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(hub.url + "/a2a", data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=WAIT_SEC) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_bad_input_gets_the_protocols_error_never_a_500(hub: Hub) -> None:
    status, body = raw(hub, b'{"jsonrpc": "2.0", "id": 1, "method": ')
    assert status == 400
    assert "JSON" in body["error"]
    status, body = raw(hub, b'{"jsonrpc": "2.0", "id": 2, "method": "NoSuchMethod", "params": {}}')
    assert status == 200
    assert body["error"]["code"] == -32601
    image = {"raw": "aGVsbG8=", "mediaType": "image/png"}
    message: dict[str, Any] = {"role": "ROLE_USER", "messageId": "m-img", "parts": [image]}
    send_image: dict[str, Any] = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "SendMessage",
        "params": {"tenant": "wren", "message": message},
    }
    status, body = raw(hub, json.dumps(send_image).encode())
    assert status == 200
    assert body["error"]["code"] == -32602
    assert "only text parts" in body["error"]["message"]
    no_tenant = {
        **send_image,
        "id": 4,
        "params": {"message": {**message, "parts": [{"text": "x"}]}},
    }
    _, body = raw(hub, json.dumps(no_tenant).encode())
    assert "tenant" in body["error"]["message"]
    status, body = raw(
        hub, json.dumps({"jsonrpc": "2.0", "id": 5, "method": "GetTask", "params": {"id": "no"}}).encode()
    )
    assert body["error"]["code"] == -32001  # TaskNotFound
    status, body = raw(hub, json.dumps({"jsonrpc": "2.0", "id": 6, "method": "GetTask", "params": {"id": 7}}).encode())
    assert body["error"]["code"] == -32602  # a number where the spec has a string: the client's mistake
    assert not [line for line in hub.output if "Traceback" in line]  # (logged as one line, not a traceback)


def test_cancel_fails_the_task_as_canceled_and_tells_the_assignee(hub: Hub) -> None:
    url = hub.url + "/a2a/agents/wren"
    _, boot = hub.call("GET", "/v1/bootstrap?agent_id=wren")
    request = SendMessageRequest(
        message=text_message("a long job"), configuration=SendMessageConfiguration(return_immediately=True)
    )
    task: Task = anyio.run(send, url, request)
    canceled: Task = anyio.run(lambda: send(url, CancelTaskRequest(id=task.id), method="cancel_task"))
    assert canceled.status.state == TaskState.TASK_STATE_CANCELED
    assert hub_task(hub, task.id)["status"] == "failed"
    _, feed = hub.call("GET", f"/v1/events?agent_id=wren&since_id={boot['result']['latest_visible_id']}")
    notice = [m for m in feed["result"] if m["kind"] == "notice" and m["reply_to"] == int(task.id)]
    assert len(notice) == 1
    assert "canceled" in notice[0]["body"]
    with pytest.raises(Exception, match="only open or in_progress"):  # finished: TaskNotCancelable
        anyio.run(lambda: send(url, CancelTaskRequest(id=task.id), method="cancel_task"))


def converse(hub: Hub, agent: str, question: str) -> threading.Thread:
    """``agent`` takes the next task_request, asks its requester ``question`` (a direct message in reply to the
    task, expecting a reply), and answers the task with what the requester said back."""
    _, boot = hub.call("GET", f"/v1/bootstrap?agent_id={agent}")

    def work() -> None:
        since, task = int(boot["result"]["latest_visible_id"]), None
        while True:
            _, got = hub.call("GET", f"/v1/events?agent_id={agent}&since_id={since}&timeout=30", timeout=WAIT_SEC)
            for message in got["result"]:
                since = max(since, message["id"])
                if message["kind"] == "task_request" and task is None:
                    task = message
                    ask = {"from_agent": agent, "to_agent": message["from_agent"], "reply_to": message["id"]}
                    hub.call("POST", "/v1/messages", {**ask, "body": question, "expects_reply": "anyone"})
                elif task is not None and message.get("reply_to") == task["id"] and message["kind"] == "chat":
                    answer = {"from_agent": agent, "body": f"done, on {message['body']}"}
                    hub.call("POST", f"/v1/tasks/{task['id']}/result", answer)
                    return

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_a_question_from_the_agent_is_input_required_and_the_next_message_continues_the_task(hub: Hub) -> None:
    url = hub.url + "/a2a/agents/wren"
    worker = converse(hub, "wren", "Which environment?")
    asked: Task = anyio.run(send, url, SendMessageRequest(message=text_message("Deploy the release")))
    assert asked.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert asked.status.message.parts[0].text == "Which environment?"
    follow_up = text_message("staging", task_id=asked.id, context_id=asked.context_id)
    done: Task = anyio.run(send, url, SendMessageRequest(message=follow_up))
    worker.join(WAIT_SEC)
    assert done.id == asked.id
    assert done.status.state == TaskState.TASK_STATE_COMPLETED
    assert [p.text for a in done.artifacts for p in a.parts] == ["done, on staging"]
    assert [(m.role, m.parts[0].text) for m in done.history] == [
        (Role.ROLE_USER, "Deploy the release"),
        (Role.ROLE_AGENT, "Which environment?"),
        (Role.ROLE_USER, "staging"),
    ]
    # a finished task takes no further message; another agent's task is not the caller's to continue
    with pytest.raises(Exception, match="finished task"):
        anyio.run(send, url, SendMessageRequest(message=text_message("again", task_id=done.id)))
    key = mint_key(hub, "mallory")
    with pytest.raises(Exception, match="requester"):
        anyio.run(lambda: send(url, SendMessageRequest(message=text_message("mine?", task_id=asked.id)), key=key))


def test_a_0_3_client_is_answered_by_the_sdks_compatibility_mode_at_the_agents_endpoint(hub: Hub) -> None:
    def call03(method: str, params: dict[str, Any]) -> Any:
        data = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        request = urllib.request.Request(  # no A2A-Version header: a 0.3 client
            hub.url + "/a2a/agents/wren", data=data, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=WAIT_SEC) as response:
            return json.loads(response.read())

    message = {
        "kind": "message",
        "role": "user",
        "messageId": uuid.uuid4().hex,
        "parts": [{"kind": "text", "text": "old"}],
    }
    sent = call03("message/send", {"message": message, "configuration": {"blocking": False}})
    assert sent["result"]["kind"] == "task"
    assert sent["result"]["status"]["state"] == "submitted"
    task_id = sent["result"]["id"]
    assert hub_task(hub, task_id)["assignee"] == "wren"
    hub.call("POST", f"/v1/tasks/{task_id}/result", {"from_agent": "wren", "body": "answered for 0.3"})
    got = call03("tasks/get", {"id": task_id})
    assert got["result"]["status"]["state"] == "completed"
    assert got["result"]["artifacts"][0]["parts"][0]["text"] == "answered for 0.3"


def test_what_is_not_served_yet_is_refused_with_the_protocols_error(hub: Hub) -> None:
    config = {"taskId": "1", "pushNotificationConfig": {"url": "https://example.com/hook"}}
    status, body = raw(
        hub,
        json.dumps(
            {"jsonrpc": "2.0", "id": 9, "method": "CreateTaskPushNotificationConfig", "params": config}
        ).encode(),
    )
    assert status == 200
    assert body["error"]["code"] == -32003  # PushNotificationNotSupported


def test_cards_say_https_behind_a_trusted_tls_proxy_only() -> None:
    from gateway.http import public_base

    assert public_base("http://hub.example.com/", "https", True) == "https://hub.example.com"
    assert public_base("http://hub.example.com/", "https", False) == "http://hub.example.com"
    assert public_base("http://127.0.0.1:6969/", None, True) == "http://127.0.0.1:6969"
