"""Messages: ``POST/GET /v1/messages``, ``GET /v1/events``, ``GET /v1/inbox/{agent}`` (docs/protocol.md).

Personas: alice coordinates and broadcasts; bob and carol are workers who get direct
messages, reply in threads and poll the feed.
"""

from __future__ import annotations

import re
import time

import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ARC_MESSAGE_KEYS = {
    "id",
    "ts",
    "from_agent",
    "to_agent",
    "channel",
    "kind",
    "body",
    "attachments",
    "reply_to",
    "thread_id",
    "metadata",
}
ALL_KINDS = [
    "chat",
    "notice",
    "task",
    "claim",
    "release",
    "artifact",
    "task_request",
    "task_result",
    "status_update",
    "code_review",
]


def post(api, **fields):
    fields.setdefault("from_agent", "alice")
    status, env = api.post("/v1/messages", fields)
    assert status == 201, env
    return env["result"]


def bodies(rows):
    return [m["body"] for m in rows]


# ── POST /v1/messages ───────────────────────────────────────────────────────


def test_it_posts_a_chat_to_general_by_default(api):
    status, env = api.post("/v1/messages", {"from_agent": "alice", "body": "Hello world"})

    assert status == 201
    assert env["ok"] is True
    message = env["result"]
    assert set(message) == ARC_MESSAGE_KEYS
    assert isinstance(message["id"], int)
    assert ISO_Z.match(message["ts"])
    assert message["from_agent"] == "alice"
    assert message["to_agent"] is None
    assert message["channel"] == "general"
    assert message["kind"] == "chat"
    assert message["body"] == "Hello world"
    assert message["attachments"] == []
    assert message["reply_to"] is None
    assert message["thread_id"] is None
    assert message["metadata"] == {}


def test_ids_increase_with_each_post(api):
    first = post(api, body="one")
    second = post(api, body="two")

    assert second["id"] > first["id"]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_it_accepts_every_arc_kind(api, kind):
    assert post(api, kind=kind, body=f"a {kind}")["kind"] == kind


def test_kind_is_case_insensitive(api):
    assert post(api, kind=" NOTICE ", body="heads up")["kind"] == "notice"


def test_it_rejects_an_unsupported_kind(api):
    status, env = api.post("/v1/messages", {"from_agent": "alice", "kind": "shout", "body": "hey"})

    assert status == 400
    assert env["ok"] is False
    assert env["error"].startswith("unsupported kind: shout")


def test_it_requires_from_agent(api):
    for payload in ({"body": "hi"}, {"from_agent": "", "body": "hi"}, {"from_agent": "  ", "body": "hi"}):
        status, env = api.post("/v1/messages", payload)
        assert status == 400
        assert "from_agent" in env["error"]


def test_it_requires_a_body_or_attachments(api):
    for payload in ({}, {"body": ""}, {"body": "", "attachments": []}, {"body": None, "attachments": None}):
        status, env = api.post("/v1/messages", {"from_agent": "alice", **payload})
        assert (status, env) == (400, {"ok": False, "error": "body or attachments is required"}), payload


def test_a_message_may_carry_attachments_only(api):
    message = post(api, attachments=[{"type": "text", "content": "log line"}])

    assert message["body"] == ""
    assert message["attachments"] == [{"type": "text", "content": "log line"}]


def test_it_keeps_reply_to_thread_id_and_metadata(api):
    task = post(api, kind="task", body="fix auth", thread_id="t-auth")

    reply = post(api, from_agent="bob", body="on it", reply_to=task["id"], thread_id="t-auth", metadata={"eta_min": 5})

    assert reply["reply_to"] == task["id"]
    assert reply["thread_id"] == "t-auth"
    assert reply["metadata"] == {"eta_min": 5}


def test_reply_to_accepts_a_numeric_string_like_arc(api):
    assert post(api, body="x", reply_to="7")["reply_to"] == 7


@pytest.mark.parametrize("metadata", ["eta", ["eta"], 5, True])
def test_metadata_must_be_an_object(api, metadata):
    status, env = api.post("/v1/messages", {"from_agent": "alice", "body": "x", "metadata": metadata})

    assert status == 400
    assert env == {"ok": False, "error": "metadata: must be a JSON object"}


def test_posting_to_an_unknown_channel_is_refused(api):
    status, env = api.post("/v1/messages", {"from_agent": "alice", "channel": "nowhere", "body": "hello?"})

    assert (status, env) == (400, {"ok": False, "error": "channel does not exist: nowhere"})
    assert api.get("/v1/messages", channel="general")[1]["result"] == []


def test_an_unknown_parent_task_is_refused(api):
    status, env = api.post(
        "/v1/messages", {"from_agent": "alice", "kind": "task", "body": "sub", "parent_task_id": 999}
    )

    assert (status, env) == (400, {"ok": False, "error": "parent_task_id references unknown task"})
    assert api.get("/v1/tasks")[1]["result"] == []


# ── Direct messages ─────────────────────────────────────────────────────────


def test_a_direct_message_defaults_to_the_direct_channel(api):
    message = post(api, to_agent="bob", body="psst")

    assert message["to_agent"] == "bob"
    assert message["channel"] == "direct"


def test_a_direct_message_may_name_a_channel_that_does_not_exist(api):
    message = post(api, to_agent="bob", channel="side-chat", body="psst")

    assert message["channel"] == "side-chat"
    assert message["to_agent"] == "bob"


def test_a_blank_to_agent_means_broadcast(api):
    message = post(api, to_agent="", body="all")

    assert message["to_agent"] is None
    assert message["channel"] == "general"


# ── Attachments (docs/protocol.md) ───────────────────────────────────────────────────────


def test_it_accepts_every_attachment_type_and_keeps_only_known_fields(api):
    attachments = [
        {"type": "text", "content": "plain", "extra": "dropped"},
        {"type": "json", "content": {"passed": 12, "failed": 0}},
        {"type": "code", "content": "print(1)", "language": "python"},
        {"type": "code", "content": "x = 1"},
        {"type": "file_ref", "path": " src/auth.py ", "description": "the module", "start_line": 10, "end_line": "20"},
        {"type": "diff_ref", "path": "src/auth.py", "base": "main", "head": "fix-auth", "description": "the fix"},
    ]

    message = post(api, body="artifacts", kind="artifact", attachments=attachments)

    assert message["attachments"] == [
        {"type": "text", "content": "plain"},
        {"type": "json", "content": {"passed": 12, "failed": 0}},
        {"type": "code", "content": "print(1)", "language": "python"},
        {"type": "code", "content": "x = 1"},
        {"type": "file_ref", "path": "src/auth.py", "description": "the module", "start_line": 10, "end_line": 20},
        {"type": "diff_ref", "path": "src/auth.py", "description": "the fix", "base": "main", "head": "fix-auth"},
    ]


@pytest.mark.parametrize(
    ("attachment", "error"),
    [
        ({"type": "image", "content": "x"}, "unsupported attachment type: image"),
        ({"content": "x"}, "unsupported attachment type"),
        ({"type": "text"}, "attachment type text requires content"),
        ({"type": "json"}, "attachment type json requires content"),
        ({"type": "code", "language": "python"}, "attachment type code requires content"),
        ({"type": "file_ref"}, "attachment type file_ref requires path"),
        ({"type": "diff_ref", "path": "  "}, "attachment type diff_ref requires path"),
        ({"type": "file_ref", "path": "a.py", "start_line": "ten"}, "start_line must be an integer"),
        ("just text", "must be a JSON object"),
    ],
)
def test_it_rejects_bad_attachments(api, attachment, error):
    status, env = api.post("/v1/messages", {"from_agent": "alice", "body": "x", "attachments": [attachment]})

    assert status == 400
    assert env["ok"] is False
    assert error in env["error"]
    assert "attachments" in env["error"]


def test_attachments_must_be_a_list(api):
    status, env = api.post("/v1/messages", {"from_agent": "alice", "body": "x", "attachments": {"type": "text"}})

    assert status == 400
    assert "attachments" in env["error"]


@override_settings(ARC_MAX_BODY_CHARS=10)
def test_it_enforces_the_body_size_limit(api):
    assert post(api, body="x" * 10)["body"] == "x" * 10

    status, env = api.post("/v1/messages", {"from_agent": "alice", "body": "x" * 11})

    assert status == 400
    assert env["error"].startswith("body exceeds max size")


@override_settings(ARC_MAX_ATTACHMENTS=2)
def test_it_enforces_the_attachment_count_limit(api):
    two = [{"type": "text", "content": "a"}, {"type": "text", "content": "b"}]
    assert len(post(api, body="x", attachments=two)["attachments"]) == 2

    status, env = api.post("/v1/messages", {"from_agent": "alice", "body": "x", "attachments": [*two, two[0]]})

    assert status == 400
    assert env["error"].startswith("too many attachments")


@override_settings(ARC_MAX_ATTACHMENT_CHARS=12)
@pytest.mark.parametrize("kind", ["text", "json", "code"])
def test_it_enforces_the_inline_attachment_size_limit_on_the_json_encoding(api, kind):
    # json.dumps("x" * 10) is 12 characters: the quotes count, as in Arc.
    assert (
        post(api, body="x", attachments=[{"type": kind, "content": "x" * 10}])["attachments"][0]["content"] == "x" * 10
    )

    status, env = api.post(
        "/v1/messages", {"from_agent": "alice", "body": "x", "attachments": [{"type": kind, "content": "x" * 11}]}
    )

    assert status == 400
    assert f"attachment type {kind} exceeds max size" in env["error"]


@override_settings(ARC_MAX_ATTACHMENT_CHARS=12)
def test_reference_attachments_have_no_size_limit(api):
    message = post(api, body="x", attachments=[{"type": "file_ref", "path": "src/" + "a" * 50 + ".py"}])

    assert len(message["attachments"][0]["path"]) == 57


# ── GET /v1/messages ────────────────────────────────────────────────────────


def test_it_requires_a_channel_or_thread_id(api):
    assert api.get("/v1/messages") == (400, {"ok": False, "error": "channel or thread_id query parameter is required"})


def test_it_answers_404_for_an_unknown_channel(api):
    assert api.get("/v1/messages", channel="nowhere") == (404, {"ok": False, "error": "channel not found"})


def test_a_channel_query_returns_broadcasts_in_order_without_direct_messages(api):
    api.post("/v1/channels", {"name": "builds"})
    post(api, body="one")
    post(api, body="elsewhere", channel="builds")
    post(api, body="for bob only", to_agent="bob", channel="general")
    post(api, body="two")

    status, env = api.get("/v1/messages", channel="general")

    assert status == 200
    assert bodies(env["result"]) == ["one", "two"]


def test_since_id_and_limit_page_through_a_channel(api):
    ids = [post(api, body=str(n))["id"] for n in range(5)]

    assert bodies(api.get("/v1/messages", channel="general", since_id=ids[1])[1]["result"]) == ["2", "3", "4"]
    assert bodies(api.get("/v1/messages", channel="general", since_id=ids[1], limit=2)[1]["result"]) == ["2", "3"]
    assert api.get("/v1/messages", channel="general", since_id=ids[4])[1]["result"] == []


@override_settings(ARC_MAX_QUERY_LIMIT=3)
def test_limit_is_capped_at_max_query_limit(api):
    for n in range(5):
        post(api, body=str(n))

    assert bodies(api.get("/v1/messages", channel="general", limit=100)[1]["result"]) == ["0", "1", "2"]
    assert len(api.get("/v1/messages", channel="general")[1]["result"]) == 3


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"limit": "0"}, "limit must be at least 1"),
        ({"limit": "lots"}, "limit must be an integer"),
        ({"since_id": "-1"}, "since_id must be >= 0"),
        ({"since_id": "latest"}, "since_id must be an integer"),
        ({"timeout": "soon"}, "timeout must be a number"),
    ],
)
def test_it_validates_query_parameters(api, params, error):
    assert api.get("/v1/messages", channel="general", **params) == (400, {"ok": False, "error": error})


def test_a_thread_query_returns_the_threads_broadcasts_across_channels(api):
    api.post("/v1/channels", {"name": "builds"})
    post(api, body="task", thread_id="t-auth", kind="task")
    post(api, body="unrelated")
    post(api, body="in builds", thread_id="t-auth", channel="builds")
    post(api, body="dm in thread", thread_id="t-auth", to_agent="bob")
    post(api, body="done", thread_id="t-auth", kind="artifact")

    assert bodies(api.get("/v1/messages", thread_id="t-auth")[1]["result"]) == ["task", "in builds", "done"]
    assert bodies(api.get("/v1/messages", thread_id="t-auth", channel="builds")[1]["result"]) == ["in builds"]
    first = api.get("/v1/messages", thread_id="t-auth")[1]["result"][0]["id"]
    assert bodies(api.get("/v1/messages", thread_id="t-auth", since_id=first, limit=1)[1]["result"]) == ["in builds"]


def test_a_long_poll_returns_at_once_when_a_message_is_there(api):
    post(api, body="ready")

    started = time.monotonic()
    status, env = api.get("/v1/messages", channel="general", timeout="5")

    assert status == 200
    assert bodies(env["result"]) == ["ready"]
    assert time.monotonic() - started < 2


def test_a_long_poll_returns_empty_after_the_window(api):
    latest = post(api, body="old")["id"]

    started = time.monotonic()
    status, env = api.get("/v1/messages", channel="general", since_id=latest, timeout="0.4")

    assert (status, env) == (200, {"ok": True, "result": []})
    assert 0.35 <= time.monotonic() - started < 3


# ── GET /v1/events ──────────────────────────────────────────────────────────


def test_events_require_agent_id(api):
    assert api.get("/v1/events") == (400, {"ok": False, "error": "agent_id query parameter is required"})


def test_events_show_broadcasts_and_only_the_agents_own_direct_messages(api):
    post(api, body="all hands")
    post(api, body="for bob", to_agent="bob")
    post(api, body="for carol", to_agent="carol")
    post(api, from_agent="carol", body="carol to bob", to_agent="bob", channel="side")

    assert bodies(api.get("/v1/events", agent_id="bob")[1]["result"]) == ["all hands", "for bob", "carol to bob"]
    assert bodies(api.get("/v1/events", agent_id="carol")[1]["result"]) == ["all hands", "for carol"]
    assert bodies(api.get("/v1/events", agent_id="alice")[1]["result"]) == ["all hands"]


def test_events_can_exclude_the_agents_own_posts(api):
    post(api, from_agent="bob", body="from bob")
    post(api, body="from alice")

    for truthy in ("1", "true", "yes", "TRUE"):
        assert bodies(api.get("/v1/events", agent_id="bob", exclude_self=truthy)[1]["result"]) == ["from alice"]
    assert bodies(api.get("/v1/events", agent_id="bob", exclude_self="0")[1]["result"]) == ["from bob", "from alice"]
    assert bodies(api.get("/v1/events", agent_id="bob")[1]["result"]) == ["from bob", "from alice"]


def test_events_filter_by_channel_thread_and_since_id(api):
    api.post("/v1/channels", {"name": "builds"})
    first = post(api, body="general chat")
    post(api, body="build 1", channel="builds", thread_id="t-ci")
    post(api, body="build 2", channel="builds")
    post(api, body="dm in thread", to_agent="bob", thread_id="t-ci")

    assert bodies(api.get("/v1/events", agent_id="bob", channel="builds")[1]["result"]) == ["build 1", "build 2"]
    assert bodies(api.get("/v1/events", agent_id="bob", thread_id="t-ci")[1]["result"]) == ["build 1", "dm in thread"]
    assert bodies(api.get("/v1/events", agent_id="carol", thread_id="t-ci")[1]["result"]) == ["build 1"]
    assert bodies(api.get("/v1/events", agent_id="bob", since_id=first["id"], limit=2)[1]["result"]) == [
        "build 1",
        "build 2",
    ]


def test_events_answer_404_for_an_unknown_channel(api):
    assert api.get("/v1/events", agent_id="bob", channel="nowhere") == (
        404,
        {"ok": False, "error": "channel not found"},
    )


def test_events_long_poll_returns_at_once_when_a_message_is_there(api):
    post(api, body="for bob", to_agent="bob")

    started = time.monotonic()
    status, env = api.get("/v1/events", agent_id="bob", timeout="5")

    assert status == 200
    assert bodies(env["result"]) == ["for bob"]
    assert time.monotonic() - started < 2


def test_events_long_poll_returns_empty_after_the_window(api):
    post(api, body="for carol", to_agent="carol")  # invisible to bob, so bob waits

    started = time.monotonic()
    status, env = api.get("/v1/events", agent_id="bob", timeout="0.4")

    assert (status, env) == (200, {"ok": True, "result": []})
    assert 0.35 <= time.monotonic() - started < 3


# ── GET /v1/inbox/{agent_id} ────────────────────────────────────────────────


def test_the_inbox_holds_only_direct_messages_to_the_agent(api):
    post(api, body="broadcast")
    post(api, body="one for bob", to_agent="bob")
    post(api, body="one for carol", to_agent="carol")
    post(api, from_agent="carol", body="two for bob", to_agent="bob", channel="pairing")

    status, env = api.get("/v1/inbox/bob")

    assert status == 200
    assert bodies(env["result"]) == ["one for bob", "two for bob"]
    assert all(m["to_agent"] == "bob" for m in env["result"])


def test_the_inbox_pages_with_since_id_and_limit(api):
    ids = [post(api, body=f"dm {n}", to_agent="bob")["id"] for n in range(4)]

    assert bodies(api.get("/v1/inbox/bob", since_id=ids[0])[1]["result"]) == ["dm 1", "dm 2", "dm 3"]
    assert bodies(api.get("/v1/inbox/bob", since_id=ids[0], limit=1)[1]["result"]) == ["dm 1"]
    assert api.get("/v1/inbox/nobody")[1]["result"] == []
