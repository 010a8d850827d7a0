"""Fuzzing the REST API with Hypothesis: whatever a client sends, the hub never answers 5xx (docs/performance.md).

Every POST endpoint gets arbitrary JSON bodies (any JSON value, not only objects) and
arbitrary values for each of its known fields (nested objects and lists, unicode, huge
integers, floats including NaN and infinities, null, booleans) mixed with plausible ones,
so requests also get past validation into the services. Every GET endpoint gets
arbitrary query strings, and the endpoints with ids in their paths get arbitrary ids.
Each request goes in as one persona, drawn per example; every 4xx must be an Arc
envelope ``{"ok": false, "error": "<message>"}``.

Personas:
- ``anyone``: the anonymous loopback client; acts as any agent it names, is no admin;
- ``alice``: an unscoped key; acts only as alice, in every room;
- ``olivia``: a key scoped to room ``ops``; reads and posts only there;
- ``root``: an admin key, used only on ``/v1/network`` (never on ``/v1/shutdown``: a fuzzed
  delay of 0 would stop this test process).

Runs derandomized (the same examples every run, for CI) with about 50 examples per endpoint.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordination.core import access, hub, services
from coordination.core.models import Message
from tests.conftest import ApiClient, Persona

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ── What to send ──────────────────────────────────────────────────────────

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(),  # NaN and the infinities too: Python's json writes and reads them
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=50),
    st.sampled_from(
        [
            "\x00",
            "a\x00b",
            "\u202e",
            "\ufeff",
            "\U0001d51e\U0001d529\U0001d526\U0001d520\U0001d522",
            "' OR 1=1 --",
            "../../etc/passwd",
        ]
    ),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8) | st.just("\x00"), children, max_size=4)
    ),
    max_leaves=12,
)

AGENTS = ["alice", "bob", "olivia", "", " ", "system"]
ROOMS = ["general", "ops", "direct", "nowhere", ""]
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "agent_id": st.sampled_from(AGENTS),
    "from_agent": st.sampled_from(AGENTS),
    "to_agent": st.sampled_from(AGENTS),
    "owner_agent_id": st.sampled_from(AGENTS),
    "created_by": st.sampled_from(AGENTS),
    "channel": st.sampled_from(ROOMS),
    "name": st.sampled_from(ROOMS),
    "kind": st.sampled_from([*Message.Kind.values, "CHAT", "nonsense"]),
    "priority": st.sampled_from([*Message.Priority.values, "urgent"]),
    "body": st.text(),
    "reply_to": st.integers(min_value=-5, max_value=50),
    "parent_task_id": st.integers(min_value=-5, max_value=50),
    "task_message_id": st.integers(min_value=-5, max_value=50),
    "ttl_sec": st.integers(min_value=-10, max_value=10**12),
    "metadata": st.dictionaries(st.sampled_from(["success", "error", "payload", "x"]), json_values, max_size=3),
    "attachments": st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "json", "code", "file_ref", "diff_ref", "image", ""])},
            optional={"content": json_values, "path": json_values, "start_line": json_values, "language": json_values},
        ),
        max_size=3,
    ),
    "capabilities": st.lists(st.text(max_size=10), max_size=4),
    "claim_key": st.sampled_from(["build-7", "task-1", ""]),
    "file_path": st.sampled_from(["src/a.py", "../../etc/passwd", ""]),
    "thread_id": st.sampled_from(["t-1", " t-1 ", ""]),
    "expects_reply": st.sampled_from(["none", "anyone", "alice", ""]),
    "allow_remote": st.booleans(),
    "replace": st.booleans(),
    "to_capability": st.sampled_from(["code", "review", "", " "]),
    "max_attempts": st.integers(min_value=-2, max_value=200),
    "max": st.integers(min_value=-2, max_value=200),
    "lease_sec": st.integers(min_value=-2, max_value=10**6),
    "delay_sec": st.integers(min_value=-2, max_value=10**6),
    "message_id": st.integers(min_value=-5, max_value=50),
    "message_ids": st.lists(st.integers(min_value=-5, max_value=2**70), max_size=5),
    "max_replies": st.integers(min_value=-2, max_value=200),
}

# Every POST endpoint and the fields it reads.
POST_FIELDS: dict[str, list[str]] = {
    "/v1/sessions": ["agent_id", "display_name", "capabilities", "metadata", "replace"],
    "/v1/channels": ["name", "created_by", "metadata"],
    "/v1/messages": [
        "from_agent",
        "to_agent",
        "channel",
        "kind",
        "body",
        "attachments",
        "reply_to",
        "thread_id",
        "metadata",
        "parent_task_id",
        "priority",
        "ttl_sec",
        "expects_reply",
        "to_capability",
        "max_attempts",
    ],
    "/v1/claims": ["owner_agent_id", "claim_key", "task_message_id", "thread_id", "ttl_sec", "metadata"],
    "/v1/claims/refresh": ["claim_key", "owner_agent_id", "ttl_sec"],
    "/v1/claims/release": ["claim_key", "agent_id"],
    "/v1/locks": ["agent_id", "file_path", "ttl_sec", "metadata"],
    "/v1/locks/refresh": ["agent_id", "file_path", "ttl_sec"],
    "/v1/locks/release": ["agent_id", "file_path"],
    "/v1/tasks/1/complete": [],
    "/v1/tasks/1/start": [],
    "/v1/tasks/1/fail": ["reason"],
    "/v1/messages/1/reply-claim": ["agent_id"],
    "/v1/inbox/alice/lease": ["max", "lease_sec"],
    "/v1/deliveries/ack": ["agent_id", "message_ids"],
    "/v1/deliveries/nack": ["agent_id", "message_id", "reason", "delay_sec"],
    "/v1/deliveries/retry": ["agent_id", "message_ids"],
    "/v1/network": ["allow_remote"],
    "/v1/shutdown": ["delay_sec"],
    "/v1/shutdown/cancel": [],
}

# Every GET endpoint and the query parameters it reads.
GET_PARAMS: dict[str, list[str]] = {
    "/v1/hub-info": [],
    "/v1/channels": [],
    "/v1/agents": ["capability", "wait_for", "timeout"],
    "/v1/messages": ["channel", "thread_id", "since_id", "limit", "timeout"],
    "/v1/events": ["agent_id", "channel", "thread_id", "since_id", "limit", "timeout", "exclude_self"],
    "/v1/stream": ["agent_id", "channel", "channels", "thread_id", "since_id", "types", "exclude_self"],
    "/v1/bootstrap": ["agent_id"],
    "/v1/threads": [],
    "/v1/claims": ["thread_id", "active_only"],
    "/v1/locks": ["agent_id", "active_only"],
    "/v1/tasks": ["status", "parent_id", "channel", "thread_id", "assignee"],
    "/v1/network": [],
    "/v1/shutdown": [],
    "/v1/stats": [],
    "/v1/deliveries": ["agent_id", "state", "limit"],
    "/v1/messages/1/replies": ["max", "timeout"],
    "/v1/search": ["q", "channel", "from_agent", "limit"],
}


# A body each endpoint accepts, to fuzz one field at a time from (so requests reach the services).
VALID: dict[str, dict[str, Any]] = {
    "/v1/sessions": {"agent_id": "alice", "replace": True},
    "/v1/channels": {"name": "builds"},
    "/v1/messages": {"from_agent": "alice", "body": "hi"},
    "/v1/claims": {"owner_agent_id": "alice", "claim_key": "build-7"},
    "/v1/claims/refresh": {"owner_agent_id": "alice", "claim_key": "build-7"},
    "/v1/claims/release": {"agent_id": "alice", "claim_key": "build-7"},
    "/v1/locks": {"agent_id": "alice", "file_path": "src/a.py"},
    "/v1/locks/refresh": {"agent_id": "alice", "file_path": "src/a.py"},
    "/v1/locks/release": {"agent_id": "alice", "file_path": "src/a.py"},
    "/v1/tasks/1/complete": {},
    "/v1/tasks/1/start": {},
    "/v1/tasks/1/fail": {"reason": "red"},
    "/v1/messages/1/reply-claim": {"agent_id": "alice"},
    "/v1/inbox/alice/lease": {"max": 5, "lease_sec": 30},
    "/v1/deliveries/ack": {"agent_id": "alice", "message_ids": [1]},
    "/v1/deliveries/nack": {"agent_id": "alice", "message_id": 1, "delay_sec": 0},
    "/v1/deliveries/retry": {"message_ids": [1]},
    "/v1/network": {},
    "/v1/shutdown": {"delay_sec": 3600},
    "/v1/shutdown/cancel": {},
}


def field_value(name: str) -> st.SearchStrategy[Any]:
    plausible = PLAUSIBLE.get(name)
    return json_values if plausible is None else st.one_of(plausible, json_values)


def _merged(changes: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for change in changes:
        out.update(change)
    return out


def bodies(fields: list[str], valid: dict[str, Any] | None = None) -> st.SearchStrategy[bytes]:
    """A request body: a valid one with fields changed, an object of the endpoint's fields (plus strays),
    any JSON value, or bytes."""
    one_change = (
        st.sampled_from(fields).flatmap(lambda name: field_value(name).map(lambda value: {name: value}))
        if fields
        else st.just({})
    )
    mutated = st.lists(one_change, max_size=2).map(lambda changes: {**(valid or {}), **_merged(changes)})
    objects = st.builds(
        lambda known, extra: {**extra, **known},
        st.fixed_dictionaries({}, optional={name: field_value(name) for name in fields}),
        st.dictionaries(st.text(max_size=12), json_values, max_size=2),
    )
    valid_ish = mutated.map(lambda body: json.dumps(body).encode())
    others = [
        objects.map(lambda body: json.dumps(body).encode()),
        objects.map(lambda body: json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")),
        json_values.map(lambda value: json.dumps(value).encode()),
        st.binary(max_size=200),
    ]
    # Half the bodies start from a valid one, so they get past validation into the services.
    return st.sampled_from([valid_ish] * len(others) + others).flatmap(lambda branch: branch)


def waits_no_more_than(limit: float) -> Any:
    """Long-polls and waits are fuzzed with values that wait at most ``limit`` seconds."""

    def short(value: str) -> bool:
        try:
            seconds = float(value)
        except ValueError:
            return True
        return math.isnan(seconds) or seconds <= limit

    return short


QUERY_VALUE = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(
        ["", "0", "-1", "1e309", "nan", "true", "message,claim", "general", "ops", "alice", "\x00", "a\x00"]
    ),
)


def queries(params: list[str]) -> st.SearchStrategy[dict[str, str]]:
    known = {
        name: QUERY_VALUE.filter(waits_no_more_than(0.05)) if name == "timeout" else QUERY_VALUE for name in params
    }
    return st.builds(
        lambda chosen, extra: {**extra, **chosen},
        st.fixed_dictionaries({}, optional=known),
        st.dictionaries(
            st.text(min_size=1, max_size=8).filter(lambda k: k != "timeout"), st.text(max_size=10), max_size=2
        ),
    )


# ── Who sends it ──────────────────────────────────────────────────────────


@pytest.fixture
def personas(api: ApiClient) -> dict[str, ApiClient]:
    """anyone (anonymous loopback), alice (unscoped key), olivia (scoped to ops), root (admin key)."""
    services.room_create(name="ops")
    return {
        "anyone": api,
        "alice": Persona("alice"),
        "olivia": Persona("olivia", rooms=["ops"]),
        "root": Persona("root", admin=True),
    }


@pytest.fixture(autouse=True)
def no_shutdown_ever() -> Iterator[None]:
    yield
    if hub.shutdown.status() is not None:
        hub.shutdown.cancel()
        pytest.fail("a fuzzed request scheduled a shutdown")


NON_ADMIN = st.sampled_from(["anyone", "alice", "olivia"])


def check(response: Any) -> None:
    """No 5xx; an error is an Arc envelope with a message; a success says ok."""
    assert response.status_code < 500, response.content[:500]
    if response.streaming:
        assert response.status_code == 200
        return
    envelope = response.json()
    if response.status_code >= 400:
        assert set(envelope) == {"ok", "error"}, envelope
        assert envelope["ok"] is False
        assert isinstance(envelope["error"], str)
        assert envelope["error"]
    else:
        assert envelope["ok"] is True


def send_post(personas: dict[str, ApiClient], who: str, path: str, body: bytes) -> None:
    access.rate_limiter.reset()  # so the limit does not answer every later example with 429
    check(personas[who].client.post(path, body, content_type="application/json"))


# ── POST bodies ───────────────────────────────────────────────────────────


@pytest.mark.parametrize("path", [p for p in POST_FIELDS if p != "/v1/network"])
def test_no_post_body_gets_a_5xx(personas, path):
    @FUZZ
    @given(who=NON_ADMIN, body=bodies(POST_FIELDS[path], VALID[path]))
    def fuzz(who: str, body: bytes) -> None:
        send_post(personas, who, path, body)

    fuzz()


def test_no_network_toggle_gets_a_5xx_even_from_an_admin(personas):
    @FUZZ
    @given(who=st.sampled_from(["anyone", "alice", "root"]), body=bodies(POST_FIELDS["/v1/network"], {}))
    def fuzz(who: str, body: bytes) -> None:
        send_post(personas, who, "/v1/network", body)

    fuzz()


def test_no_task_result_or_subtask_gets_a_5xx_once_tasks_exist(personas):
    # Give the fuzzed reply_to / parent_task_id / task_message_id real tasks to hit.
    anyone = personas["anyone"]
    for kind in ("task", "task_request"):
        anyone.post("/v1/messages", {"from_agent": "alice", "to_agent": "bob", "kind": kind, "body": "work"})
    fields = ["from_agent", "kind", "body", "reply_to", "parent_task_id", "metadata", "to_agent", "channel"]

    @FUZZ
    @given(who=NON_ADMIN, body=bodies(fields, {"from_agent": "bob", "kind": "task_result", "reply_to": 2, "body": "x"}))
    def fuzz(who: str, body: bytes) -> None:
        send_post(personas, who, "/v1/messages", body)

    fuzz()


def test_no_ask_gets_a_5xx(personas):
    # Every fuzzed ask waits 0 s: the gathering wait itself is tested in test_ask_gather.
    fields = ["from_agent", "body", "channel", "to_capability", "max_replies", "thread_id", "metadata", "expects_reply"]

    def no_wait(body: bytes) -> bytes:
        try:
            value = json.loads(body)
        except ValueError:
            return body
        return json.dumps({**value, "timeout": 0}).encode() if isinstance(value, dict) else body

    @FUZZ
    @given(who=NON_ADMIN, body=bodies(fields, {"from_agent": "alice", "body": "who is free?"}).map(no_wait))
    def fuzz(who: str, body: bytes) -> None:
        send_post(personas, who, "/v1/ask", body)

    fuzz()


# ── Query strings and ids in paths ────────────────────────────────────────


@pytest.mark.parametrize("path", list(GET_PARAMS))
def test_no_query_string_gets_a_5xx(personas, path):
    @FUZZ
    @given(who=NON_ADMIN, params=queries(GET_PARAMS[path]))
    def fuzz(who: str, params: dict[str, str]) -> None:
        check(personas[who].client.get(path, params))

    fuzz()


PATH_IDS = st.one_of(
    st.integers(min_value=0, max_value=2**80).map(str),
    st.text(max_size=40).map(lambda text: quote(text, safe="")),
    st.sampled_from(["", "-1", "1.5", "0x10", "%00", "..", "..%2F..", "alice", "olivia"]),
)


@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("get", "/v1/messages/{}/status"),
        ("post", "/v1/tasks/{}/complete"),
        ("post", "/v1/tasks/{}/start"),
        ("post", "/v1/tasks/{}/fail"),
        ("post", "/v1/messages/{}/reply-claim"),
        ("get", "/v1/messages/{}/replies"),
        ("post", "/v1/inbox/{}/lease"),
        ("get", "/v1/threads/{}"),
        ("get", "/v1/inbox/{}"),
        ("delete", "/v1/sessions/{}"),
    ],
)
def test_no_id_in_a_path_gets_a_5xx(personas, method, template):
    @FUZZ
    @given(who=NON_ADMIN, ident=PATH_IDS)
    def fuzz(who: str, ident: str) -> None:
        check(getattr(personas[who].client, method)(template.format(ident)))

    fuzz()


def test_no_authorization_header_gets_a_5xx(personas):
    @FUZZ
    @given(
        header=st.one_of(
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=80),
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(
                "Bearer arc_{}".format
            ),
        )
    )
    def fuzz(header: str) -> None:
        check(personas["anyone"].client.get("/v1/bootstrap", {"agent_id": "alice"}, headers={"Authorization": header}))

    fuzz()


# ── What the fuzzer found ─────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        # On PostgreSQL each of these was a 500: it stores NUL in neither text nor jsonb.
        ("get", "/v1/tasks", {"channel": "\x00"}),
        ("get", "/v1/claims", {"thread_id": "a\x00"}),
        ("get", "/v1/locks", {"agent_id": "\x00"}),
        ("get", "/v1/messages", {"channel": "\x00"}),
        ("get", "/v1/bootstrap", {"agent_id": "\x00"}),
        ("get", "/v1/threads/%00", {}),
        ("get", "/v1/inbox/a%00", {}),
        ("delete", "/v1/sessions/%00", None),
        (
            "post",
            "/v1/messages",
            {"from_agent": "alice", "body": "x", "attachments": [{"type": "text", "content": "\x00"}]},
        ),
        ("post", "/v1/messages", {"from_agent": "alice", "body": "x", "metadata": {"k": ["\x00"]}}),
        ("post", "/v1/sessions", {"agent_id": "alice", "metadata": {"\x00": 1}}),
        ("post", "/v1/claims", {"owner_agent_id": "alice", "claim_key": "k", "metadata": {"note": "a\x00b"}}),
    ],
)
def test_it_refuses_nul_characters_with_400_on_every_database(personas, method, path, payload):
    client = personas["anyone"].client
    if method == "post":
        response = client.post(path, json.dumps(payload), content_type="application/json")
    else:
        response = getattr(client, method)(path, payload)

    assert response.status_code == 400
    assert "must not contain NUL characters" in response.json()["error"]
