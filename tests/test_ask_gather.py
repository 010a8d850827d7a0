"""Ask many, gather replies (docs/protocol.md): ``POST /v1/ask`` and ``GET /v1/messages/{id}/replies``."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from coordination.core import services
from coordination.core.errors import Conflict
from coordination.core.models import Message
from tests.conftest import ApiClient, Persona
from tests.hubproc import Hub
from tests.test_rooms_lifecycle import _admin_key, _as


@pytest.mark.django_db
def test_asking_a_capability_sends_each_live_holder_a_direct_question() -> None:
    for agent, caps in (("alice", ["review"]), ("bob", ["review"]), ("carol", ["review", "build"]), ("dave", [])):
        services.session_create(agent_id=agent, capabilities=caps)

    questions = services.ask_post(from_agent="alice", body="LGTM?", to_capability="review", max_replies=2)

    assert [(q.to_agent, q.expects_reply) for q in questions] == [("bob", "bob"), ("carol", "carol")]
    assert all(q.metadata["ask"]["max_replies"] == 2 and q.metadata["to_capability"] == "review" for q in questions)
    with pytest.raises(Conflict, match="deploy"):
        services.ask_post(from_agent="alice", body="?", to_capability="deploy")


def test_ask_returns_replies_already_there_and_says_when_it_is_incomplete(api: ApiClient) -> None:
    status, env = api.post("/v1/ask", {"from_agent": "alice", "body": "who is free?", "timeout": 0})
    assert status == 201, env
    result = env["result"]
    assert (result["replies"], result["complete"], result["asked"]) == ([], False, ["general"])
    question = result["question"]
    assert question["metadata"]["ask"]["max_replies"] == 5

    api.post("/v1/messages", {"from_agent": "bob", "channel": "general", "body": "me", "reply_to": question["id"]})
    api.post("/v1/messages", {"from_agent": "carol", "channel": "general", "body": "unrelated"})
    status, env = api.get(f"/v1/messages/{question['id']}/replies", max=1)
    assert status == 200
    assert [r["body"] for r in env["result"]["replies"]] == ["me"]
    assert env["result"]["complete"] is True


def test_a_keyed_asker_sees_only_replies_it_may_read(db: None) -> None:
    alice = Persona("alice")
    _, env = alice.post("/v1/ask", {"body": "status?", "timeout": 0})
    question_id = env["result"]["question"]["id"]
    api = ApiClient()
    api.post("/v1/messages", {"from_agent": "bob", "to_agent": "carol", "body": "secret", "reply_to": question_id})
    api.post("/v1/messages", {"from_agent": "bob", "to_agent": "alice", "body": "green", "reply_to": question_id})

    _status, env = alice.get(f"/v1/messages/{question_id}/replies")

    assert [r["body"] for r in env["result"]["replies"]] == ["green"]
    services.room_create(name="ops")
    assert Persona("mallory", rooms=["ops"]).get(f"/v1/messages/{question_id}/replies")[0] == 403


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ({"from_agent": "alice"}, 400, "body"),
        ({"from_agent": "alice", "body": "?", "max_replies": 0}, 400, "max_replies"),
        ({"from_agent": "alice", "body": "?", "timeout": 301}, 400, "timeout"),
        ({"from_agent": "alice", "body": "?", "timeout": "soon"}, 400, "timeout"),
        ({"from_agent": "alice", "body": "?", "channel": "general", "to_capability": "x"}, 400, "not both"),
        ({"from_agent": "alice", "body": "?", "channel": "nowhere"}, 400, "nowhere"),
        ({"from_agent": "alice", "body": "?", "to_capability": "nobody-has-it"}, 409, "nobody-has-it"),
    ],
)
def test_bad_asks_get_clear_errors(api: ApiClient, payload: dict[str, Any], status: int, fragment: str) -> None:
    got, env = api.post("/v1/ask", payload)
    assert got == status, env
    assert fragment in env["error"]
    assert not Message.objects.exists()


def test_gathering_replies_to_an_unknown_message_is_404(api: ApiClient) -> None:
    assert api.get("/v1/messages/999/replies")[0] == 404
    assert api.get("/v1/messages/1/replies", max="x")[0] == 400


@pytest.mark.live
def test_ask_waits_for_replies_from_each_capable_agent(live_hub: Hub) -> None:
    for agent, caps in (("lead", []), ("rev-a", ["review"]), ("rev-b", ["review"])):
        assert live_hub.call("POST", "/v1/sessions", {"agent_id": agent, "capabilities": caps})[0] == 201

    def asking() -> tuple[float, dict[str, Any]]:
        started = time.monotonic()
        status, env = live_hub.call(
            "POST",
            "/v1/ask",
            {"from_agent": "lead", "to_capability": "review", "body": "ship it?", "max_replies": 2, "timeout": 20},
        )
        assert status == 201, env
        return time.monotonic() - started, env["result"]

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(asking)
        for reviewer in ("rev-a", "rev-b"):
            question = _await_direct_message(live_hub, reviewer)
            assert question["metadata"]["ask"]["max_replies"] == 2
            live_hub.call(
                "POST",
                "/v1/messages",
                {"from_agent": reviewer, "to_agent": "lead", "body": f"{reviewer}: yes", "reply_to": question["id"]},
            )
        elapsed, result = pending.result(30)

    assert elapsed < 10  # woken by the replies, not by the 20 s timeout
    assert result["complete"] is True
    assert result["asked"] == ["rev-a", "rev-b"]
    assert sorted(r["body"] for r in result["replies"]) == ["rev-a: yes", "rev-b: yes"]


@pytest.mark.live
def test_gather_wakes_on_a_reply_and_times_out_without_one(live_hub: Hub) -> None:
    status, env = live_hub.call("POST", "/v1/messages", {"from_agent": "lead", "channel": "general", "body": "ideas?"})
    question_id = env["result"]["id"]
    started = time.monotonic()
    status, env = live_hub.call("GET", f"/v1/messages/{question_id}/replies?max=1&timeout=0.5")
    assert (status, env["result"]["complete"], env["result"]["replies"]) == (200, False, [])
    assert time.monotonic() - started >= 0.45

    timer = threading.Timer(
        0.5,
        lambda: live_hub.call(
            "POST", "/v1/messages", {"from_agent": "bob", "channel": "general", "body": "one", "reply_to": question_id}
        ),
    )
    timer.start()
    started = time.monotonic()
    status, env = live_hub.call("GET", f"/v1/messages/{question_id}/replies?max=1&timeout=20")
    timer.join()
    assert env["result"]["complete"] is True
    assert [r["body"] for r in env["result"]["replies"]] == ["one"]
    assert time.monotonic() - started < 5


def _await_direct_message(hub: Hub, agent: str, timeout: float = 10.0) -> dict[str, Any]:
    status, env = hub.call("GET", f"/v1/events?agent_id={agent}&timeout={timeout}")
    assert status == 200, env
    assert env["result"], "no direct message arrived"
    return dict(env["result"][0])


@pytest.mark.live
def test_gathering_in_a_room_stops_when_the_room_closes(live_hub: Hub) -> None:
    status, env = live_hub.call("POST", "/v1/messages", {"from_agent": "lead", "channel": "general", "body": "ideas?"})
    question_id = env["result"]["id"]
    admin = _admin_key(live_hub)
    threading.Timer(0.5, lambda: _as(admin, live_hub, "POST", "/v1/channels/general/close")).start()
    started = time.monotonic()

    status, env = live_hub.call("GET", f"/v1/messages/{question_id}/replies?max=3&timeout=20")

    assert status == 200
    assert env["room_closed"] is True
    assert env["result"]["complete"] is False
    assert time.monotonic() - started < 5
