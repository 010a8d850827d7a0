"""A2A push notifications (docs/a2a.md): a live hub with them switched on tells an A2A client's webhook.

The webhook is a small HTTP server started here on loopback (which the hub is allowed to reach:
``ARC_A2A_ALLOW_NETWORKS=127.0.0.0/8``), answering each request with the next status it was given.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest
from a2a.types import (
    AuthenticationInfo,
    DeleteTaskPushNotificationConfigRequest,
    GetTaskPushNotificationConfigRequest,
    ListTaskPushNotificationConfigsRequest,
    SendMessageConfiguration,
    SendMessageRequest,
    TaskPushNotificationConfig,
)

from tests.hubproc import Hub, mint_key, running_hub
from tests.test_a2a import WAIT_SEC, answer_next_task, send, text_message

pytestmark = pytest.mark.live


@dataclass
class Webhook:
    url: str
    server: ThreadingHTTPServer
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # the statuses to answer with, in order (then 200)

    def states(self, task_id: str) -> list[str]:
        return [
            body["task"]["status"]["state"] for _, raw in self.got if (body := json.loads(raw))["task"]["id"] == task_id
        ]

    def wait_for(self, task_id: str, state: str, count: int = 1) -> list[str]:
        deadline = time.monotonic() + WAIT_SEC
        while self.states(task_id).count(state) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.states(task_id)


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    hook = Webhook(url=f"http://127.0.0.1:{server.server_address[1]}/hook", server=server)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            hook.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = hook.answers.pop(0) if hook.answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hook
    server.shutdown()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    env = {"ARC_A2A_PUSH": "1", "ARC_A2A_ALLOW_NETWORKS": "127.0.0.0/8", "ARC_A2A_PUSH_ATTEMPTS": "3"}
    with running_hub(tmp_path_factory.mktemp("a2a-push"), args=("--no-relay",), extra_env=env) as hub:
        status, _ = hub.call("POST", "/v1/sessions", {"agent_id": "wren", "capabilities": ["summarize"]})
        assert status == 201
        yield hub


def with_push(text: str, url: str, **config: Any) -> SendMessageRequest:
    push = TaskPushNotificationConfig(url=url, **config)
    configuration = SendMessageConfiguration(return_immediately=True, task_push_notification_config=push)
    return SendMessageRequest(message=text_message(text), configuration=configuration)


def test_the_card_says_push_notifications_when_they_are_on(hub: Hub) -> None:
    with urllib.request.urlopen(hub.url + "/a2a/agents/wren/.well-known/agent-card.json", timeout=WAIT_SEC) as r:
        assert json.loads(r.read())["capabilities"]["pushNotifications"] is True


def test_each_change_of_the_task_is_posted_signed_with_the_clients_token(hub: Hub, webhook: Webhook) -> None:
    url = hub.url + "/a2a/agents/wren"
    task = anyio.run(send, url, with_push("Summarize Z", webhook.url, token="client-token-1"))
    assert webhook.wait_for(task.id, "TASK_STATE_SUBMITTED")[0] == "TASK_STATE_SUBMITTED"
    worker = answer_next_task(hub, "wren", "Z, summed up.", since=int(task.id) - 1)
    worker.join(WAIT_SEC)
    states = webhook.wait_for(task.id, "TASK_STATE_COMPLETED")
    assert states[-1] == "TASK_STATE_COMPLETED"
    assert all(a != b for a, b in itertools.pairwise(states))  # never the same state twice in a row
    headers, raw = next(
        (h, b) for h, b in webhook.got if json.loads(b)["task"]["status"]["state"].endswith("COMPLETED")
    )
    assert json.loads(raw)["task"]["artifacts"][0]["parts"][0]["text"] == "Z, summed up."
    assert headers["x-a2a-notification-token"] == "client-token-1"
    signed = hmac.new(b"client-token-1", headers["x-arc-timestamp"].encode() + b"." + raw, hashlib.sha256)
    assert headers["x-arc-signature"] == "sha256=" + signed.hexdigest()
    assert abs(int(headers["x-arc-timestamp"]) - time.time()) < 3600


def test_configs_are_set_read_listed_and_deleted_by_their_client_never_showing_credentials(
    hub: Hub, webhook: Webhook
) -> None:
    url = hub.url + "/a2a/agents/wren"
    task = anyio.run(
        send,
        url,
        SendMessageRequest(
            message=text_message("watch me"), configuration=SendMessageConfiguration(return_immediately=True)
        ),
    )
    config = TaskPushNotificationConfig(
        task_id=task.id,
        id="mine",
        url=webhook.url,
        authentication=AuthenticationInfo(scheme="Bearer", credentials="s3cr3t"),
    )
    made = anyio.run(lambda: send(url, config, method="create_task_push_notification_config"))
    assert made.id == "mine"
    assert len(made.token) >= 24  # none given: the hub made one, and every delivery is signed with it
    assert made.authentication.scheme == "Bearer"
    assert made.authentication.credentials == ""
    got = anyio.run(
        lambda: send(
            url,
            GetTaskPushNotificationConfigRequest(task_id=task.id, id="mine"),
            method="get_task_push_notification_config",
        )
    )
    assert got.url == webhook.url
    listed = anyio.run(
        lambda: send(
            url, ListTaskPushNotificationConfigsRequest(task_id=task.id), method="list_task_push_notification_configs"
        )
    )
    assert [c.id for c in listed.configs] == ["mine"]
    first = webhook.wait_for(task.id, "TASK_STATE_SUBMITTED")
    assert first == ["TASK_STATE_SUBMITTED"]
    headers = next(h for h, b in webhook.got if json.loads(b)["task"]["id"] == task.id)
    assert headers["authorization"] == "Bearer s3cr3t"
    anyio.run(
        lambda: send(
            url,
            DeleteTaskPushNotificationConfigRequest(task_id=task.id, id="mine"),
            method="delete_task_push_notification_config",
        )
    )
    with pytest.raises(Exception, match="no push config"):
        anyio.run(
            lambda: send(
                url,
                GetTaskPushNotificationConfigRequest(task_id=task.id, id="mine"),
                method="get_task_push_notification_config",
            )
        )
    key = mint_key(hub, "mallory")
    with pytest.raises(Exception, match="requester"):
        anyio.run(
            lambda: send(
                url,
                ListTaskPushNotificationConfigsRequest(task_id=task.id),
                method="list_task_push_notification_configs",
                key=key,
            )
        )


def test_a_failing_webhook_is_tried_a_bounded_number_of_times(hub: Hub, webhook: Webhook) -> None:
    url = hub.url + "/a2a/agents/wren"
    webhook.answers[:] = [503, 503]  # then 200: told on the third attempt
    task = anyio.run(send, url, with_push("retry me", webhook.url, token="t-retry"))
    assert webhook.wait_for(task.id, "TASK_STATE_SUBMITTED", count=3).count("TASK_STATE_SUBMITTED") == 3
    webhook.answers[:] = [400]  # refused: not tried again
    hub.call("POST", f"/v1/tasks/{task.id}/result", {"from_agent": "wren", "body": "done"})
    webhook.wait_for(task.id, "TASK_STATE_COMPLETED")
    webhook.answers[:] = []
    _, listed = hub.call("GET", "/v1/tasks")
    assert next(t for t in listed["result"] if str(t["task_id"]) == task.id)["status"] == "done"
    assert webhook.states(task.id).count("TASK_STATE_COMPLETED") == 1


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("http://10.0.0.9/hook", "10.0.0.9, a loopback, private or link-local address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254, a loopback, private or link-local"),
        ("http://[::1]:8080/hook", "::1, a loopback, private or link-local address"),
        ("file:///etc/passwd", "only http and https URLs are followed"),
        ("http://user:pw@127.0.0.1/hook", "user name or password"),
    ],
)
def test_a_webhook_off_the_public_internet_is_refused_unless_allowed_and_makes_no_task(
    hub: Hub, target: str, said: str
) -> None:
    _, before = hub.call("GET", "/v1/tasks")
    with pytest.raises(Exception, match="push notification URL is refused") as refused:
        anyio.run(send, hub.url + "/a2a/agents/wren", with_push("hostile", target))
    assert said in str(refused.value)
    _, after = hub.call("GET", "/v1/tasks")
    assert len(after["result"]) == len(before["result"])
