"""Bad input never gets a 500 (docs/protocol.md, "Errors").

Every POST endpoint is fed malformed JSON, JSON that is not an object, invalid UTF-8,
empty bodies, missing fields and wrong types; each must answer a 4xx Arc envelope
``{"ok": false, "error": "..."}`` whose message says what to fix. Unknown paths get a
404 envelope, wrong methods a 405 envelope, and oversize bodies a 413 from the ASGI
guard before the body is read.

Personas: bob is a worker whose client is buggy; alice coordinates.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.test import override_settings

from arcsite.middleware import BodyLimit
from coordination.core import hub
from coordination.core.models import Message

# Every POST endpoint, with a body that would be accepted and the fields it requires.
POST_ENDPOINTS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "/v1/sessions": ({"agent_id": "bob"}, ["agent_id"]),
    "/v1/channels": ({"name": "builds"}, ["name"]),
    "/v1/messages": ({"from_agent": "bob", "body": "hi"}, ["from_agent"]),
    "/v1/claims": ({"owner_agent_id": "bob", "claim_key": "k"}, ["owner_agent_id"]),
    "/v1/claims/refresh": ({"claim_key": "k", "owner_agent_id": "bob"}, ["claim_key", "owner_agent_id"]),
    "/v1/claims/release": ({"claim_key": "k", "agent_id": "bob"}, ["claim_key", "agent_id"]),
    "/v1/locks": ({"agent_id": "bob", "file_path": "a.py"}, ["agent_id", "file_path"]),
    "/v1/locks/refresh": ({"agent_id": "bob", "file_path": "a.py"}, ["agent_id", "file_path"]),
    "/v1/locks/release": ({"agent_id": "bob", "file_path": "a.py"}, ["agent_id", "file_path"]),
    "/v1/tasks/1/complete": ({}, []),
    "/v1/network": ({}, []),
    "/v1/shutdown": ({"delay_sec": 3600}, []),
    "/v1/shutdown/cancel": ({}, []),
}

REQUIRED = [(path, field) for path, (_, fields) in POST_ENDPOINTS.items() for field in fields]

BAD_BODIES = [
    (b"{not json", "malformed JSON"),
    (b'{"agent_id": "bob"', "malformed JSON"),
    (b"[]", "request body must be a JSON object"),
    (b'[{"agent_id": "bob"}]', "request body must be a JSON object"),
    (b'"agent_id"', "request body must be a JSON object"),
    (b"42", "request body must be a JSON object"),
    (b"null", "request body must be a JSON object"),
    (b"true", "request body must be a JSON object"),
    (b'{"agent_id": "b\xffob"}', "request body must be valid UTF-8"),
    (b"\xfe\xff\x00{", "request body must be valid UTF-8"),
]

WRONG_TYPES = [
    # (path, field, value): string where an int goes, object where a string goes, bool where an int goes, ...
    ("/v1/sessions", "agent_id", {"name": "bob"}),
    ("/v1/sessions", "display_name", ["Bob"]),
    ("/v1/sessions", "capabilities", "code"),
    ("/v1/sessions", "capabilities", [{"skill": "code"}]),
    ("/v1/sessions", "metadata", "model=x"),
    ("/v1/sessions", "replace", "perhaps"),
    ("/v1/channels", "name", {"name": "builds"}),
    ("/v1/channels", "created_by", ["alice"]),
    ("/v1/channels", "metadata", ["topic"]),
    ("/v1/messages", "from_agent", {"id": "bob"}),
    ("/v1/messages", "to_agent", ["carol"]),
    ("/v1/messages", "channel", {"name": "general"}),
    ("/v1/messages", "kind", ["chat"]),
    ("/v1/messages", "body", {"text": "hi"}),
    ("/v1/messages", "body", True),
    ("/v1/messages", "attachments", {"type": "text"}),
    ("/v1/messages", "reply_to", "the last one"),
    ("/v1/messages", "reply_to", True),
    ("/v1/messages", "reply_to", 1.5),
    ("/v1/messages", "thread_id", {"id": "t"}),
    ("/v1/messages", "metadata", "x"),
    ("/v1/messages", "parent_task_id", "parent"),
    ("/v1/messages", "parent_task_id", False),
    ("/v1/claims", "owner_agent_id", {"id": "bob"}),
    ("/v1/claims", "claim_key", ["k"]),
    ("/v1/claims", "task_message_id", "seven"),
    ("/v1/claims", "task_message_id", True),
    ("/v1/claims", "thread_id", {"id": "t"}),
    ("/v1/claims", "ttl_sec", "long"),
    ("/v1/claims", "ttl_sec", True),
    ("/v1/claims", "metadata", ["x"]),
    ("/v1/claims/refresh", "claim_key", {"k": 1}),
    ("/v1/claims/refresh", "owner_agent_id", ["bob"]),
    ("/v1/claims/refresh", "ttl_sec", "long"),
    ("/v1/claims/refresh", "ttl_sec", True),
    ("/v1/claims/release", "claim_key", ["k"]),
    ("/v1/claims/release", "agent_id", {"id": "bob"}),
    ("/v1/locks", "agent_id", {"id": "bob"}),
    ("/v1/locks", "file_path", ["a.py"]),
    ("/v1/locks", "ttl_sec", "long"),
    ("/v1/locks", "ttl_sec", False),
    ("/v1/locks", "metadata", "x"),
    ("/v1/locks/refresh", "file_path", {"path": "a.py"}),
    ("/v1/locks/refresh", "ttl_sec", "long"),
    ("/v1/locks/release", "agent_id", ["bob"]),
    ("/v1/locks/release", "file_path", {"path": "a.py"}),
    ("/v1/network", "allow_remote", "perhaps"),
    ("/v1/network", "allow_remote", {"on": True}),
    ("/v1/shutdown", "delay_sec", "soon"),
    ("/v1/shutdown", "delay_sec", True),
    ("/v1/shutdown", "delay_sec", {"sec": 5}),
]


@pytest.fixture(autouse=True)
def no_pending_shutdown() -> Iterator[None]:
    """A bad request to /v1/shutdown must not start the timer; if one ever does, stop it so it cannot kill pytest."""
    yield
    if hub.shutdown.status() is not None:
        hub.shutdown.cancel()
        pytest.fail("a refused request started a shutdown")


ADMIN_PATHS = {"/v1/network", "/v1/shutdown", "/v1/shutdown/cancel"}


def client_for(path, api, admin_api):
    """Admin endpoints refuse anyone but an admin before they read the body; validate as the admin."""
    return admin_api if path in ADMIN_PATHS else api


def assert_error_envelope(status, env, expected_status=400):
    assert status == expected_status, env
    assert set(env) == {"ok", "error"}
    assert env["ok"] is False
    assert isinstance(env["error"], str)
    assert env["error"]


# ── Bodies that are not a JSON object ───────────────────────────────────────


@pytest.mark.parametrize("path", list(POST_ENDPOINTS))
@pytest.mark.parametrize(("raw", "error"), BAD_BODIES)
def test_it_refuses_a_body_that_is_not_a_json_object(api, admin_api, path, raw, error):
    status, env = client_for(path, api, admin_api).post(path, raw=raw)

    assert_error_envelope(status, env)
    assert env["error"].startswith(error)


def test_non_object_errors_name_the_type_received(api):
    assert api.post("/v1/claims", raw=b"[]")[1]["error"] == "request body must be a JSON object, not list"
    assert api.post("/v1/claims", raw=b'"x"')[1]["error"] == "request body must be a JSON object, not str"
    assert api.post("/v1/claims", raw=b"42")[1]["error"] == "request body must be a JSON object, not int"
    assert api.post("/v1/claims", raw=b"null")[1]["error"] == "request body must be a JSON object, not null"


def test_deeply_nested_json_is_refused_not_crashed_on(api):
    status, env = api.post("/v1/messages", raw=b"[" * 100_000)

    assert_error_envelope(status, env)
    assert env["error"].startswith("malformed JSON")


# ── Missing and empty fields ────────────────────────────────────────────────


@pytest.mark.parametrize("path", [path for path, (_, fields) in POST_ENDPOINTS.items() if fields])
def test_an_empty_body_names_the_missing_field(api, path):
    status, env = api.post(path, raw=b"")

    assert_error_envelope(status, env)
    assert env["error"] == f"{POST_ENDPOINTS[path][1][0]}: This field is required."


@pytest.mark.parametrize(("path", "field"), REQUIRED)
@pytest.mark.parametrize("how", ["absent", "null", "empty", "blank"])
def test_a_missing_required_field_is_named(api, path, field, how):
    payload = dict(POST_ENDPOINTS[path][0])
    if how == "absent":
        del payload[field]
    else:
        payload[field] = {"null": None, "empty": "", "blank": "   "}[how]

    status, env = api.post(path, payload)

    assert_error_envelope(status, env)
    assert field in env["error"]


def test_endpoints_without_required_fields_accept_an_empty_body(api, admin_api):
    assert admin_api.post("/v1/network", raw=b"") == (200, {"ok": True, "result": {"allow_remote": False}})
    assert api.post("/v1/tasks/1/complete", raw=b"") == (404, {"ok": False, "error": "task not found"})
    assert admin_api.post("/v1/shutdown/cancel", raw=b"") == (400, {"ok": False, "error": "no shutdown pending"})


# ── Wrong types ─────────────────────────────────────────────────────────────


@pytest.mark.parametrize(("path", "field", "value"), WRONG_TYPES)
def test_a_wrong_type_is_refused_and_named(api, admin_api, path, field, value):
    payload = {**POST_ENDPOINTS[path][0], field: value}

    status, env = client_for(path, api, admin_api).post(path, payload)

    assert_error_envelope(status, env)
    assert field in env["error"]


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/v1/messages", {"from_agent": "bob", "body": "hi", "reply_to": 10**30}, "reply_to"),
        (
            "/v1/messages",
            {"from_agent": "bob", "body": "hi", "kind": "task", "parent_task_id": 10**30},
            "parent_task_id",
        ),
        ("/v1/claims", {"owner_agent_id": "bob", "task_message_id": 10**30}, "task_message_id"),
        ("/v1/claims", {"owner_agent_id": "bob", "claim_key": "k", "ttl_sec": 10**30}, "ttl_sec"),
        ("/v1/shutdown", {"delay_sec": 10**30}, "delay_sec"),
    ],
)
def test_an_integer_too_large_for_storage_is_refused(api, admin_api, path, payload, field):
    status, env = client_for(path, api, admin_api).post(path, payload)

    assert_error_envelope(status, env)
    assert field in env["error"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/tasks", {"parent_id": str(10**30)}, "parent_id"),
        ("/v1/tasks", {"parent_id": "1.5"}, "parent_id"),
        ("/v1/messages", {"channel": "general", "since_id": str(10**30)}, None),
        ("/v1/events", {"agent_id": "bob", "since_id": str(10**30)}, None),
        ("/v1/inbox/bob", {"since_id": str(10**30)}, None),
        ("/v1/messages", {"channel": "general", "limit": str(10**30)}, None),
    ],
)
def test_huge_or_odd_numbers_in_queries_are_not_a_crash(api, path, params, field):
    status, env = api.get(path, **params)

    if field is None:
        assert (status, env) == (200, {"ok": True, "result": []})
    else:
        assert_error_envelope(status, env)
        assert field in env["error"]


# Each of these was a 500 or a crash before (Python's int-string limit, floats past 64 bits, NaN,
# text PostgreSQL cannot store): each is now the ordinary 400, and the hub goes on.
BAD_JSON = [
    pytest.param(
        b'{"from_agent": "bob", "body": "x", "reply_to": ' + b"9" * 5001 + b"}", "out of range", id="5001-digits"
    ),
    pytest.param(
        b'{"from_agent": "bob", "body": "x", "metadata": {"n": ' + b"1" * 4301 + b"}}", "out of range", id="deep-digits"
    ),
    pytest.param(b'{"from_agent": "bob", "body": "x", "metadata": {"f": 1e400}}', "out of range", id="1e400"),
    pytest.param(b'{"from_agent": "bob", "body": "x", "metadata": {"f": NaN}}', "out of range", id="NaN"),
    pytest.param(b'{"from_agent": "bob", "body": "x", "metadata": {"f": -Infinity}}', "out of range", id="infinity"),
    pytest.param(b'{"from_agent": "bob", "body": "\\ud800"}', "lone surrogate", id="lone-surrogate"),
    pytest.param(
        b'{"from_agent": "bob", "body": "x", "metadata": {"\\udfff": 1}}', "lone surrogate", id="surrogate-key"
    ),
]


@pytest.mark.parametrize(("raw", "error"), BAD_JSON)
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/claims", "/v1/sessions", "/v1/tasks"])
def test_numbers_and_text_no_database_can_hold_are_a_400(api, path, raw, error):
    before = Message.objects.count()

    status, env = api.post(path, raw=raw)

    assert_error_envelope(status, env)
    assert error in env["error"]
    assert Message.objects.count() == before
    assert api.get("/v1/hub-info")[0] == 200  # and the hub goes on


def test_a_number_of_thousands_of_digits_in_a_query_is_a_400(api):
    status, env = api.get("/v1/messages", channel="general", since_id="9" * 5001)

    assert_error_envelope(status, env)
    assert "since_id" in env["error"]


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/v1/sessions", {"agent_id": "team/bob"}, "agent_id"),
        ("/v1/messages", {"from_agent": "team/bob", "body": "x"}, "from_agent"),
        ("/v1/messages", {"from_agent": "alice", "to_agent": "team/bob", "body": "x"}, "to_agent"),
        ("/v1/claims", {"owner_agent_id": "team/bob", "claim_key": "k"}, "owner_agent_id"),
        ("/v1/locks", {"agent_id": "team/bob", "file_path": "f"}, "agent_id"),
    ],
)
def test_an_agent_id_with_a_slash_is_refused_where_an_agent_comes_to_exist(api, path, payload, field):
    # /v1/inbox/{agent_id} could never address it: %2F is decoded before routing.
    status, env = api.post(path, payload)

    assert_error_envelope(status, env)
    assert env["error"].startswith(f"{field} must not contain '/'")


def test_a_thread_and_a_room_with_a_slash_in_their_names_are_addressable(api, admin_api):
    assert api.post("/v1/channels", {"name": "team/ops"})[0] == 201
    assert (
        api.post("/v1/messages", {"from_agent": "bob", "channel": "team/ops", "thread_id": "a/b", "body": "x"})[0]
        == 201
    )

    status, env = api.get("/v1/threads/a%2Fb")
    assert (status, env["result"]["thread"]["thread_id"]) == (200, "a/b")
    status, env = admin_api.post("/v1/channels/team%2Fops/close")
    assert (status, env["result"]["name"], env["changed"]) == (200, "team/ops", True)
    assert admin_api.post("/v1/channels/team/ops/reopen")[1]["result"]["closed"] is False


# ── Content types ───────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", "application/octet-stream"]
)
def test_a_json_body_is_parsed_whatever_the_content_type_like_arc(api, content_type):
    raw = json.dumps({"from_agent": "bob", "body": "sent with curl -d"})

    status, env = api.post("/v1/messages", raw=raw, content_type=content_type)

    assert status == 201
    assert env["result"]["body"] == "sent with curl -d"


def test_a_form_encoded_body_is_not_json(api):
    status, env = api.post(
        "/v1/messages", raw="from_agent=bob&body=hi", content_type="application/x-www-form-urlencoded"
    )

    assert_error_envelope(status, env)
    assert env["error"].startswith("malformed JSON")


# ── Unknown paths and wrong methods ─────────────────────────────────────────


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/nope"),
        ("post", "/v1/nope"),
        ("delete", "/v1/nope"),
        ("get", "/v2/channels"),
        ("get", "/v1/channels/"),
        ("get", "/v1/threads/"),
        ("get", "/v1/inbox/"),
        ("post", "/v1/claims/steal"),
        ("post", "/v1/tasks/abc/complete"),
        ("post", "/v1/tasks/-1/complete"),
        ("post", "/v1/tasks/1/finish"),
        ("delete", "/v1/sessions/"),
        ("get", "/no/such/page"),
    ],
)
def test_an_unknown_path_gets_a_404_envelope(api, method, path):
    body = {} if method == "get" else {"data": "{}", "content_type": "application/json"}

    response = getattr(api.client, method)(path, **body)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"ok": False, "error": "not found"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/sessions"),
        ("put", "/v1/sessions/abc"),
        ("post", "/v1/sessions/abc"),
        ("post", "/v1/agents"),
        ("delete", "/v1/channels"),
        ("post", "/v1/hub-info"),
        ("delete", "/v1/messages"),
        ("put", "/v1/messages"),
        ("post", "/v1/events"),
        ("post", "/v1/stream"),
        ("post", "/v1/bootstrap"),
        ("post", "/v1/threads"),
        ("post", "/v1/threads/t-1"),
        ("post", "/v1/inbox/bob"),
        ("delete", "/v1/claims"),
        ("get", "/v1/claims/refresh"),
        ("get", "/v1/claims/release"),
        ("patch", "/v1/locks"),
        ("get", "/v1/locks/release"),
        ("delete", "/v1/tasks"),
        ("get", "/v1/tasks/1/complete"),
        ("delete", "/v1/network"),
        ("get", "/v1/shutdown/cancel"),
        ("options", "/v1/sessions"),
        ("options", "/v1/messages"),
    ],
)
def test_a_wrong_method_gets_a_405_envelope(api, method, path):
    response = getattr(api.client, method)(path)

    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    env = response.json()
    assert set(env) == {"ok", "error"}
    assert env["ok"] is False
    assert method.upper() in env["error"]
    assert "not allowed" in env["error"].lower()


# ── Oversize bodies ─────────────────────────────────────────────────────────


def test_the_request_cap_is_arcs_formula():
    assert settings.ARC_MAX_REQUEST_BYTES == (
        settings.ARC_MAX_BODY_CHARS + settings.ARC_MAX_ATTACHMENT_CHARS * settings.ARC_MAX_ATTACHMENTS + 65_536
    )
    assert BodyLimit(echo_app).limit == settings.ARC_MAX_REQUEST_BYTES


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=64)
def test_django_refuses_an_oversize_body_with_a_413_envelope_too(api):
    """Behind the ASGI guard, Django's own cap still answers with an envelope (the in-process backstop)."""
    status, env = api.post("/v1/messages", {"from_agent": "bob", "body": "x" * 100})

    assert_error_envelope(status, env, 413)
    assert api.get("/v1/messages", channel="general")[1]["result"] == []


async def echo_app(scope, receive, send):
    """A tiny ASGI app that reads the whole body and answers with its length."""
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


class Wire:
    """One HTTP request fed to an ASGI app chunk by chunk, recording what the app pulled and sent."""

    def __init__(self, chunks, headers=()):
        self.chunks = list(chunks)
        self.scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/messages",
            "headers": list(headers),
            "query_string": b"",
        }
        self.pulled = 0
        self.sent = []

    async def receive(self):
        if self.pulled >= len(self.chunks):
            await asyncio.sleep(3600)  # a client that never sends more: the guard must not wait for it
        chunk = self.chunks[self.pulled]
        self.pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": self.pulled < len(self.chunks)}

    async def send(self, message):
        self.sent.append(message)

    async def run(self, app):
        await asyncio.wait_for(app(self.scope, self.receive, self.send), timeout=5)
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        return start["status"], dict(start["headers"]), body


@pytest.fixture
def instance_id(monkeypatch) -> str:
    """The hub's identity as this process has cached it (the guard stamps it without a database)."""
    monkeypatch.setattr(hub, "cached_instance_id", lambda: "mh1-00000000000000000000")
    return "mh1-00000000000000000000"


async def test_the_guard_answers_413_from_content_length_without_reading(instance_id):
    wire = Wire([b"x" * 101], headers=[(b"content-length", b"101")])

    status, headers, body = await wire.run(BodyLimit(echo_app, limit=100))

    assert status == 413
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"x-arc-instance"] == instance_id.encode()
    assert json.loads(body) == {"ok": False, "error": "request body exceeds max size (100 bytes)"}
    assert wire.pulled == 0


async def test_the_guard_answers_413_for_a_chunked_body_without_reading_past_the_cap(instance_id):
    wire = Wire([b"x" * 40] * 10)  # 400 bytes, no Content-Length

    status, headers, body = await wire.run(BodyLimit(echo_app, limit=100))

    assert status == 413
    assert headers[b"x-arc-instance"] == instance_id.encode()
    assert json.loads(body)["ok"] is False
    assert wire.pulled == 3  # 40 + 40 + 40 crosses 100: nothing after that chunk is read
    assert len([m for m in wire.sent if m["type"] == "http.response.start"]) == 1


async def test_the_guard_stops_a_chunked_body_in_front_of_django(instance_id):
    wire = Wire([b"{" + b" " * 60] + [b" " * 60] * 10)

    status, _, body = await wire.run(BodyLimit(get_asgi_application(), limit=100))

    assert status == 413
    assert json.loads(body) == {"ok": False, "error": "request body exceeds max size (100 bytes)"}
    assert wire.pulled == 2


@pytest.mark.parametrize(
    ("chunks", "headers"),
    [
        ([b"x" * 100], [(b"content-length", b"100")]),
        ([b"x" * 50, b"x" * 50], []),
        ([b""], []),
    ],
)
async def test_the_guard_lets_bodies_up_to_the_cap_through(chunks, headers):
    wire = Wire(chunks, headers=headers)

    status, _, body = await wire.run(BodyLimit(echo_app, limit=100))

    assert status == 200
    assert int(body) == sum(len(c) for c in chunks)


@pytest.mark.parametrize("value", [b"lots", b"-1", b"1.5", b""])
async def test_the_guard_refuses_a_bad_content_length(instance_id, value):
    wire = Wire([b"{}"], headers=[(b"content-length", value)])

    status, headers, body = await wire.run(BodyLimit(echo_app, limit=100))

    assert status == 400
    assert headers[b"x-arc-instance"] == instance_id.encode()
    assert json.loads(body) == {"ok": False, "error": "Content-Length must be a non-negative integer"}
    assert wire.pulled == 0


async def test_the_guard_ignores_non_http_scopes():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    async def receive():
        return {"type": "websocket.connect"}

    async def send(message):
        pass

    await BodyLimit(app, limit=1)({"type": "websocket", "headers": [(b"content-length", b"999")]}, receive, send)

    assert seen == ["websocket"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_the_health_checks_answer_another_method_with_a_405_envelope(db, client, path):
    response = client.post(path, data="{", content_type="application/json")
    assert response.status_code == 405
    assert response.json()["ok"] is False
    assert "GET only" in response.json()["error"]
    assert client.get("/healthz").json()["result"]["status"] == "alive"
