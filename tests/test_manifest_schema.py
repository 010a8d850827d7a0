"""The agent manifest (``GET /v1/manifest``, ``GET /`` for JSON clients), the OpenAPI document
(``GET /v1/schema``) and the offline docs page (``/docs``).

Personas:
- ``anyone``: the anonymous loopback client (acts as any agent it names, as in Arc);
- ``alice`` and ``bob``: agents talking through the API to produce real answers, which are
  checked against the schema;
- ``root``: an admin key, for the admin endpoints;
- a browser (``text/html`` first) and a remote client (``REMOTE_ADDR`` not loopback).
"""

from __future__ import annotations

import json
import re
import types
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, include, path
from drf_spectacular.drainage import GENERATOR_STATS
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_spec
from rest_framework.schemas.generators import is_api_view
from rest_framework.views import APIView

from coordination.api import schema
from coordination.api.envelope import ok
from coordination.core import inputs as input_shapes
from coordination.core import services
from coordination.core.models import Claim, Delivery, Lock, Message, Room, Session, Task
from coordination.ws import frames
from tests.conftest import ApiClient, Persona
from tests.hubproc import Hub, running_hub

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
REMOTE = "203.0.113.7"


@pytest.fixture
def anyone(api: ApiClient) -> ApiClient:
    return api


@pytest.fixture
def root(api: ApiClient) -> Persona:
    return Persona("root", admin=True)


@pytest.fixture
def document(api: ApiClient) -> dict[str, Any]:
    response = api.client.get("/v1/schema")
    assert response.status_code == 200
    return json.loads(response.content)


# ── Which routes exist, read from the URL resolver itself ─────────────────


def routes(patterns: list[Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(OpenAPI-style path, callback) of every URL pattern, walking includes."""
    found: list[tuple[str, Any]] = []
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            found.extend(routes(pattern.url_patterns, route))
        else:
            assert isinstance(pattern, URLPattern)
            found.append(("/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route), pattern.callback))
    return found


def api_methods(callback: Any) -> set[str]:
    return {m for m in callback.cls().allowed_methods if m not in {"OPTIONS", "HEAD"}}


def undescribed(urlpatterns: list[Any], document: dict[str, Any]) -> list[str]:
    """What a URLconf routes under /v1 (or has entries for) that ``document`` does not describe."""
    problems = []
    for route, callback in routes(urlpatterns):
        entries = {method for (path_, method) in schema.docs() if path_ == route}
        if not route.startswith("/v1/") and not entries:
            continue
        item = document["paths"].get(route)
        if item is None:
            problems.append(f"{route}: routed but not in the schema (add a Doc in coordination/api/schema.py)")
            continue
        methods = api_methods(callback) if is_api_view(callback) else entries
        for method in sorted(methods):
            operation = item.get(method.lower())
            if operation is None or (route, method) not in schema.docs():
                problems.append(f"{method} {route}: no description (add a Doc in coordination/api/schema.py)")
            elif not operation.get("summary") or not operation.get("description"):
                problems.append(f"{method} {route}: no summary or description")
    return problems


def test_every_routed_v1_path_is_described(document):
    urlpatterns = get_resolver().url_patterns
    assert undescribed(urlpatterns, document) == []
    v1 = {route for route, _ in routes(urlpatterns) if route.startswith("/v1/")}
    assert v1 <= set(document["paths"])
    assert len(v1) >= 40  # the walk found the API (a broken walk would find nothing to check)


def test_a_route_without_a_description_fails_the_coverage_check(api):
    """A view routed under /v1 with no Doc is caught, a DRF view or an async function alike."""

    class ExportView(APIView):
        def get(self, request: Any) -> Any:
            return ok([])

    async def export_stream(request: Any) -> Any:
        return ok([])

    urlconf = types.ModuleType("arc_test_urls")
    urlconf.urlpatterns = [  # type: ignore[attr-defined]
        path("v1/", include("coordination.api.urls")),
        path("v1/export", ExportView.as_view()),
        path("v1/export/stream", export_stream),
    ]
    document = schema.ArcSchemaGenerator(urlconf=urlconf).get_schema(public=True)

    problems = undescribed(urlconf.urlpatterns, document)
    assert any(p.startswith("GET /v1/export: no description") for p in problems), problems
    assert any(p.startswith("/v1/export/stream: routed but not in the schema") for p in problems), problems
    assert len(problems) == 2, problems


def test_the_schema_describes_only_routed_paths(api):
    urlconf = types.ModuleType("arc_test_urls_small")
    from coordination.api import views

    urlconf.urlpatterns = [path("v1/sessions", views.SessionsView.as_view())]  # type: ignore[attr-defined]
    document = schema.ArcSchemaGenerator(urlconf=urlconf).get_schema(public=True)
    assert set(document["paths"]) == {"/v1/sessions"}
    assert set(document["paths"]["/v1/sessions"]) == {"post"}


def test_async_views_answer_405_to_methods_the_schema_does_not_list(anyone, document):
    """The function views' methods come from the Docs: a method they serve but the Docs miss would show here."""
    for route, callback in routes(get_resolver().url_patterns):
        if is_api_view(callback) or not route.startswith("/v1/"):
            continue
        listed = {m.upper() for m in document["paths"][route]}
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - listed:
            response = anyone.client.generic(method, re.sub(r"\{\w+\}", "1", route))
            assert response.status_code == 405, (method, route)
            assert response.json()["ok"] is False


def test_schema_is_valid_openapi_3_and_builds_without_warnings(document):
    validate_spec(document)
    assert document["openapi"].startswith("3.")
    assert document["info"]["version"] == schema.hub_version() != "unknown"

    GENERATOR_STATS.reset()
    schema.ArcSchemaGenerator().get_schema(public=True)
    assert not GENERATOR_STATS._warn_cache
    assert not GENERATOR_STATS._error_cache


def test_schema_is_json_by_default_and_yaml_on_request(anyone):
    response = anyone.client.get("/v1/schema")
    assert response["Content-Type"].startswith("application/json")
    assert json.loads(response.content)["paths"]
    assert response["X-Arc-Instance"]
    yaml = anyone.client.get("/v1/schema", {"format": "yaml"})
    assert yaml.status_code == 200
    assert yaml.content.startswith(b"openapi: 3.")
    assert anyone.client.get("/v1/schema", HTTP_ACCEPT="application/yaml").content.startswith(b"openapi: 3.")


def test_request_bodies_are_the_input_serializers(document):
    """Each POST names the serializer its view parses with, and that component has exactly its fields."""
    components = document["components"]["schemas"]
    for (route, method), doc in schema.docs().items():
        if method != "POST" or route not in document["paths"] or doc.body is None:
            continue
        body = document["paths"][route]["post"].get("requestBody")
        assert body is not None, f"POST {route}: its view parses no serializer the schema could find"
        name = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        shape = getattr(input_shapes, name)
        fields = shape().fields
        assert set(components[name]["properties"]) == set(fields), name
        assert set(components[name].get("required", [])) == {n for n, f in fields.items() if f.required}, name


def test_serializer_in_reads_the_view_code():
    from coordination.api import views

    assert schema.serializer_in(views.ClaimsView.post) is input_shapes.ClaimAcquire
    assert schema.serializer_in(views.ClaimsView.get) is None
    assert schema.serializer_in(views.TaskCompleteView.post) is None


# ── Answers match the schema ──────────────────────────────────────────────


class Checker:
    """Calls endpoints by their schema path and validates each answer against the documented response."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.seen: set[tuple[str, str]] = set()

    def schema_for(self, route: str, method: str, status: int) -> dict[str, Any]:
        responses = self.document["paths"][route][method.lower()]["responses"]
        assert str(status) in responses, f"{method} {route} answered {status}, which the schema does not list"
        response = responses[str(status)]
        if "$ref" in response:
            response = self.document["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
        return {**response["content"]["application/json"]["schema"], "components": self.document["components"]}

    def __call__(
        self, client: ApiClient, method: str, route: str, body: Any = None, expect: int = 200, **args: Any
    ) -> Any:
        url = route.format(**{k: v for k, v in args.items() if "{" + k + "}" in route})
        query = {k: v for k, v in args.items() if "{" + k + "}" not in route}
        if method == "GET":
            status, payload = client.get(url, **query)
        elif method == "DELETE":
            status, payload = client.delete(url)
        else:
            status, payload = client.post(url, body or {})
        assert status == expect, (method, url, status, payload)
        OAS30Validator(self.schema_for(route, method, status)).validate(payload)
        self.seen.add((route, method))
        return payload.get("result")


def test_answers_match_the_documented_shapes(anyone, root, document):
    call = Checker(document)
    alice = bob = anyone
    call(alice, "POST", "/v1/sessions", {"agent_id": "alice", "capabilities": ["plan"]}, 201)
    bob_session = call(bob, "POST", "/v1/sessions", {"agent_id": "bob", "capabilities": ["code"]}, 201)
    call(anyone, "GET", "/v1/agents", capability="code")
    call(anyone, "GET", "/v1/agents", wait_for=1, timeout=0)
    call(anyone, "GET", "/v1/bootstrap", agent_id="bob")
    call(anyone, "POST", "/v1/channels", {"name": "ops"}, 201)
    call(anyone, "POST", "/v1/channels", {"name": "ops"}, 200)
    call(anyone, "GET", "/v1/channels")
    call(anyone, "GET", "/v1/hub-info")
    call(anyone, "GET", "/v1/stats")
    call(anyone, "GET", "/v1/manifest")
    call(anyone, "GET", "/v1/network")
    call(anyone, "GET", "/v1/shutdown")

    task = call(
        alice,
        "POST",
        "/v1/messages",
        {"from_agent": "alice", "kind": "task", "body": "fix the parser", "thread_id": "t1", "ttl_sec": 600},
        201,
    )
    question = call(
        alice, "POST", "/v1/messages", {"from_agent": "alice", "body": "who?", "expects_reply": "anyone"}, 201
    )
    dm = call(
        alice, "POST", "/v1/messages", {"from_agent": "alice", "to_agent": "bob", "body": "hi", "priority": "high"}, 201
    )
    call(anyone, "GET", "/v1/messages", channel="general", since_id=0)
    call(anyone, "GET", "/v1/events", agent_id="bob", since_id=0)
    call(anyone, "GET", "/v1/messages/{message_id}/status", message_id=dm["id"])
    call(anyone, "GET", "/v1/messages/{message_id}/status", message_id=task["id"])
    call(bob, "POST", "/v1/messages/{message_id}/reply-claim", {"agent_id": "bob"}, 201, message_id=question["id"])
    call(alice, "POST", "/v1/messages/{message_id}/reply-claim", {"agent_id": "carol"}, 200, message_id=question["id"])
    call(
        bob,
        "POST",
        "/v1/messages",
        {"from_agent": "bob", "body": "me", "reply_to": question["id"]},
        201,
    )
    call(anyone, "GET", "/v1/messages/{message_id}/replies", message_id=question["id"], max=1)
    call(alice, "POST", "/v1/ask", {"from_agent": "alice", "channel": "general", "body": "ready?", "timeout": 0}, 201)
    call(anyone, "GET", "/v1/search", q="parser")
    call(anyone, "GET", "/v1/inbox/{agent_id}", agent_id="bob")
    call(anyone, "GET", "/v1/threads")
    call(anyone, "GET", "/v1/threads/{thread_id}", thread_id="t1")
    call(anyone, "GET", "/v1/threads/{thread_id}", expect=404, thread_id="nope")

    leased = call(bob, "POST", "/v1/inbox/{agent_id}/lease", {"max": 5, "lease_sec": 30}, agent_id="bob")
    assert [m["id"] for m in leased] == [dm["id"]]
    call(bob, "POST", "/v1/deliveries/nack", {"agent_id": "bob", "message_id": dm["id"], "reason": "later"})
    call(anyone, "GET", "/v1/deliveries", agent_id="bob")
    call(bob, "POST", "/v1/deliveries/ack", {"agent_id": "bob", "message_ids": [dm["id"]]})
    call(root, "POST", "/v1/deliveries/retry", {"message_ids": [dm["id"]]})

    call(bob, "POST", "/v1/claims", {"owner_agent_id": "bob", "task_message_id": task["id"], "thread_id": "t1"}, 201)
    call(alice, "POST", "/v1/claims", {"owner_agent_id": "alice", "task_message_id": task["id"]}, 200)
    call(anyone, "GET", "/v1/claims", thread_id="t1")
    call(bob, "POST", "/v1/claims/refresh", {"owner_agent_id": "bob", "claim_key": f"task-{task['id']}"})
    call(bob, "POST", "/v1/claims/release", {"agent_id": "bob", "claim_key": f"task-{task['id']}"})
    call(bob, "POST", "/v1/locks", {"agent_id": "bob", "file_path": "src/p.py"}, 201)
    call(alice, "POST", "/v1/locks", {"agent_id": "alice", "file_path": "src/p.py"}, 200)
    call(anyone, "GET", "/v1/locks", active_only=1)
    call(bob, "POST", "/v1/locks/refresh", {"agent_id": "bob", "file_path": "src/p.py"})
    call(bob, "POST", "/v1/locks/release", {"agent_id": "bob", "file_path": "src/p.py"})
    call(anyone, "GET", "/v1/tasks", status="in_progress")
    call(bob, "POST", "/v1/tasks/{task_id}/complete", {}, task_id=task["id"])
    other = call(alice, "POST", "/v1/messages", {"from_agent": "alice", "kind": "task", "body": "b"}, 201)
    call(bob, "POST", "/v1/tasks/{task_id}/start", {}, task_id=other["id"])
    call(bob, "POST", "/v1/tasks/{task_id}/fail", {"reason": "no"}, task_id=other["id"])
    call(bob, "POST", "/v1/tasks/{task_id}/start", {}, 409, task_id=other["id"])
    handed = call(alice, "POST", "/v1/tasks", {"from_agent": "alice", "to_agent": "bob", "body": "review"}, 201)
    call(bob, "POST", "/v1/tasks/{task_id}/result", {"from_agent": "bob", "body": "ok"}, 201, task_id=handed["id"])

    call(root, "POST", "/v1/channels/{name}/close", {}, name="ops")
    call(anyone, "POST", "/v1/messages", {"from_agent": "alice", "channel": "ops", "body": "x"}, 409)
    call(anyone, "GET", "/v1/messages", channel="ops", timeout=0)
    call(root, "POST", "/v1/channels/{name}/reopen", {}, name="ops")
    call(anyone, "POST", "/v1/network", {"allow_remote": True}, 403)
    call(root, "POST", "/v1/network", {"allow_remote": False})
    call(anyone, "POST", "/v1/messages", {"from_agent": "alice", "body": []}, 400)
    call(anyone, "DELETE", "/v1/sessions/{session_id}", session_id=bob_session["session_id"])

    # Every endpoint answering an envelope was exercised, except the shutdown itself.
    envelope_ops = {key for key, doc in schema.docs().items() if doc.result is not None and key[0] in document["paths"]}
    assert envelope_ops - call.seen == {("/", "GET"), ("/v1/shutdown", "POST"), ("/v1/shutdown/cancel", "POST")}


def test_each_documented_object_has_exactly_the_fields_its_model_sends(document):
    """A field added to an ``as_wire`` without a description fails here (coordination/api/schema.py)."""
    from django.utils import timezone

    now = timezone.now()
    message = Message(id=1, from_agent="a", channel="general", priority="high", expires_at=now, expects_reply="anyone")
    samples = {
        "Message": message.as_wire(),
        "Session": Session(session_id="s", agent_id="a", display_name="a").as_wire(),
        "Room": Room(name="general").as_wire(),
        "Claim": Claim(claim_key="k", owner_agent_id="a", expires_at=now).as_wire(),
        "Lock": Lock(file_path="f", agent_id="a", expires_at=now).as_wire(),
        "Task": Task(
            task_id=1, channel="general", requester="a", assignee="b", started_at=now, deadline=now, failure_reason="x"
        ).as_wire(),
        "Delivery": {**Delivery(message=message, agent_id="b").as_wire(), "message": message.as_wire()},
    }
    components = document["components"]["schemas"]
    for name, wire in samples.items():
        assert set(wire) == set(components[name]["properties"]), name
        OAS30Validator({"$ref": f"#/components/schemas/{name}", "components": document["components"]}).validate(wire)


# ── The manifest ──────────────────────────────────────────────────────────


def test_manifest_is_served_at_v1_manifest_and_at_root_for_json_clients(anyone, document):
    response = anyone.client.get("/v1/manifest")
    assert response.status_code == 200
    assert response["X-Arc-Instance"]
    by_url = response.json()["result"]
    root_response = anyone.client.get("/", HTTP_ACCEPT="application/json")
    assert root_response.status_code == 200
    assert root_response["Content-Type"].startswith("application/json")
    assert "Accept" in root_response["Vary"]
    assert root_response.json()["result"] == by_url

    # The endpoints are the schema's operations, each once.
    listed = {(e["method"], e["path"]) for e in by_url["endpoints"]}
    assert listed == {(method, route) for route, method, _ in schema.operations(document)}
    assert len(listed) == len(by_url["endpoints"])
    post = next(e for e in by_url["endpoints"] if (e["method"], e["path"]) == ("POST", "/v1/messages"))
    assert {"from_agent", "to_agent", "channel", "kind", "body", "expects_reply"} <= set(post["body"])
    assert "from_agent" in post["required"]
    events = next(e for e in by_url["endpoints"] if e["path"] == "/v1/events")
    assert "timeout" in events["query"]
    assert "agent_id" in events["required"]
    toggle = next(e for e in by_url["endpoints"] if (e["method"], e["path"]) == ("POST", "/v1/network"))
    assert toggle["access"] == "admin"

    assert by_url["links"] == {
        "manifest": "/v1/manifest",
        "schema": "/v1/schema",
        "docs": "/docs",
        "dashboard": "/",
        "websocket": "/v1/ws",
        "stream": "/v1/stream",
        "metrics": "/metrics",
        "mcp": "/mcp",
        "a2a_card": "/.well-known/agent-card.json",
        "a2a": "/a2a",
        "a2a_agent": "/a2a/agents/{agent}",
        "a2a_rest": "/a2a/rest",
        "hooks": "/v1/hooks/{client}",
    }
    assert len(by_url["first_five_calls"]) == 5
    for step in by_url["first_five_calls"]:
        method, target = step["call"].split(" ", 1)
        assert (method, target.split("?")[0]) in listed, step


def test_manifest_describes_kinds_etiquette_auth_and_the_websocket(anyone):
    result = anyone.get("/v1/manifest")[1]["result"]
    assert set(result["messages"]["kinds"]) == set(Message.Kind.values)
    assert all(result["messages"]["kinds"].values())
    assert result["messages"]["priorities"] == ["critical", "high", "normal", "low"]
    assert set(result["messages"]["expects_reply"]) == {"none", "anyone", "<agent id>", "operator"}
    assert result["messages"]["task_statuses"] == list(Task.Status.values)
    assert any("reply-claim" in line for line in result["etiquette"])
    assert result["auth"]["mode"] == "loopback-open"
    assert "Authorization: Bearer" in result["auth"]["send_key"]
    assert {"POST /v1/network", "POST /v1/shutdown", "POST /v1/channels/{name}/close"} <= set(
        result["auth"]["admin"]["endpoints"]
    )
    assert "GET /v1/network" not in result["auth"]["admin"]["endpoints"]
    assert result["hub"]["version"] == schema.hub_version()

    socket = result["websocket"]
    assert set(socket["client_frames"]) == set(frames.CLIENT_FRAMES)
    assert "capabilities" in socket["client_frames"]["register"]["fields"]
    # Every frame type the consumer sends is described.
    source = Path(frames.__file__).with_name("consumer.py").read_text()
    sent = set(re.findall(r'frames\.reply\(\s*"(\w+)"', source)) | set(re.findall(r'"type": "(\w+)"', source))
    sent |= {"message", "task", "result", "event", "error"}  # built in coordination.ws.frames
    assert sent <= set(socket["hub_frames"]), sent - set(socket["hub_frames"])


def test_manifest_limits_follow_the_settings(anyone, settings):
    settings.ARC_MAX_BODY_CHARS = 1234
    settings.ARC_RATE_LIMIT = (0, 1.0, 0)
    limits = anyone.get("/v1/manifest")[1]["result"]["limits"]
    assert limits["max_body_chars"] == 1234
    assert limits["rate_limit"] == "off"
    assert limits["max_query_limit"] == settings.ARC_MAX_QUERY_LIMIT
    assert limits["long_poll_max_timeout_sec"] == 60


def test_manifest_leaks_no_secret(anyone, root):
    from coordination.core import hub

    text = anyone.client.get("/", HTTP_ACCEPT="application/json").content.decode()
    assert settings.SECRET_KEY not in text
    assert root.key.prefix not in text
    assert hub.storage_path() not in text
    assert str(settings.ARC_HOME) not in text


def test_root_without_a_key_under_required_auth_but_v1_manifest_needs_one(anyone, root, settings):
    settings.ARC_AUTH = "required"
    assert anyone.client.get("/", HTTP_ACCEPT="application/json").status_code == 200
    status, payload = anyone.get("/v1/manifest")
    assert status == 401
    assert "ARC_AUTH=required" in payload["error"]
    assert root.get("/v1/manifest")[1]["result"]["auth"]["mode"] == "required"
    assert anyone.client.get("/docs").status_code == 200  # the page opens; its Authorize button takes a key


def test_a_remote_client_gets_the_manifest_only_while_remote_access_is_on(anyone):
    def remote_root() -> int:
        return anyone.client.get("/", HTTP_ACCEPT="application/json", REMOTE_ADDR=REMOTE).status_code

    assert remote_root() == 403
    services.network_set(allow_remote=True)
    assert remote_root() == 200  # no key needed at /, as for the dashboard
    assert anyone.client.get("/v1/manifest", REMOTE_ADDR=REMOTE).status_code == 401  # /v1 needs a key remotely


@pytest.mark.parametrize("accept", [BROWSER, "*/*", "text/html", None])
def test_browsers_and_wildcard_clients_still_get_the_dashboard(anyone, accept):
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    signed_out = Client().get("/", **headers)
    assert signed_out.status_code == 302  # the dashboard's sign-in, not the manifest
    assert signed_out["Location"].startswith("/login")
    browser = Client()
    browser.force_login(get_user_model().objects.create_superuser("ada", password="not-used"))
    response = browser.get("/", **headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    for answer in (signed_out, response):
        assert "Accept" in answer["Vary"]
        assert "/v1/manifest" in answer["Link"]


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "/v1/manifest"),
        ("DELETE", "/v1/manifest"),
        ("OPTIONS", "/v1/manifest"),
        ("POST", "/v1/schema"),
        ("PUT", "/v1/schema"),
        ("OPTIONS", "/v1/schema"),
        ("POST", "/docs"),
    ],
)
def test_wrong_methods_get_the_405_envelope(anyone, method, url):
    response = anyone.client.generic(method, url)
    assert response.status_code == 405
    assert response.json() == {"ok": False, "error": f'Method "{method}" not allowed.'}


# ── The docs page and its files, from a real hub process ──────────────────


class Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value:
                self.urls.append(value)


def fetch(url: str, accept: str = "*/*") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, _lower(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, _lower(exc.headers), exc.read()


def _lower(headers: Any) -> dict[str, str]:
    """Header names are case-insensitive (servers differ in how they spell them): lower-case keys."""
    return {name.lower(): value for name, value in headers.items()}


def check_docs_page(hub: Hub) -> None:
    status, headers, body = fetch(hub.url + "/docs", BROWSER)
    assert status == 200
    html = body.decode()
    # Nothing from another host: no CDN, no validator badge.
    assert re.findall(r"https?://[^\s\"'<>]+", html) == []
    parser = Assets()
    parser.feed(html)
    assert len(parser.urls) >= 3
    types_ = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for url in parser.urls:
        assert url.startswith("/static/"), url
        status, headers, body = fetch(hub.url + url)
        assert status == 200, url
        assert headers["content-type"].startswith(types_[Path(url).suffix]), (url, headers["content-type"])
        source = finders.find(url.removeprefix("/static/"))
        assert isinstance(source, str), url
        assert body == Path(source).read_bytes(), url
        assert headers["x-arc-instance"]  # static files pass the same edge as every page
    assert '"/v1/schema"' in html
    assert "schemaAuthNames" in html


@pytest.mark.live
def test_the_live_hub_serves_schema_manifest_docs_and_their_files(tmp_path):
    with running_hub(tmp_path / "hub") as hub:
        check_docs_page(hub)
        status, _, body = fetch(hub.url + "/v1/schema")
        assert status == 200
        validate_spec(json.loads(body))
        status, manifest_json = hub.call("GET", "/v1/manifest")
        assert status == 200
        assert manifest_json["result"]["hub"]["base_url"] == hub.url
        status, _, body = fetch(hub.url + "/", "application/json")
        assert (status, json.loads(body)["result"]["links"]["docs"]) == (200, "/docs")
        status, headers, body = fetch(hub.url + "/", BROWSER)
        assert status == 200
        assert headers["content-type"].startswith("text/html")
        assert fetch(hub.url + "/static/drf_spectacular_sidecar/nothing-here.js")[0] == 404
        assert fetch(hub.url + "/static/..%2f..%2farcsite%2fsettings.py")[0] == 404
        assert fetch(hub.url + "/static/admin/css/base.css")[0] == 200  # the admin's styles, too


@pytest.mark.live
def test_the_live_hub_under_required_auth_opens_the_docs_page_without_a_key(tmp_path):
    with running_hub(tmp_path / "hub", extra_env={"ARC_AUTH": "required"}) as hub:
        check_docs_page(hub)
        assert fetch(hub.url + "/v1/schema")[0] == 401
        status, _, body = fetch(hub.url + "/", "application/json")
        assert status == 200
        assert json.loads(body)["result"]["auth"]["mode"] == "required"
