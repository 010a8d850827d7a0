"""The humans' dashboard (docs/dashboard.md) at URL level: its pages, its POST actions, who may use them.

Each action goes through the same access check and service as the API, so these tests
assert effects in the database (and over REST), the flash message and the redirect.

Personas:
- ``ada``: a staff user signed in to the dashboard: acts as ``operator``, an admin;
- ``nina``: a signed-in Django user who is not staff: may use no page and no action;
- ``otto``: staff without the hub's admin permission: reads every page and talks as the operator,
  but runs no admin action (the Django admin's rule, ``access.staff_admin``);
- ``petra``: staff with the ``operate_hub`` permission: a hub admin, as ada is;
- ``anon``: a browser with no session: sent to the sign-in page;
- ``agents``: the unkeyed loopback REST client, acting as alice, bob and carol (the agents at work).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from coordination.core import services
from coordination.core.models import AgentKey, Claim, Delivery, Lock, Message, Room, Task
from tests.conftest import ApiClient, staff_client

pytestmark = pytest.mark.django_db

KEY_PATTERN = re.compile(r"arc_[0-9a-f]{12}_[A-Za-z0-9_-]+")
HUGE = "9" * 30  # no database integer holds it
REMOTE = "203.0.113.5"  # TEST-NET-3: never a real peer
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(2)>'


# ── Personas and the hub's state ──────────────────────────────────────────


@pytest.fixture
def agents(api: ApiClient) -> ApiClient:
    """alice, bob and carol, over REST from loopback (each request names its agent)."""
    return api


@pytest.fixture
def ada(agents: ApiClient) -> Client:
    """A staff user signed in: acts as operator, with admin rights."""
    client = Client()
    client.force_login(User.objects.create_superuser("ada", "ada@example.com", "pw"))
    return client


@pytest.fixture
def nina(agents: ApiClient) -> Client:
    """A signed-in Django user who is not staff."""
    client = Client()
    client.force_login(User.objects.create_user("nina", "nina@example.com", "pw"))
    return client


@pytest.fixture
def otto(agents: ApiClient) -> Client:
    return staff_client("otto")


@pytest.fixture
def petra(agents: ApiClient) -> Client:
    return staff_client("petra", "operate_hub")


@pytest.fixture
def anon(agents: ApiClient) -> Client:
    return Client()


def post(agents: ApiClient, **fields: Any) -> dict[str, Any]:
    """A message posted by an agent over REST (alice unless ``from_agent`` says otherwise)."""
    fields.setdefault("from_agent", "alice")
    status, env = agents.post("/v1/messages", fields)
    assert status == 201, env
    return env["result"]


@pytest.fixture
def world(agents: ApiClient) -> dict[str, Any]:
    """Something on every page: a thread, a question for the operator, a task, a claim, a lock, a dead letter, a key."""
    chat = post(agents, body="hello from alice", thread_id="t-1")
    ask = post(agents, to_agent="operator", body="may I deploy?", expects_reply="anyone")
    task = post(agents, to_agent="bob", kind="task_request", body="build it", thread_id="t-1")
    assert agents.post("/v1/claims", {"owner_agent_id": "bob", "claim_key": "deploy-7", "thread_id": "t-1"})[0] == 201
    assert agents.post("/v1/locks", {"agent_id": "bob", "file_path": "src/app.py"})[0] == 201
    dead = post(agents, to_agent="carol", body="poison", max_attempts=1)
    nack = {"agent_id": "carol", "message_id": dead["id"], "reason": "cannot parse"}
    assert agents.post("/v1/deliveries/nack", nack)[0] == 200
    key, _ = services.key_mint(agent_id="alice", label="alice's laptop")
    return {"chat": chat, "ask": ask, "task": task, "dead": dead, "key": key}


def snapshot() -> dict[str, Any]:
    """Everything a dashboard action could change."""
    return {
        "messages": list(Message.objects.order_by("id").values_list("id", "reply_claimed_by")),
        "rooms": list(Room.objects.order_by("name").values_list("name", "closed_at")),
        "tasks": list(Task.objects.order_by("task_id").values_list("task_id", "status", "failure_reason")),
        "claims": list(Claim.objects.order_by("claim_key").values_list("claim_key", "released_at")),
        "locks": list(Lock.objects.order_by("file_path").values_list("file_path", "released_at")),
        "deliveries": list(Delivery.objects.order_by("id").values_list("id", "state", "attempts")),
        "keys": list(AgentKey.objects.order_by("prefix").values_list("prefix", "revoked_at")),
        "remote": services.remote_allowed(),
    }


def flashes(response: Any) -> list[tuple[str, str]]:
    """The flash messages an action left: ``(level, text)``."""
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


def act(client: Client, path: str, data: dict[str, Any] | None = None) -> tuple[Any, list[tuple[str, str]]]:
    """POST an action, then open the page it sends the user back to: the response, and the flashes shown there."""
    response = client.post(path, data or {})
    if response.status_code != 302:
        return response, flashes(response)
    landing = client.get(response["Location"])
    assert landing.status_code == 200, landing
    return response, [(m.level_tag, str(m)) for m in landing.context["messages"]]


def page(client: Client, path: str, **extra: Any) -> str:
    response = client.get(path, **extra)
    assert response.status_code == 200, (path, response.status_code)
    return response.content.decode()


PAGES = [
    "/",
    "/rooms/general",
    "/threads/t-1",
    "/work",
    "/map",
    "/agents/bob",
    "/search?q=hello",
    "/deliveries",
    "/keys",
    "/network",
    "/stats",
    "/waiting",
]


def actions(world: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """Every dashboard action, with a form that would succeed for ada."""
    ask, task = world["ask"]["id"], world["task"]["id"]
    return [
        ("/act/rooms/general/post", {"body": "from the human"}),
        ("/act/rooms/general/close", {}),
        ("/act/rooms/general/reopen", {}),
        (f"/messages/{ask}/reply", {"body": "yes"}),
        (f"/messages/{ask}/reply-claim", {}),
        (f"/tasks/{task}/start", {}),
        (f"/tasks/{task}/complete", {}),
        (f"/tasks/{task}/fail", {"reason": "no"}),
        ("/claims/release", {"claim_key": "deploy-7"}),
        ("/locks/release", {"file_path": "src/app.py"}),
        ("/deliveries/retry", {"message_id": str(world["dead"]["id"])}),
        ("/keys/mint", {"agent_id": "dora"}),
        (f"/keys/{world['key'].prefix}/revoke", {}),
        ("/network/set", {"allow_remote": "on"}),
    ]


# ── Who may use it ────────────────────────────────────────────────────────


def test_it_sends_an_anonymous_browser_to_sign_in_from_every_page(anon, world):
    for path in PAGES:
        response = anon.get(path)
        assert response.status_code == 302, path
        assert response["Location"] == "/login?" + urlencode({"next": path}), path


def test_it_sends_an_anonymous_htmx_region_request_to_sign_in_by_hx_redirect(anon, world):
    response = anon.get("/work?partial=work", HTTP_HX_REQUEST="true")

    assert response.status_code == 200  # django-htmx HttpResponseClientRedirect: htmx follows HX-Redirect
    assert response["HX-Redirect"] == "/login?" + urlencode({"next": "/work?partial=work"})


def test_it_refuses_every_action_to_an_anonymous_browser_and_changes_nothing(anon, world):
    before = snapshot()
    for path, data in actions(world):
        response = anon.post(path, data)
        assert response.status_code == 302, path
        assert response["Location"] == "/login?" + urlencode({"next": path}), path
    assert snapshot() == before


def test_it_refuses_every_page_and_action_to_a_signed_in_user_who_is_not_staff(nina, world):
    before = snapshot()
    for path in PAGES:
        assert nina.get(path)["Location"].startswith("/login?next="), path
    for path, data in actions(world):
        assert nina.post(path, data)["Location"].startswith("/login?next="), path
    assert snapshot() == before


ADMIN_ONLY = ("/close", "/reopen", "/tasks/", "/claims/", "/locks/", "/deliveries/", "/keys/", "/network/")


def test_it_lets_staff_without_the_hub_permission_read_and_talk_but_refuses_admin_actions(otto, world):
    for path in PAGES:
        assert page(otto, path), path
    before = snapshot()
    for path, data in actions(world):
        if not any(part in path for part in ADMIN_ONLY):
            continue
        response, shown = act(otto, path, data)
        assert response.status_code == 302, path
        assert [level for level, _ in shown] == ["error"], (path, shown)
    assert snapshot() == before
    response, shown = act(otto, "/act/rooms/general/post", {"body": "from otto"})
    assert [level for level, _ in shown] == ["success"]
    assert Message.objects.get(body="from otto").from_agent == "operator"


def test_it_lets_staff_with_the_operate_hub_permission_act_as_an_admin_named_in_the_notices(petra, world):
    _, shown = act(petra, "/claims/release", {"claim_key": "deploy-7"})

    assert [level for level, _ in shown] == ["success"], shown
    assert Claim.objects.get(claim_key="deploy-7").released_at is not None
    notice = Message.objects.filter(to_agent="bob", from_agent="system", kind="notice").get()
    assert notice.metadata["released_by"] == "petra"


def test_it_shows_a_signed_in_user_who_is_not_staff_the_sign_in_page_instead_of_looping(nina):
    response = nina.get("/login?" + urlencode({"next": "/work"}))

    # Sending a signed-in user back to ``next`` (which sends them here) would loop forever.
    assert response.status_code == 200
    assert "Sign in" in response.content.decode()


def test_it_signs_in_a_staff_user_by_password_and_goes_to_next(agents):
    User.objects.create_superuser("ada", "ada@example.com", "pw-ada")
    browser = Client()

    response = browser.post("/login", {"username": "ada", "password": "pw-ada", "next": "/work"})

    assert (response.status_code, response["Location"]) == (302, "/work")
    assert browser.get("/work").status_code == 200


def test_it_refuses_password_sign_in_to_a_user_who_is_not_staff(agents):
    User.objects.create_user("nina", "nina@example.com", "pw-nina")
    browser = Client()

    response = browser.post("/login", {"username": "nina", "password": "pw-nina", "next": "/work"})

    assert response.status_code == 200
    assert "not a staff user" in response.content.decode()
    assert "_auth_user_id" not in browser.session
    assert browser.get("/work").status_code == 302


def test_it_never_sends_a_signed_in_user_off_site_after_sign_in(agents):
    User.objects.create_superuser("ada", "ada@example.com", "pw-ada")

    response = Client().post("/login", {"username": "ada", "password": "pw-ada", "next": "https://evil.example/"})

    assert response["Location"] == "/"


def test_it_refuses_a_remote_browser_while_remote_access_is_off_even_when_signed_in(ada, world):
    before = snapshot()
    for path in [*PAGES, "/live", "/login"]:
        assert ada.get(path, REMOTE_ADDR=REMOTE).status_code == 403, path
    for path, data in actions(world):
        assert ada.post(path, data, REMOTE_ADDR=REMOTE).status_code == 403, path
    assert snapshot() == before


def test_it_refuses_an_action_without_the_csrf_token_and_accepts_it_with_the_token(agents):
    ada = Client(enforce_csrf_checks=True)
    ada.force_login(User.objects.create_superuser("ada", "ada@example.com", "pw"))
    ada.get("/rooms/general")  # the form's page sets the CSRF cookie
    token = ada.cookies["csrftoken"].value
    before = snapshot()

    assert ada.post("/network/set", {"allow_remote": "on"}).status_code == 403
    assert ada.post("/act/rooms/general/post", {"body": "forged"}).status_code == 403
    assert snapshot() == before

    assert ada.post("/network/set", {"allow_remote": "on", "csrfmiddlewaretoken": token}).status_code == 302
    assert services.remote_allowed() is True
    response = ada.post("/act/rooms/general/post", {"body": "by hand"}, HTTP_X_CSRFTOKEN=token)  # as htmx sends it
    assert response.status_code == 302
    assert Message.objects.filter(from_agent="operator", body="by hand").exists()


@pytest.mark.parametrize("since", ["\u00b2", "9" * 40, "-1", "abc"])
def test_the_live_stream_ignores_a_since_that_is_no_message_id(ada, since):
    response = ada.get("/live", {"since": since}, HTTP_LAST_EVENT_ID=since)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"


def test_it_refuses_a_get_to_an_action(ada, world):
    before = snapshot()

    assert ada.get("/network/set", {"allow_remote": "on"}).status_code == 405
    assert ada.get(f"/keys/{world['key'].prefix}/revoke").status_code == 405
    assert snapshot() == before


# ── Pages ─────────────────────────────────────────────────────────────────


def test_it_renders_every_page_with_data_present(ada, world):
    shown = {path: page(ada, path) for path in PAGES}

    assert "hello from alice" in shown["/"]
    assert "may I deploy?" in shown["/"]
    assert "hello from alice" in shown["/rooms/general"]
    assert "build it" in shown["/threads/t-1"]
    assert "deploy-7" in shown["/threads/t-1"]
    assert "deploy-7" in shown["/work"]
    assert "src/app.py" in shown["/work"]
    assert f"#{world['task']['id']}" in shown["/work"]
    assert "poison" in shown["/deliveries"]
    assert "cannot parse" in shown["/deliveries"]
    assert world["key"].prefix in shown["/keys"]
    assert "alice&#x27;s laptop" in shown["/keys"]
    assert 'id="remote-state">off<' in shown["/network"]
    assert "may I deploy?" in shown["/waiting"]
    assert "Tasks by status" in shown["/stats"]


def test_it_serves_the_manifest_to_an_agent_asking_for_json_at_the_root(anon):
    response = anon.get("/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert "Accept" in response["Vary"]


@pytest.mark.parametrize(("path", "what"), [("/rooms/nowhere", "room nowhere"), ("/threads/t-none", "thread t-none")])
def test_it_answers_404_with_a_page_for_an_unknown_room_or_thread(ada, world, path, what):
    response = ada.get(path)

    assert response.status_code == 404
    assert f"No {what}" in response.content.decode()


@pytest.mark.parametrize(
    ("path", "region"),
    [
        ("/?partial=waiting", '<div id="waiting-region"'),
        ("/?partial=agents", '<div id="agents-region"'),
        ("/?partial=rooms", '<div id="rooms-region"'),
        ("/?partial=work", '<div id="work-region"'),
        ("/rooms/general?partial=roomstate", '<div id="roomstate"'),
        ("/threads/t-1?partial=work", '<div id="work-region"'),
        ("/work?partial=work", '<div id="work-region"'),
        ("/deliveries?partial=deliveries", '<div id="deliveries-region"'),
        ("/keys?partial=keys", '<div id="keys-region"'),
        ("/network?partial=agents", '<div id="agents-region"'),
        ("/stats?partial=stats", '<div id="stats-region"'),
        ("/waiting?partial=waiting", '<section class="card" id="waiting-region"'),
    ],
)
def test_it_returns_just_the_region_htmx_asks_for(ada, world, path, region):
    html = page(ada, path, HTTP_HX_REQUEST="true").strip()

    assert html.startswith(region)
    assert "<html" not in html
    assert html.count(region) == 1


def test_it_returns_the_whole_page_when_the_partial_is_asked_for_without_htmx(ada, world):
    assert "<html" in page(ada, "/work?partial=work")


@pytest.mark.parametrize("partial", ["nope", "message", "content", "../base.html"])
def test_it_answers_an_unknown_partial_without_a_server_error(ada, world, partial):
    response = ada.get("/work", {"partial": partial}, HTTP_HX_REQUEST="true")

    assert response.status_code in (200, 404)


# ── Actions ───────────────────────────────────────────────────────────────


def test_it_posts_as_the_human_in_the_room_and_keeps_the_thread(ada, world):
    response, shown = act(ada, "/act/rooms/general/post", {"body": "on it", "thread_id": "t-1", "next": "/threads/t-1"})

    message = Message.objects.get(body="on it")
    assert (message.from_agent, message.channel, message.to_agent, message.thread_id) == (
        "operator",
        "general",
        None,
        "t-1",
    )
    assert response.status_code == 302
    assert response["Location"] == "/threads/t-1"
    assert shown == [("success", f"Posted message {message.id}; it reached 0 live agents.")]
    assert "on it" in page(ada, "/threads/t-1")


def test_it_posts_a_question_that_expects_a_reply(ada, world):
    act(ada, "/act/rooms/general/post", {"body": "who builds?", "expects_reply": "anyone"})

    assert Message.objects.get(body="who builds?").expects_reply == "anyone"


def test_a_reply_to_a_direct_message_goes_to_its_sender_and_leaves_waiting(ada, world):
    ask = world["ask"]["id"]
    assert f'id="m-{ask}"' in page(ada, "/waiting")

    response, shown = act(ada, f"/messages/{ask}/reply", {"body": "yes, go", "next": "/waiting"})

    reply = Message.objects.get(body="yes, go")
    assert (reply.from_agent, reply.to_agent, reply.reply_to, reply.channel) == ("operator", "alice", ask, "direct")
    assert (response["Location"], shown[0][0]) == ("/waiting", "success")
    assert f'id="m-{ask}"' not in page(ada, "/waiting")


def test_a_reply_to_a_room_message_stays_in_its_room_and_thread(ada, world):
    chat = world["chat"]["id"]

    act(ada, f"/messages/{chat}/reply", {"body": "seen"})

    reply = Message.objects.get(body="seen")
    assert (reply.to_agent, reply.channel, reply.thread_id, reply.reply_to) == (None, "general", "t-1", chat)


def test_it_takes_the_reply_as_the_operator(ada, world):
    ask = world["ask"]["id"]

    response, shown = act(ada, f"/messages/{ask}/reply-claim")

    assert Message.objects.get(pk=ask).reply_claimed_by == "operator"
    assert shown == [("success", f"You will reply to message {ask}.")]
    assert response["Location"] == "/"


def test_it_says_who_took_the_reply_when_another_agent_was_first(ada, agents, world):
    ask = world["ask"]["id"]
    assert agents.post(f"/v1/messages/{ask}/reply-claim", {"agent_id": "bob"})[0] == 201

    _, shown = act(ada, f"/messages/{ask}/reply-claim")

    assert shown == [("error", f"bob already took the reply to message {ask}")]
    assert Message.objects.get(pk=ask).reply_claimed_by == "bob"


def test_it_closes_and_reopens_a_room(ada, agents, world):
    response, shown = act(ada, "/act/rooms/general/close", {"next": "/rooms/general"})

    assert (response["Location"], shown) == ("/rooms/general", [("success", "Closed #general.")])
    room = Room.objects.get(pk="general")
    assert (room.closed_at is not None, room.closed_by) == (True, "ada")  # the human who acted, not just "operator"
    status, env = agents.post("/v1/messages", {"from_agent": "alice", "body": "anyone?"})
    assert status == 409, env
    assert act(ada, "/act/rooms/general/close")[1] == [("success", "#general was already closed.")]
    assert "Reopen room" in page(ada, "/rooms/general")

    _, shown = act(ada, "/act/rooms/general/reopen")

    assert shown == [("success", "Reopened #general.")]
    assert Room.objects.get(pk="general").closed_at is None
    assert agents.post("/v1/messages", {"from_agent": "alice", "body": "anyone?"})[0] == 201


def test_it_starts_and_completes_a_task(ada, world):
    task = world["task"]["id"]

    response, shown = act(ada, f"/tasks/{task}/start")

    assert Task.objects.get(pk=task).status == "in_progress"
    assert (response["Location"], shown) == ("/work", [("success", f"Task {task}: start done.")])

    act(ada, f"/tasks/{task}/complete")

    assert Task.objects.get(pk=task).status == "done"


def test_it_fails_a_task_with_a_reason(ada, world):
    task = world["task"]["id"]

    _, shown = act(ada, f"/tasks/{task}/fail", {"reason": "out of scope"})

    assert (Task.objects.get(pk=task).status, Task.objects.get(pk=task).failure_reason) == ("failed", "out of scope")
    assert shown == [("success", f"Task {task}: fail done.")]
    assert "out of scope" in page(ada, "/work")


def test_it_fails_a_task_with_a_default_reason(ada, world):
    task = world["task"]["id"]

    act(ada, f"/tasks/{task}/fail")

    assert Task.objects.get(pk=task).failure_reason == "failed by ada in the dashboard"


def test_it_refuses_to_finish_a_finished_task(ada, world):
    task = world["task"]["id"]
    act(ada, f"/tasks/{task}/complete")

    response, shown = act(ada, f"/tasks/{task}/fail")

    assert response.status_code == 302
    assert shown[0][0] == "error"
    assert Task.objects.get(pk=task).status == "done"


def test_it_force_releases_a_claim_and_tells_its_holder(ada, world):
    _, shown = act(ada, "/claims/release", {"claim_key": "deploy-7"})

    assert Claim.objects.get(pk="deploy-7").released_at is not None
    assert shown == [("success", "Released claim deploy-7; bob was told.")]
    notice = Message.objects.get(to_agent="bob", kind="notice")
    assert "released by ada" in notice.body
    assert "deploy-7" not in page(ada, "/work?partial=work", HTTP_HX_REQUEST="true")


def test_it_force_releases_a_lock_and_tells_its_holder(ada, world):
    _, shown = act(ada, "/locks/release", {"file_path": "src/app.py"})

    assert Lock.objects.get(pk="src/app.py").released_at is not None
    assert shown == [("success", "Released the lock on src/app.py; bob was told.")]
    assert "lock on src/app.py was released by ada" in Message.objects.get(to_agent="bob", kind="notice").body


def test_it_retries_a_dead_letter(ada, world):
    dead = world["dead"]["id"]

    response, shown = act(ada, "/deliveries/retry", {"message_id": str(dead), "agent_id": "carol"})

    delivery = Delivery.objects.get(message_id=dead, agent_id="carol")
    assert (delivery.state, delivery.attempts) == ("queued", 0)
    assert (response["Location"], shown) == ("/deliveries", [("success", f"Queued message {dead} again for carol.")])
    assert "No dead letters." in page(ada, "/deliveries")


def test_it_shows_a_minted_key_once_and_never_caches_it(ada, world):
    response = ada.post(
        "/keys/mint", {"agent_id": "dora", "expires": "7d", "label": "dora's box", "rooms": ["general"]}
    )

    # Post, redirect, get: the secret is on the page the redirect opens, once, and in no cookie.
    assert (response.status_code, response["Location"]) == (302, "/keys/minted")
    assert KEY_PATTERN.search(response.content.decode() + str(response.cookies)) is None
    shown = ada.get("/keys/minted")
    assert shown.status_code == 200
    assert shown["Cache-Control"] == "no-store"
    secret = KEY_PATTERN.search(shown.content.decode())
    assert secret is not None
    assert KEY_PATTERN.search(str(shown.cookies)) is None
    key = AgentKey.objects.get(agent_id="dora")
    assert (key.rooms, key.label, key.is_admin, key.created_by) == (["general"], "dora's box", False, "ada")
    assert ApiClient(key=secret.group()).get("/v1/bootstrap")[1]["result"]["agent_id"] == "dora"
    reload = ada.get("/keys/minted")
    assert (reload.status_code, reload["Location"]) == (302, "/keys")
    assert AgentKey.objects.filter(agent_id="dora").count() == 1  # the reload minted nothing
    later = page(ada, "/keys")
    assert secret.group() not in later
    assert key.prefix in later


def test_it_mints_an_admin_key(ada, world):
    ada.post("/keys/mint", {"agent_id": "root", "admin": "on"})

    assert AgentKey.objects.get(agent_id="root").is_admin is True


def test_it_revokes_a_key(ada, world):
    key = world["key"]

    response, shown = act(ada, f"/keys/{key.prefix}/revoke")

    assert AgentKey.objects.get(pk=key.pk).revoked_at is not None
    assert response["Location"] == "/keys"
    assert shown == [("success", f"Revoked key {key.prefix} of alice; its open streams and sockets are closed.")]
    assert "revoked" in page(ada, "/keys?partial=keys", HTTP_HX_REQUEST="true")


def test_it_turns_remote_access_on_and_off(ada, world):
    response, shown = act(ada, "/network/set", {"allow_remote": "on"})

    assert services.remote_allowed() is True
    assert response["Location"] == "/network"
    assert shown[0][1].startswith("Remote access is on")
    assert 'id="remote-state">on<' in page(ada, "/network")

    act(ada, "/network/set", {"allow_remote": "off"})

    assert services.remote_allowed() is False


# ── Bad input ─────────────────────────────────────────────────────────────


BAD_ACTIONS = [
    pytest.param("/act/rooms/general/post", {"body": ""}, "body", id="empty-body"),
    pytest.param("/act/rooms/general/post", {"body": "x" * 200_000}, "body", id="body-over-the-limit"),
    pytest.param(
        "/act/rooms/general/post",
        {"body": "hi", "expects_reply": "x" * 300},
        "expects_reply",
        id="long-expects-reply",
    ),
    pytest.param(
        "/act/rooms/general/post",
        {"body": "hi", "thread_id": "x" * 300},
        "thread_id",
        id="long-thread-id",
    ),
    pytest.param("/act/rooms/nowhere/close", {}, "", id="close-unknown-room"),
    pytest.param("/act/rooms/nowhere/reopen", {}, "", id="reopen-unknown-room"),
    pytest.param("/messages/999999/reply", {"body": "hi"}, "not found", id="reply-to-unknown-message"),
    pytest.param("/messages/{ask}/reply", {"body": ""}, "body", id="reply-without-body"),
    pytest.param("/messages/{ask}/reply", {"body": "x" * 200_000}, "body", id="reply-over-the-limit"),
    pytest.param("/messages/999999/reply-claim", {}, "not found", id="reply-claim-unknown-message"),
    pytest.param("/messages/{chat}/reply-claim", {}, "expects no reply", id="reply-claim-no-reply-expected"),
    pytest.param("/tasks/999999/start", {}, "not found", id="unknown-task"),
    pytest.param("/tasks/{task}/delete", {}, "unknown task action", id="unknown-task-verb"),
    pytest.param("/tasks/{chat}/start", {}, "not found", id="message-that-is-no-task"),
    pytest.param("/claims/release", {}, "claim_key is required", id="claim-without-key"),
    pytest.param("/claims/release", {"claim_key": "nope"}, "no claim nope", id="unknown-claim"),
    pytest.param("/locks/release", {}, "file_path is required", id="lock-without-path"),
    pytest.param("/locks/release", {"file_path": "nope.py"}, "no lock nope.py", id="unknown-lock"),
    pytest.param("/deliveries/retry", {}, "message_id is required", id="retry-without-id"),
    pytest.param("/deliveries/retry", {"message_id": "12abc"}, "whole number", id="retry-non-integer-id"),
    pytest.param("/deliveries/retry", {"message_id": HUGE}, "message_id", id="retry-huge-id"),
    pytest.param("/deliveries/retry", {"message_id": "\u00b2"}, "whole number", id="retry-superscript-id"),
    pytest.param("/deliveries/retry", {"message_id": "{chat}"}, "no dead letter", id="retry-no-dead-letter"),
    pytest.param("/keys/nope/revoke", {}, "", id="revoke-unknown-key"),
    pytest.param(f"/messages/{HUGE}/reply", {"body": "hi"}, "64-bit", id="reply-to-a-huge-id"),
    pytest.param(f"/messages/{HUGE}/reply-claim", {}, "64-bit", id="reply-claim-a-huge-id"),
    pytest.param(f"/tasks/{HUGE}/start", {}, "64-bit", id="start-a-huge-task-id"),
    pytest.param("/act/rooms/general/post", {"body": "hi", "reply_to": HUGE}, "reply_to", id="post-reply-to-a-huge-id"),
    pytest.param(
        "/act/rooms/general/post", {"body": "hi", "reply_to": "\u00b2"}, "reply_to", id="post-reply-to-a-superscript"
    ),
    pytest.param("/act/rooms/general/post", {"body": "hi", "reply_to": "-3"}, "reply_to", id="post-reply-to-negative"),
    pytest.param("/network/set", {}, "allow_remote is required", id="network-without-value"),
]


@pytest.mark.parametrize(("path", "data", "error"), BAD_ACTIONS)
def test_it_flashes_an_error_for_bad_input_and_changes_nothing(ada, world, path, data, error):
    ids = {name: world[name]["id"] for name in ("ask", "chat", "task")}
    path = path.format(**ids)
    data = {k: v.format(**ids) for k, v in data.items()}
    before = snapshot()

    response, shown = act(ada, path, data)

    assert response.status_code == 302, response.content[:2000]
    assert [level for level, _ in shown] == ["error"], shown
    assert error in shown[0][1]
    assert snapshot() == before


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({}, id="no-agent"),
        pytest.param({"agent_id": "dora", "rooms": ["nowhere"]}, id="unknown-room"),
        pytest.param({"agent_id": "dora", "expires": "forever-ish"}, id="bad-expiry"),
        pytest.param(
            {"agent_id": "d" * 300},
            id="long-agent-id",
        ),
        pytest.param(
            {"agent_id": "dora", "label": "l" * 300},
            id="long-label",
        ),
    ],
)
def test_it_refuses_to_mint_a_bad_key_and_mints_nothing(ada, world, data):
    before = snapshot()

    response, shown = act(ada, "/keys/mint", data)

    assert (response.status_code, response["Location"]) == (302, "/keys")
    assert [level for level, _ in shown] == ["error"], shown
    assert KEY_PATTERN.search(response.content.decode()) is None
    assert snapshot() == before


def test_a_non_integer_message_in_the_url_is_not_found(ada, world):
    before = snapshot()

    assert ada.post("/messages/abc/reply", {"body": "hi"}).status_code == 404
    assert ada.post("/tasks/abc/start").status_code == 404
    assert snapshot() == before


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "http://evil.example", "javascript:alert(1)", "/\\evil"]
)
def test_it_never_redirects_off_site(ada, world, target):
    response, _ = act(ada, "/network/set", {"allow_remote": "off", "next": target})

    assert response.status_code == 302
    assert response["Location"] == "/network"


def test_it_redirects_to_a_next_page_on_this_site(ada, world):
    response, _ = act(ada, "/network/set", {"allow_remote": "off", "next": "/waiting?x=1"})

    assert response["Location"] == "/waiting?x=1"


# ── Hostile text from agents ──────────────────────────────────────────────


@pytest.fixture
def hostile(agents: ApiClient) -> dict[str, Any]:
    """An agent whose every field tries to inject markup into the dashboard."""
    agent = "mallory<script>alert(1)" + IMG  # agent ids have no '/' (docs/protocol.md)
    thread = f"t{IMG}"
    evil = f"{SCRIPT}{IMG}"
    agents.post("/v1/sessions", {"agent_id": agent, "display_name": evil, "capabilities": [evil]})
    attachments = [
        {"type": "code", "content": evil, "language": evil},
        {"type": "text", "content": evil},
        {"type": "json", "content": {"k": evil}},
        {"type": "file_ref", "path": f"src/{evil}.py", "description": evil},
    ]
    message = post(
        agents,
        from_agent=agent,
        body=evil,
        thread_id=thread,
        expects_reply="operator",
        attachments=attachments,
    )
    task = post(agents, from_agent=agent, to_agent="bob", kind="task_request", body=evil, thread_id=thread)
    assert agents.post(f"/v1/tasks/{task['id']}/fail", {"reason": evil})[0] == 200
    assert agents.post("/v1/claims", {"owner_agent_id": agent, "claim_key": evil, "thread_id": thread})[0] == 201
    assert agents.post("/v1/locks", {"agent_id": agent, "file_path": f"src/{evil}"})[0] == 201
    dead = post(agents, from_agent=agent, to_agent="carol", body=evil, max_attempts=1)
    assert agents.post("/v1/deliveries/nack", {"agent_id": "carol", "message_id": dead["id"], "reason": evil})[0] == 200
    services.key_mint(agent_id="mallory", label=evil)
    return {"agent": agent, "thread": thread, "message": message}


def assert_escaped(html: str, *texts: str) -> None:
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert "onerror=alert(2)>" not in html.replace("onerror=alert(2)&gt;", "")
    for text in texts:
        assert escape(text) in html, text


def test_it_escapes_agent_text_on_every_page(ada, hostile):
    evil = f"{SCRIPT}{IMG}"
    thread_url = "/threads/" + hostile["thread"]
    assert_escaped(page(ada, "/"), evil, hostile["agent"], hostile["thread"], f"src/{evil}.py")
    assert_escaped(page(ada, "/rooms/general"), evil, hostile["agent"], hostile["thread"], f"src/{evil}.py")
    assert_escaped(page(ada, thread_url), evil, hostile["agent"], hostile["thread"])
    assert_escaped(page(ada, "/waiting"), evil, hostile["agent"])
    assert_escaped(page(ada, "/work"), evil, hostile["agent"], f"src/{evil}")
    assert_escaped(page(ada, "/deliveries"), evil, hostile["agent"])
    assert_escaped(page(ada, "/keys"), evil)
    assert_escaped(page(ada, "/network"), evil, hostile["agent"])
    assert_escaped(page(ada, "/stats"))
    assert_escaped(page(ada, "/map"), hostile["agent"])
    assert_escaped(page(ada, reverse("dashboard:agent", args=[hostile["agent"]])), evil, hostile["agent"])
    assert_escaped(page(ada, "/search?" + urlencode({"q": "alert"})), evil, hostile["agent"])


def test_it_escapes_user_text_echoed_in_a_flash_message(ada, world):
    for path, data in [("/claims/release", {"claim_key": SCRIPT}), ("/deliveries/retry", {"message_id": IMG})]:
        response = ada.post(path, data, follow=True)

        assert_escaped(response.content.decode())
        assert re.search(r'class="flash status-40[04] error"', response.content.decode())


def test_it_escapes_agent_text_in_the_live_regions(ada, hostile):
    for path in (
        "/?partial=waiting",
        "/?partial=agents",
        "/?partial=work",
        "/work?partial=work",
        "/map?partial=map",
    ):
        assert_escaped(page(ada, path, HTTP_HX_REQUEST="true"), hostile["agent"])
    assert_escaped(page(ada, "/threads/" + hostile["thread"] + "?partial=work", HTTP_HX_REQUEST="true"))
    assert_escaped(page(ada, "/?partial=activity", HTTP_HX_REQUEST="true"))


# ── Waiting on you ────────────────────────────────────────────────────────


def waiting_ids(ada: Client) -> list[int]:
    return [int(i) for i in re.findall(r'<li id="m-(\d+)"', page(ada, "/waiting"))]


def test_it_lists_what_waits_on_the_operator_and_nothing_else(ada, agents):
    named = post(agents, body="operator, approve?", expects_reply="operator")
    direct = post(agents, to_agent="operator", body="a question for you", expects_reply="anyone")
    post(agents, body="bob, approve?", expects_reply="bob")
    post(agents, to_agent="operator", body="fyi, no reply needed")
    post(agents, body="anyone?", expects_reply="anyone")

    assert waiting_ids(ada) == [named["id"], direct["id"]]
    overview = page(ada, "/?partial=waiting", HTTP_HX_REQUEST="true")
    assert "Waiting on you (2)" in overview


def test_a_message_stops_waiting_once_the_operator_replies(ada, agents):
    named = post(agents, body="operator, approve?", expects_reply="operator")
    direct = post(agents, to_agent="operator", body="a question for you", expects_reply="anyone")

    act(ada, f"/messages/{named['id']}/reply", {"body": "approved"})

    assert waiting_ids(ada) == [direct["id"]]


def test_a_message_stops_waiting_once_another_agent_takes_the_reply(ada, agents):
    direct = post(agents, to_agent="operator", body="a question for you", expects_reply="anyone")
    assert waiting_ids(ada) == [direct["id"]]

    assert agents.post(f"/v1/messages/{direct['id']}/reply-claim", {"agent_id": "bob"})[0] == 201

    assert waiting_ids(ada) == []


def test_a_message_still_waits_while_the_operator_holds_the_reply(ada, agents):
    direct = post(agents, to_agent="operator", body="a question for you", expects_reply="anyone")

    act(ada, f"/messages/{direct['id']}/reply-claim")

    assert waiting_ids(ada) == [direct["id"]]
    assert "reply taken by operator" in page(ada, "/waiting")


@pytest.mark.parametrize(
    "path", ["/rooms/%00", "/rooms/a%00b", "/threads/%00", "/?x=%00", "/work?partial=%00", "/live?room=%00"]
)
def test_it_refuses_nul_characters_in_the_address(ada, world, path):
    # PostgreSQL cannot compare text with NUL: without the edge's check this was a 500 there.
    response = ada.get(path, HTTP_HX_REQUEST="true")

    assert response.status_code == 400
    assert "NUL" in response.json()["error"]


def test_it_refuses_nul_characters_in_every_action_and_changes_nothing(ada, world):
    for path, data in actions(world):
        before = snapshot()
        poisoned = {**data, "body": "a\x00b", "note": "\x00"}

        response, shown = act(ada, path, poisoned)

        assert response.status_code == 302, (path, response.content[:500])
        assert shown == [("error", "form fields must not contain NUL characters (\\u0000)")], path
        assert snapshot() == before, path


# ── Names agents choose ──────────────────────────────────────────────────


@pytest.mark.parametrize("name", ["a\nb", "x/close", "x/post", "tab\there", "ünï/cödé"])
def test_every_room_name_has_a_page_and_links_that_work(ada, agents, name):
    status, env = agents.post("/v1/channels", {"name": name})
    assert status in (200, 201), env
    post(agents, channel=name, body="hello", thread_id=f"t {name}")

    overview = ada.get("/")
    room_link = reverse("dashboard:room", args=[name])
    page = ada.get(room_link)

    assert overview.status_code == 200
    assert escape(room_link) in overview.content.decode()
    assert page.status_code == 200
    assert page.context["room"].name == name
    assert ada.get(reverse("dashboard:thread", args=[f"t {name}"])).status_code == 200


def test_it_serves_only_live_regions_alone(ada, world):
    response = ada.get("/rooms/general?partial=message", HTTP_HX_REQUEST="true")

    assert response.status_code == 404


def test_a_thread_id_is_kept_as_given(ada, agents):
    post(agents, body="spaced", thread_id=" t ")

    act(ada, "/act/rooms/general/post", {"body": "into it", "thread_id": " t "})

    assert Message.objects.filter(body="into it", thread_id=" t ").exists()


def test_a_reply_to_a_direct_message_the_operator_sent_goes_to_its_recipient(ada, agents):
    act(
        ada,
        f"/messages/{post(agents, to_agent='operator', body='ping', expects_reply='anyone')['id']}/reply",
        {"body": "x"},
    )
    sent = Message.objects.get(from_agent="operator", body="x")
    status, env = agents.post("/v1/messages", {"from_agent": "operator", "to_agent": "alice", "body": "are you there?"})
    assert status == 201, env

    act(ada, f"/messages/{env['result']['id']}/reply", {"body": "following up"})

    follow_up = Message.objects.get(body="following up")
    assert (sent.to_agent, follow_up.to_agent, follow_up.reply_to) == ("alice", "alice", env["result"]["id"])


def test_the_pages_continue_live_from_what_they_show(ada, agents):
    newest = post(agents, body="newest", thread_id="t-live")["id"]

    for path in ("/", "/rooms/general", "/threads/t-live"):
        assert f"since={newest}&amp;" in ada.get(path).content.decode(), path


@pytest.mark.parametrize(
    ("message", "listed"),
    [
        ({"to_agent": "bob", "expects_reply": "operator"}, False),  # between agents: not the operator's to answer here
        ({"to_agent": "operator", "expects_reply": "bob"}, False),  # to the operator, but bob is to answer
        ({"to_agent": "operator", "expects_reply": "operator"}, True),
        ({"expects_reply": "operator"}, True),
    ],
)
def test_waiting_on_you_lists_only_what_the_operator_can_answer(ada, agents, message, listed):
    asked = post(agents, body="question", **message)

    page = ada.get("/waiting").content.decode()

    assert (f'data-message-id="{asked["id"]}"' in page) is listed


def test_an_admin_key_starting_a_task_becomes_its_assignee(agents, admin_api):
    task = post(agents, kind="task", body="unassigned work")
    status, env = admin_api.post(f"/v1/tasks/{task['id']}/start", {})

    assert status == 200, env
    assert env["result"]["assignee"] == "root"  # before, an admin key left it unassigned


def test_the_agent_list_marks_an_a2a_agent_elsewhere_and_links_every_agents_card(ada, agents):
    services.remote_register(
        agent_id="scout",
        card_url="https://agents.example/.well-known/agent-card.json",
        credential="never-shown-secret",
        card={"name": "Scout", "description": "finds things"},
        capabilities=["search"],
        by="ada",
    )
    services.session_create(agent_id="mallory", metadata={"a2a": {"card_url": "javascript:alert(1)"}})

    html = page(ada, "/?partial=agents", HTTP_HX_REQUEST="true")

    badge = '<a class="tag a2a" href="https://agents.example/.well-known/agent-card.json"'
    assert html.count('class="tag a2a"') == 1
    assert badge in html  # from the hub's register of them, not from what an agent says of itself
    assert "javascript:" not in html
    assert 'href="/a2a/agents/mallory/.well-known/agent-card.json"' in html
    assert "never-shown-secret" not in html
