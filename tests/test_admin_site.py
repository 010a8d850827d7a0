"""The Django admin (docs/dashboard.md): every model listed, messages searched and filtered, state changed
only through actions that call the services, and everything agents wrote shown escaped.

Personas:
- ``ada``: a superuser logged in to the admin: sees everything, runs every action;
- ``vera``: staff allowed only to view claims: lists them but cannot force-release;
- ``otto``: staff with no permission at all: reads every list, changes nothing (the dashboard's rule);
- ``petra``: staff with the hub's one admin permission, ``operate_hub``: runs the actions as ada does;
- ``nick``: a logged-in user who is not staff: the admin sends him to its login page;
- ``alice``, ``bob``: agents whose messages, claims, locks, tasks and deliveries fill the admin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from coordination.core import services
from coordination.core.models import AgentKey, Claim, Delivery, Lock, Message, RemoteAgent, Room, Session, Task
from tests.conftest import staff_client

pytestmark = pytest.mark.django_db

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"
HOSTILE_AGENT = "<script>alert(1)<img src=x onerror=alert(2)>"  # agent ids have no '/' (docs/protocol.md)


def changelist(model: str) -> str:
    return reverse(f"admin:coordination_{model}_changelist")


def change_page(model: str, pk: Any) -> str:
    return reverse(f"admin:coordination_{model}_change", args=[quote(pk)])


def listed(client: Client, model: str, **params: str) -> list[Any]:
    """The primary keys the changelist shows for these query parameters."""
    response = client.get(changelist(model), params)
    assert response.status_code == 200
    return sorted(row.pk for row in response.context["cl"].result_list)


def shown_messages(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def assert_escaped(body: str) -> None:
    assert "&lt;script&gt;alert(1)" in body
    assert "<script>alert(1)" not in body
    assert "<img src=x" not in body


@pytest.fixture
def ada(db: None) -> Client:
    """ada: a superuser logged in to the admin."""
    client = Client()
    client.force_login(User.objects.create_superuser("ada", "ada@example.com", "pw"))
    return client


@dataclass
class Hub:
    chat: Message  # alice in builds, thread release-train
    dm: Message  # alice to bob, high priority, expects bob's reply
    ask: Message  # alice in builds, expects a reply from anyone
    task: Message  # alice's task in builds


@pytest.fixture
def hub(db: None) -> Hub:
    services.room_create(name="builds")
    hub = Hub(
        chat=services.message_post(
            from_agent="alice", channel="builds", body="deploy finished", thread_id="release-train"
        ),
        dm=services.message_post(
            from_agent="alice", to_agent="bob", body="please review my patch", priority="high", expects_reply="bob"
        ),
        ask=services.message_post(
            from_agent="alice", channel="builds", body="who can take this?", expects_reply="anyone"
        ),
        task=services.message_post(from_agent="alice", channel="builds", kind="task", body="build the docs"),
    )
    services.session_create(agent_id="bob", capabilities=["python", "review"])
    services.claim_acquire(owner_agent_id="bob", claim_key="deploy-7", thread_id="release-train")
    services.lock_acquire(agent_id="bob", file_path="src/app.py")
    services.key_mint(agent_id="bob", label="bob's laptop")
    return hub


# ── Every model is listed ─────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("agentkey", "bob&#x27;s laptop"),
        ("room", "builds"),
        ("session", "review"),
        ("message", "deploy finished"),
        ("claim", "deploy-7"),
        ("lock", "src/app.py"),
        ("task", "builds"),
        ("delivery", "alice → bob"),
    ],
)
def test_each_changelist_and_change_page_loads_with_data(ada: Client, hub: Hub, model: str, expected: str) -> None:
    response = ada.get(changelist(model))

    assert response.status_code == 200
    assert expected in response.content.decode()
    first = response.context["cl"].result_list[0]
    assert ada.get(change_page(model, first.pk)).status_code == 200


def test_the_deliveries_changelist_costs_the_same_queries_for_many_rows(ada: Client, hub: Hub) -> None:
    with CaptureQueriesContext(connection) as one_row:
        assert ada.get(changelist("delivery")).status_code == 200
    for n in range(5):
        services.message_post(from_agent="alice", to_agent="bob", body=f"more work {n}")
    with CaptureQueriesContext(connection) as six_rows:
        assert len(ada.get(changelist("delivery")).context["cl"].result_list) == 6

    assert len(six_rows) == len(one_row)


# ── Messages: search and filters ──────────────────────────────────────────


def test_messages_are_searched_by_body_sender_recipient_thread_and_id(ada: Client, hub: Hub) -> None:
    assert listed(ada, "message", q="review") == [hub.dm.id]
    assert listed(ada, "message", q="release-train") == [hub.chat.id]
    assert listed(ada, "message", q="bob") == [hub.dm.id]
    assert listed(ada, "message", q="alice") == sorted([hub.chat.id, hub.dm.id, hub.ask.id, hub.task.id])
    assert listed(ada, "message", q=str(hub.ask.id)) == [hub.ask.id]
    assert listed(ada, "message", q="nothing like this") == []
    assert listed(ada, "message", q="9" * 40) == []  # not an id: no error either


def test_messages_are_filtered_by_kind_audience_priority_reply_and_channel(ada: Client, hub: Hub) -> None:
    broadcasts = sorted([hub.chat.id, hub.ask.id, hub.task.id])

    assert listed(ada, "message", kind__exact="task") == [hub.task.id]
    assert listed(ada, "message", audience="direct") == [hub.dm.id]
    assert listed(ada, "message", audience="broadcast") == broadcasts
    assert listed(ada, "message", priority__exact="high") == [hub.dm.id]
    assert listed(ada, "message", expects_reply="anyone") == [hub.ask.id]
    assert listed(ada, "message", expects_reply="agent") == [hub.dm.id]
    assert listed(ada, "message", expects_reply="none") == sorted([hub.chat.id, hub.task.id])
    assert listed(ada, "message", channel="builds") == broadcasts
    assert listed(ada, "message", channel="builds", q="docs") == [hub.task.id]


def test_messages_cannot_be_added_edited_or_deleted(ada: Client, hub: Hub) -> None:
    page = change_page("message", hub.chat.id)

    assert ada.get(reverse("admin:coordination_message_add")).status_code == 403
    assert ada.post(page, {"body": "rewritten", "from_agent": "mallory"}).status_code == 403
    assert ada.post(reverse("admin:coordination_message_delete", args=[hub.chat.id])).status_code == 403
    response = ada.post(changelist("message"), {"action": "delete_selected", "_selected_action": [hub.chat.id]})
    assert response.status_code in (200, 302)
    hub.chat.refresh_from_db()
    assert (hub.chat.body, hub.chat.from_agent) == ("deploy finished", "alice")


def test_other_lists_are_searched_and_filtered(ada: Client, hub: Hub) -> None:
    (bob,) = Session.objects.all()
    task_id = hub.task.id

    assert listed(ada, "session", q="review") == [bob.pk]
    assert listed(ada, "session", active__exact="0") == []
    assert listed(ada, "task", q=str(task_id)) == [task_id]
    assert listed(ada, "task", q="alice", status__exact="open", channel="builds") == [task_id]
    assert listed(ada, "task", status__exact="done") == []
    (delivery,) = Delivery.objects.all()
    assert listed(ada, "delivery", q=str(hub.dm.id)) == [delivery.pk]
    assert listed(ada, "delivery", q="bob", state__exact="queued") == [delivery.pk]
    assert listed(ada, "delivery", state__exact="failed") == []


# ── Claims and locks ──────────────────────────────────────────────────────


def test_claims_are_filtered_by_state(ada: Client, hub: Hub) -> None:
    services.claim_acquire(owner_agent_id="bob", claim_key="old")
    services.claim_release(claim_key="old", agent_id="bob")
    services.claim_acquire(owner_agent_id="bob", claim_key="lapsed")
    Claim.objects.filter(pk="lapsed").update(expires_at="2000-01-01T00:00:00Z")

    assert listed(ada, "claim", state="active") == ["deploy-7"]
    assert listed(ada, "claim", state="released") == ["old"]
    assert listed(ada, "claim", state="expired") == ["lapsed"]
    assert listed(ada, "claim") == ["deploy-7", "lapsed", "old"]


def test_the_force_release_action_releases_a_claim_and_tells_its_holder(ada: Client, hub: Hub) -> None:
    services.claim_acquire(owner_agent_id="bob", claim_key="done-already")
    services.claim_release(claim_key="done-already", agent_id="bob")

    response = ada.post(
        changelist("claim"), {"action": "force_release", "_selected_action": ["deploy-7", "done-already"]}, follow=True
    )

    assert response.status_code == 200
    assert "Released 1 claim(s): deploy-7." in shown_messages(response)
    assert "done-already: no claim done-already is held" in shown_messages(response)
    assert Claim.objects.get(pk="deploy-7").released_at is not None
    notice = Message.objects.filter(to_agent="bob", from_agent="system", kind="notice").get()
    assert notice.metadata == {"claim_released": "deploy-7", "released_by": "ada"}
    assert services.claim_acquire(owner_agent_id="alice", claim_key="deploy-7")[1] is True


def test_the_force_release_action_releases_a_lock_and_tells_its_holder(ada: Client, hub: Hub) -> None:
    response = ada.post(
        changelist("lock"), {"action": "force_release", "_selected_action": ["src/app.py"]}, follow=True
    )

    assert "Released 1 lock(s): src/app.py." in shown_messages(response)
    assert not Lock.objects.active().exists()
    notice = Message.objects.filter(to_agent="bob", from_agent="system", kind="notice").get()
    assert notice.metadata == {"lock_released": "src/app.py", "released_by": "ada"}
    assert listed(ada, "lock", state="released") == ["src/app.py"]


def test_staff_who_may_only_view_claims_cannot_force_release_them(hub: Hub) -> None:
    vera = User.objects.create_user("vera", "vera@example.com", "pw", is_staff=True)
    vera.user_permissions.add(Permission.objects.get(codename="view_claim"))
    client = Client()
    client.force_login(vera)

    response = client.get(changelist("claim"))
    client.post(changelist("claim"), {"action": "force_release", "_selected_action": ["deploy-7"]})

    assert response.status_code == 200
    assert "force_release" not in response.content.decode()
    assert Claim.objects.get(pk="deploy-7").released_at is None


def test_staff_without_the_hub_permission_read_every_list_and_change_nothing(hub: Hub) -> None:
    otto = staff_client("otto")

    for model in ("message", "claim", "lock", "task", "delivery", "agentkey", "room", "session"):
        response = otto.get(changelist(model))
        assert response.status_code == 200, model
        assert list(response.context["cl"].model_admin.get_actions(response.wsgi_request)) == [], model
    refused = otto.post(changelist("claim"), {"action": "force_release", "_selected_action": ["deploy-7"]})
    adding = otto.get(reverse("admin:coordination_agentkey_add"))

    assert refused.status_code == 200  # Django's changelist ignores an action it does not offer
    assert Claim.objects.get(pk="deploy-7").released_at is None
    assert adding.status_code == 403


def test_staff_with_the_operate_hub_permission_run_the_actions_recorded_as_themselves(hub: Hub) -> None:
    petra = staff_client("petra", "operate_hub")

    response = petra.post(changelist("claim"), {"action": "force_release", "_selected_action": ["deploy-7"]})

    assert response.status_code == 302
    assert Claim.objects.get(pk="deploy-7").released_at is not None
    notice = Message.objects.filter(to_agent="bob", from_agent="system", kind="notice").get()
    assert notice.metadata["released_by"] == "petra"
    assert petra.get(reverse("admin:coordination_agentkey_add")).status_code == 200
    assert "revoke_keys" in petra.get(changelist("agentkey")).context["cl"].model_admin.get_actions(
        response.wsgi_request
    )


# ── Keys, rooms, sessions, tasks ──────────────────────────────────────────


def test_the_revoke_action_revokes_and_says_which_were_revoked_already(ada: Client, hub: Hub) -> None:
    other, _ = services.key_mint(agent_id="alice")
    services.key_revoke(key_id=other.prefix)
    bobs = AgentKey.objects.get(agent_id="bob")

    response = ada.post(
        changelist("agentkey"), {"action": "revoke_keys", "_selected_action": [bobs.pk, other.pk]}, follow=True
    )

    assert "Revoked 1 key(s). (1 already revoked)" in shown_messages(response)
    bobs.refresh_from_db()
    assert bobs.revoked_at is not None
    assert ada.post(reverse("admin:coordination_agentkey_delete", args=[bobs.pk])).status_code == 403


def test_a_room_is_added_through_the_service_and_never_deleted(ada: Client, hub: Hub) -> None:
    response = ada.post(reverse("admin:coordination_room_add"), {"name": "ops", "metadata": '{"team": "infra"}'})

    assert response.status_code == 302
    room = Room.objects.get(pk="ops")
    assert (room.created_by, room.metadata) == ("admin:ada", {"team": "infra"})
    ada.post(change_page("room", "ops"), {"name": "renamed", "metadata": "{}"})
    assert list(Room.objects.filter(pk__in=["ops", "renamed"]).values_list("name", "metadata")) == [
        ("ops", {"team": "infra"})
    ]
    assert ada.post(reverse("admin:coordination_room_delete", args=["ops"])).status_code == 403


def test_the_close_sessions_action_takes_an_agent_offline(ada: Client, hub: Hub) -> None:
    (bob,) = Session.objects.all()

    response = ada.post(changelist("session"), {"action": "close_sessions", "_selected_action": [bob.pk]}, follow=True)

    assert "Closed 1 session(s): bob." in shown_messages(response)
    assert Session.objects.get(pk=bob.pk).active is False
    again = ada.post(changelist("session"), {"action": "close_sessions", "_selected_action": [bob.pk]}, follow=True)
    assert "bob: session not found" in shown_messages(again)


def test_the_task_actions_complete_and_fail_through_the_services(ada: Client, hub: Hub) -> None:
    second = services.message_post(from_agent="alice", channel="builds", kind="task", body="write the notes")

    done = ada.post(changelist("task"), {"action": "complete_tasks", "_selected_action": [hub.task.id]}, follow=True)
    failed = ada.post(
        changelist("task"), {"action": "fail_tasks", "_selected_action": [hub.task.id, second.id]}, follow=True
    )

    assert f"Completed 1 task(s): {hub.task.id}." in shown_messages(done)
    assert f"Failed 1 task(s): {second.id}." in shown_messages(failed)
    assert any(m.startswith(f"{hub.task.id}: task {hub.task.id} is done") for m in shown_messages(failed))
    assert Task.objects.get(pk=hub.task.id).status == "done"
    second_task = Task.objects.get(pk=second.id)
    assert (second_task.status, second_task.failure_reason) == ("failed", "failed by ada in the admin")


# ── What agents wrote is shown escaped ────────────────────────────────────


def test_hostile_text_from_agents_is_escaped_everywhere_it_is_shown(ada: Client, db: None) -> None:
    services.room_create(name="builds")
    message = services.message_post(from_agent=HOSTILE_AGENT, channel="builds", body=HOSTILE, thread_id=HOSTILE)
    services.message_post(from_agent="alice", to_agent=HOSTILE_AGENT, body="for you")
    services.session_create(agent_id=HOSTILE_AGENT, display_name=HOSTILE, capabilities=[HOSTILE])
    services.claim_acquire(owner_agent_id=HOSTILE_AGENT, claim_key=HOSTILE)
    services.lock_acquire(agent_id=HOSTILE_AGENT, file_path=HOSTILE)
    claim = Claim.objects.get()

    pages = [
        changelist("message"),
        changelist("message") + "?q=script",
        change_page("message", message.id),
        changelist("claim"),
        change_page("claim", claim.pk),
        changelist("lock"),
        changelist("session"),
        changelist("delivery"),
        change_page("session", Session.objects.get().pk),
    ]
    for page in pages:
        response = ada.get(page)
        assert response.status_code == 200, page
        assert_escaped(response.content.decode())

    released = ada.post(changelist("claim"), {"action": "force_release", "_selected_action": [claim.pk]}, follow=True)
    assert released.status_code == 200
    assert Claim.objects.get().released_at is not None
    assert_escaped(released.content.decode())


# ── Who may come in ───────────────────────────────────────────────────────


@pytest.mark.parametrize("model", ["message", "claim", "agentkey"])
def test_a_user_who_is_not_staff_is_sent_to_the_admin_login(hub: Hub, model: str) -> None:
    nick = Client()
    nick.force_login(User.objects.create_user("nick", "nick@example.com", "pw"))

    for client in (nick, Client()):
        response = client.get(changelist(model))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    response = nick.post(changelist("claim"), {"action": "force_release", "_selected_action": ["deploy-7"]})
    assert response.status_code == 302
    assert Claim.objects.get(pk="deploy-7").released_at is None


def test_a2a_agents_elsewhere_are_listed_without_their_credential_and_removed_by_the_action(
    ada: Client, hub: Hub
) -> None:
    services.remote_register(
        agent_id="scout",
        card_url="https://agents.example/.well-known/agent-card.json",
        credential="admin-never-sees-this",
        card={"name": "Scout"},
        capabilities=["search"],
        by="ada",
    )
    pk = RemoteAgent.objects.get(agent_id="scout").pk
    listing = ada.get(changelist("remoteagent"))
    page = ada.get(change_page("remoteagent", pk))

    assert listing.status_code == 200
    assert "scout" in listing.content.decode()
    assert page.status_code == 200
    assert "admin-never-sees-this" not in listing.content.decode() + page.content.decode()
    removed = ada.post(changelist("remoteagent"), {"action": "remove", "_selected_action": [str(pk)]})
    assert removed.status_code == 302
    assert not RemoteAgent.objects.filter(agent_id="scout").exists()
    assert not Session.objects.filter(agent_id="scout", active=True).exists()
