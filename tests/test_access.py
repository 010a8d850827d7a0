"""Identity, keys and access (docs/access.md, and section 10's size limit) through the REST API.

Personas (fixtures below; each but ``anyone`` holds an agent key of its own):
- ``anyone``: the anonymous loopback client. Under ``ARC_AUTH=loopback-open`` (the default)
  it acts as whatever agent it names, as Arc does, but it is no admin;
- ``alice``: an agent with her own unscoped key: acts only as alice, in every room;
- ``bob``: a teammate with his own unscoped key: acts only as bob, and may not touch
  alice's sessions, claims, locks or tasks;
- ``carol``: a teammate with her own key; alice assigns her a task;
- ``olivia``: an outsider whose key is scoped to room ``ops``: reads and posts only there,
  plus her own direct messages;
- ``root``: an admin key: may also toggle remote access and shut the hub down;
- ``rex``: a revoked key: may do nothing at all.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from arcsite.asgi import application
from arcsite.settings import _secret_key
from coordination.core import hub, services
from coordination.core.models import AgentKey, Claim, Lock, Message, Session, Task
from tests.conftest import ApiClient, Persona
from tests.hubproc import ROOT, hub_env

pytestmark = pytest.mark.django_db

KEY_PATTERN = re.compile(r"arc_[0-9a-f]{12}_[A-Za-z0-9_-]+")
REMOTE = "192.0.2.7"  # TEST-NET-1: never a real peer


# ── Personas ──────────────────────────────────────────────────────────────


@pytest.fixture
def anyone(api: ApiClient) -> ApiClient:
    """The anonymous loopback client: acts as any agent it names (loopback-open), is no admin."""
    return api


@pytest.fixture
def ops(anyone: ApiClient) -> str:
    """Room ``ops``, olivia's only room."""
    assert anyone.post("/v1/channels", {"name": "ops"})[0] == 201
    return "ops"


@pytest.fixture
def alice(api: ApiClient) -> Persona:
    """alice: her own unscoped key; acts only as alice, in every room."""
    return Persona("alice", label="alice's laptop")


@pytest.fixture
def bob(api: ApiClient) -> Persona:
    """bob: a teammate's unscoped key; acts only as bob, never on alice's work."""
    return Persona("bob")


@pytest.fixture
def carol(api: ApiClient) -> Persona:
    """carol: a teammate's unscoped key; the assignee of alice's task."""
    return Persona("carol")


@pytest.fixture
def olivia(api: ApiClient, ops: str) -> Persona:
    """olivia: an outsider's key scoped to room ops; reads and posts only there and in her own DMs."""
    return Persona("olivia", rooms=[ops])


@pytest.fixture
def root(api: ApiClient) -> Persona:
    """root: an admin key; may toggle remote access and shut the hub down."""
    return Persona("root", admin=True)


@pytest.fixture
def rex(api: ApiClient) -> Persona:
    """rex: a key that was revoked; may do nothing."""
    persona = Persona("rex")
    services.key_revoke(key_id=persona.key.prefix)
    return persona


@pytest.fixture
def no_pending_shutdown() -> Iterator[None]:
    """No shutdown timer outlives a test: if one fired it would stop this test process."""
    yield
    if hub.shutdown.status() is not None:
        hub.shutdown.cancel()


def status_of(client: ApiClient, path: str, **params: Any) -> tuple[int, dict[str, Any] | None]:
    """GET ``path``; a stream (SSE) is left unread, so only its status counts.

    (Closing it would fire ``request_finished``, which closes the test's database connection.)
    """
    response = client.client.get(path, params)
    if response.streaming:
        return response.status_code, None
    return response.status_code, response.json()


def post(client: ApiClient, **fields: Any) -> dict[str, Any]:
    status, env = client.post("/v1/messages", fields)
    assert status == 201, env
    return env["result"]


def invite(*args: str) -> str:
    out = StringIO()
    call_command("invite", *args, "--url", "http://hub.test:6969", stdout=out, stderr=StringIO())
    return out.getvalue()


def minted_key(text: str) -> str:
    found = KEY_PATTERN.search(text)
    assert found is not None, text
    return found[0]


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return [row["id"] for row in rows]


def listing(*args: str) -> str:
    out = StringIO()
    call_command("keys", *args, stdout=out)
    return out.getvalue()


# ── Keys: hashed at rest, shown once, expiry, last use ────────────────────


def test_a_key_is_stored_only_as_its_sha256(anyone):
    secret = minted_key(invite("alice"))

    [row] = AgentKey.objects.all()
    stored = json.dumps(list(AgentKey.objects.values()), default=str)

    assert row.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in stored
    assert secret.split("_", 2)[2][:20] not in stored  # not even a piece of the secret part (it may hold "_")
    assert ApiClient(key=secret).get("/v1/bootstrap")[1]["result"]["agent_id"] == "alice"


def test_the_key_is_shown_once_when_minted_and_never_listed(anyone):
    brief = invite("alice", "--label", "ci runner")
    secret = minted_key(brief)
    digest = AgentKey.objects.get().digest

    for shown in (listing(), listing("--json"), listing("--all"), listing("--agent", "alice", "--json")):
        assert "alice" in shown
        assert secret not in shown
        assert digest not in shown
    assert AgentKey.objects.get().prefix in listing()


@pytest.mark.parametrize(
    ("choice", "seconds"),
    [("10m", 600), ("1h", 3600), ("24h", 86_400), ("7d", 7 * 86_400), ("30d", 30 * 86_400), ("never", None)],
)
def test_a_key_lives_for_the_chosen_expiry(anyone, choice, seconds):
    invite("alice", "--expires", choice)

    key = AgentKey.objects.get()

    if seconds is None:
        assert key.expires_at is None
    else:
        assert key.expires_at is not None
        assert key.expires_at - key.created_at == timedelta(seconds=seconds)


def test_it_refuses_an_expiry_that_is_not_one_of_the_choices(anyone):
    with pytest.raises(CommandError, match="invalid choice"):
        invite("alice", "--expires", "2h")

    assert not AgentKey.objects.exists()


def test_an_expired_key_gets_401(alice):
    assert alice.get("/v1/bootstrap")[0] == 200
    AgentKey.objects.filter(pk=alice.key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    status, env = alice.get("/v1/bootstrap")

    assert (status, env) == (401, {"ok": False, "error": "this agent key has expired"})


def test_last_used_at_records_when_the_key_was_used(alice):
    assert alice.key.last_used_at is None
    before = timezone.now()

    alice.get("/v1/hub-info")

    alice.key.refresh_from_db()
    assert alice.key.last_used_at is not None
    assert before <= alice.key.last_used_at <= timezone.now()
    assert json.loads(listing("--json"))[0]["last_used_at"] is not None


@pytest.mark.parametrize(
    ("authorization", "error"),
    [
        pytest.param("Basic YWxpY2U6c2VjcmV0", "Authorization must be 'Bearer <agent key>'", id="basic-auth"),
        pytest.param("Bearer", "Authorization must be 'Bearer <agent key>'", id="bearer-nothing"),
        pytest.param("Bearer    ", "Authorization must be 'Bearer <agent key>'", id="bearer-blank"),
        pytest.param("Bearer alice", "malformed agent key", id="not-a-key"),
        pytest.param("Bearer arc_000000000000_guess", "unknown agent key", id="guessed-key"),
        pytest.param("Bearer arc_' OR 1=1 --_x", "unknown agent key", id="sql-in-prefix"),
        pytest.param("Bearer " + "arc_" + "a" * 5000 + "_x", "unknown agent key", id="huge-prefix"),
    ],
)
def test_it_refuses_a_bad_authorization_header_with_401(anyone, authorization, error):
    response = anyone.client.get("/v1/bootstrap", {"agent_id": "alice"}, headers={"Authorization": authorization})

    assert response.status_code == 401
    assert response.json()["ok"] is False
    assert response.json()["error"].startswith(error)


def test_it_refuses_a_real_key_id_with_a_wrong_secret(alice):
    forged = ApiClient(key=f"arc_{alice.key.prefix}_not-the-secret")
    truncated = ApiClient(key=alice.secret[:-1])

    assert forged.get("/v1/bootstrap") == (401, {"ok": False, "error": "unknown agent key"})
    assert truncated.get("/v1/bootstrap") == (401, {"ok": False, "error": "unknown agent key"})


# ── Binding: acting fields must be the key's agent or absent ──────────────

# (path, acting field, the rest of a body alice may send, where the answer names the agent)
POST_BINDINGS = [
    ("/v1/sessions", "agent_id", {"replace": True}, "agent_id"),
    ("/v1/messages", "from_agent", {"body": "hi"}, "from_agent"),
    ("/v1/channels", "created_by", {"name": "builds"}, "created_by"),
    ("/v1/claims", "owner_agent_id", {"claim_key": "build-7"}, "owner_agent_id"),
    ("/v1/claims/refresh", "owner_agent_id", {"claim_key": "held-by-alice"}, "owner_agent_id"),
    ("/v1/claims/release", "agent_id", {"claim_key": "held-by-alice"}, "owner_agent_id"),
    ("/v1/locks", "agent_id", {"file_path": "src/new.py"}, "agent_id"),
    ("/v1/locks/refresh", "agent_id", {"file_path": "src/held.py"}, "agent_id"),
    ("/v1/locks/release", "agent_id", {"file_path": "src/held.py"}, "agent_id"),
]
# GET endpoints whose agent_id query names who reads.
GET_BINDINGS = ["/v1/events", "/v1/bootstrap", "/v1/stream"]


@pytest.fixture
def alices_work(anyone: ApiClient) -> None:
    """alice holds claim ``held-by-alice`` and the lock on ``src/held.py``."""
    assert anyone.post("/v1/claims", {"owner_agent_id": "alice", "claim_key": "held-by-alice"})[0] == 201
    assert anyone.post("/v1/locks", {"agent_id": "alice", "file_path": "src/held.py"})[0] == 201


@pytest.mark.usefixtures("alices_work")
@pytest.mark.parametrize(("path", "field", "body", "answer"), POST_BINDINGS)
def test_an_absent_acting_field_is_filled_with_the_keys_agent(alice, path, field, body, answer):
    status, env = alice.post(path, body)

    assert status in (200, 201), env
    assert env["result"][answer] == "alice"


@pytest.mark.usefixtures("alices_work")
@pytest.mark.parametrize(("path", "field", "body", "answer"), POST_BINDINGS)
def test_the_keys_own_agent_is_accepted(alice, path, field, body, answer):
    status, env = alice.post(path, {**body, field: "alice"})

    assert status in (200, 201), env
    assert env["result"][answer] == "alice"


@pytest.mark.usefixtures("alices_work")
@pytest.mark.parametrize(("path", "field", "body", "answer"), POST_BINDINGS)
def test_it_refuses_acting_as_another_agent(alice, anyone, path, field, body, answer):
    status, env = alice.post(path, {**body, field: "bob"})

    assert status == 403
    assert env == {"ok": False, "error": f"{field} must be alice (the key's agent) or absent, not bob"}
    # Nothing was done in bob's name, and alice's claim and lock are untouched.
    assert not Message.objects.filter(from_agent="bob").exists()
    assert not Session.objects.filter(agent_id="bob").exists()
    assert not Claim.objects.filter(owner_agent_id="bob").exists()
    assert not Lock.objects.filter(agent_id="bob").exists()
    assert Claim.objects.active().get(pk="held-by-alice").owner_agent_id == "alice"
    assert Lock.objects.active().get(pk="src/held.py").agent_id == "alice"


@pytest.mark.parametrize(
    "claimed",
    ["Alice", "ALICE", "alice\u200b", "al ice", "alice2", "bob", 0, ["alice"], {"id": "alice"}, True],
    ids=repr,
)
def test_it_refuses_look_alike_agent_ids(alice, claimed):
    status, env = alice.post("/v1/messages", {"from_agent": claimed, "body": "who am I?"})

    assert status == 403
    assert "must be alice" in env["error"]
    assert not Message.objects.exists()


def test_surrounding_whitespace_still_means_the_keys_agent(alice):
    assert post(alice, from_agent="  alice ", body="hi")["from_agent"] == "alice"


@pytest.mark.parametrize("path", GET_BINDINGS)
def test_a_reader_without_agent_id_reads_as_the_keys_agent(anyone, alice, path):
    assert status_of(anyone, path)[0] == 400  # the anonymous client must say who it is
    assert status_of(alice, path)[0] == 200
    assert status_of(alice, path, agent_id="alice")[0] == 200


@pytest.mark.parametrize("path", GET_BINDINGS)
def test_it_refuses_reading_as_another_agent(alice, path):
    status, env = status_of(alice, path, agent_id="bob")

    assert status == 403
    assert env == {"ok": False, "error": "agent_id must be alice (the key's agent) or absent, not bob"}


def test_bootstrap_answers_for_the_keys_agent(alice):
    assert alice.get("/v1/bootstrap")[1]["result"]["agent_id"] == "alice"


def test_the_inbox_in_the_path_must_be_the_keys_agent(alice, anyone):
    dm = post(anyone, from_agent="carol", to_agent="alice", body="for alice")
    post(anyone, from_agent="carol", to_agent="bob", body="for bob")

    assert [m["id"] for m in alice.get("/v1/inbox/alice")[1]["result"]] == [dm["id"]]
    status, env = alice.get("/v1/inbox/bob")
    assert status == 403
    assert env["error"] == "agent_id must be alice (the key's agent) or absent, not bob"


def test_a_key_may_close_only_its_own_agents_session(alice, bob):
    session_id = alice.post("/v1/sessions", {})[1]["result"]["session_id"]

    status, env = bob.delete(f"/v1/sessions/{session_id}")

    assert status == 403
    assert env["ok"] is False
    assert "alice" in env["error"]
    assert Session.objects.get(pk=session_id).active is True
    assert alice.delete(f"/v1/sessions/{session_id}") == (
        200,
        {"ok": True, "result": {"session_id": session_id, "deleted": True}},
    )


def test_the_delivery_status_of_a_dm_is_for_its_parties_only(alice, bob, carol):
    dm = post(alice, to_agent="carol", body="private")

    assert alice.get(f"/v1/messages/{dm['id']}/status")[0] == 200
    assert carol.get(f"/v1/messages/{dm['id']}/status")[0] == 200
    assert bob.get(f"/v1/messages/{dm['id']}/status") == (
        403,
        {"ok": False, "error": "this message is not visible to this key"},
    )


# ── Access modes and remote access ────────────────────────────────────────


def test_required_mode_refuses_anonymous_loopback_requests(anyone, alice, settings):
    settings.ARC_AUTH = "required"

    for path in ("/v1/hub-info", "/v1/channels", "/v1/agents", "/v1/network"):
        status, env = anyone.get(path)
        assert status == 401, path
        assert "ARC_AUTH=required" in env["error"]
    assert anyone.post("/v1/messages", {"from_agent": "alice", "body": "hi"})[0] == 401
    assert not Message.objects.exists()
    assert alice.get("/v1/channels")[0] == 200
    assert post(alice, body="with my key")["from_agent"] == "alice"


def test_loopback_open_lets_anonymous_loopback_clients_act_as_anyone(anyone):
    assert post(anyone, from_agent="bob", body="as in Arc")["from_agent"] == "bob"
    assert anyone.client.get("/v1/channels", REMOTE_ADDR="::1").status_code == 200


def test_a_remote_client_needs_remote_access_on_and_a_key(anyone, alice, root):
    def remote(client: ApiClient, **headers: str) -> tuple[int, str]:
        response = client.client.get("/v1/channels", REMOTE_ADDR=REMOTE, headers=headers)
        return response.status_code, response.json().get("error", "")

    assert remote(anyone)[0] == 403
    assert "remote access is off" in remote(anyone)[1]
    assert remote(alice)[0] == 403  # a key does not open a closed hub
    assert remote(anyone, **{"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"})[0] == 403

    assert root.post("/v1/network", {"allow_remote": True})[0] == 200

    assert remote(anyone)[0] == 401
    assert "need an agent key" in remote(anyone)[1]
    assert remote(anyone, **{"X-Forwarded-For": "127.0.0.1"})[0] == 401  # a forged header is no loopback
    assert remote(alice) == (200, "")


def test_a_remote_client_cannot_reach_the_dashboard_or_admin_while_remote_access_is_off(anyone):
    for path in ("/", "/admin/"):
        assert anyone.client.get(path, REMOTE_ADDR=REMOTE).status_code == 403, path


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/network", {"allow_remote": True}),
        ("/v1/shutdown", {"delay_sec": 3600}),
        ("/v1/shutdown/cancel", {}),
    ],
)
@pytest.mark.usefixtures("no_pending_shutdown")
def test_it_refuses_admin_actions_to_anyone_but_an_admin(anyone, alice, olivia, path, body):
    for who in (anyone, alice, olivia):
        status, env = who.post(path, body)
        assert status == 403, who
        assert "needs an admin key" in env["error"]

    assert services.remote_allowed() is False
    assert hub.shutdown.status() is None


def test_an_admin_key_may_toggle_remote_access(root, anyone):
    assert root.post("/v1/network", {"allow_remote": True}) == (200, {"ok": True, "result": {"allow_remote": True}})
    assert anyone.get("/v1/network")[1]["result"] == {"allow_remote": True}
    assert root.post("/v1/network", {"allow_remote": False})[1]["result"] == {"allow_remote": False}


@pytest.mark.usefixtures("no_pending_shutdown")
def test_an_admin_key_may_schedule_and_cancel_a_shutdown(root, anyone):
    status, env = root.post("/v1/shutdown", {"delay_sec": 3600})

    assert status == 200
    assert env["result"]["status"] == "shutdown_initiated"
    assert anyone.get("/v1/shutdown")[1]["result"]["delay_sec"] == 3600
    assert root.post("/v1/shutdown/cancel") == (200, {"ok": True, "result": {"status": "shutdown_cancelled"}})
    assert hub.shutdown.status() is None


# ── Room scope: olivia sees and posts only in ops ─────────────────────────


def test_a_scoped_key_posts_only_in_its_rooms(olivia):
    status, env = olivia.post("/v1/messages", {"channel": "general", "body": "hello all"})
    default_status, _ = olivia.post("/v1/messages", {"body": "no channel means general"})

    assert status == 403
    assert env["error"] == "this key is limited to rooms ops; general is not one"
    assert default_status == 403
    assert post(olivia, channel="ops", body="ops only")["channel"] == "ops"
    assert post(olivia, to_agent="alice", body="a direct message")["to_agent"] == "alice"
    assert list(Message.objects.filter(channel="general").values_list("body", flat=True)) == []


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/messages", {"channel": "general"}),
        ("/v1/events", {"channel": "general"}),
        ("/v1/stream", {"channels": "general"}),
        ("/v1/stream", {"channels": "ops,general"}),
    ],
)
def test_a_scoped_key_cannot_read_another_room(olivia, path, params):
    status, env = status_of(olivia, path, **params)

    assert status == 403
    assert env == {"ok": False, "error": "this key is limited to rooms ops; general is not one"}


def test_a_scoped_key_cannot_open_another_rooms_thread_or_message(olivia, anyone):
    general = post(anyone, from_agent="alice", body="roadmap", thread_id="t-general")

    assert olivia.get("/v1/threads/t-general")[0] == 403
    assert olivia.get(f"/v1/messages/{general['id']}/status")[0] == 403
    assert olivia.get("/v1/messages", channel="ops")[0] == 200


@pytest.fixture
def two_rooms_of_traffic(anyone: ApiClient, ops: str) -> dict[str, dict[str, Any]]:
    """alice's posts in general and in ops, tasks in each, and direct messages to olivia and to bob."""
    return {
        "general": post(anyone, from_agent="alice", body="general news", thread_id="t-general"),
        "ops": post(anyone, from_agent="alice", channel=ops, body="ops news", thread_id="t-ops"),
        "general_task": post(anyone, from_agent="alice", kind="task", body="general work"),
        "ops_task": post(anyone, from_agent="alice", kind="task", channel=ops, body="ops work"),
        "to_olivia": post(anyone, from_agent="alice", to_agent="olivia", body="psst, olivia"),
        "task_for_olivia": post(anyone, from_agent="alice", to_agent="olivia", kind="task_request", body="check"),
        "to_bob": post(anyone, from_agent="alice", to_agent="bob", body="psst, bob"),
    }


def test_a_scoped_key_sees_only_its_rooms_and_its_own_direct_messages(olivia, bob, two_rooms_of_traffic):
    sent = two_rooms_of_traffic

    assert ids(olivia.get("/v1/events")[1]["result"]) == ids(
        [sent["ops"], sent["ops_task"], sent["to_olivia"], sent["task_for_olivia"]]
    )
    assert ids(olivia.get("/v1/inbox/olivia")[1]["result"]) == ids([sent["to_olivia"], sent["task_for_olivia"]])
    assert [r["name"] for r in olivia.get("/v1/channels")[1]["result"]] == ["ops"]
    assert [t["thread_id"] for t in olivia.get("/v1/threads")[1]["result"]] == ["t-ops"]
    assert {t["task_id"] for t in olivia.get("/v1/tasks")[1]["result"]} == {
        sent["ops_task"]["id"],
        sent["task_for_olivia"]["id"],  # assigned to her, in the direct room
    }
    # The same traffic through an unscoped teammate's key: everything but others' direct messages.
    assert ids(bob.get("/v1/events")[1]["result"]) == ids(
        [sent["general"], sent["ops"], sent["general_task"], sent["ops_task"], sent["to_bob"]]
    )
    assert len(bob.get("/v1/tasks")[1]["result"]) == 3


# ── Ownership: claims, locks and tasks of others ──────────────────────────


@pytest.mark.usefixtures("alices_work")
@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/v1/claims/release", {"claim_key": "held-by-alice"}, "claim not found or not owned by agent_id"),
        ("/v1/claims/refresh", {"claim_key": "held-by-alice"}, "claim not found or not owned by owner_agent_id"),
        ("/v1/locks/release", {"file_path": "src/held.py"}, "lock not found or not owned by agent_id"),
        ("/v1/locks/refresh", {"file_path": "src/held.py"}, "lock not found or not owned by agent_id"),
    ],
)
def test_it_refuses_to_let_bob_release_or_refresh_alices_claim_or_lock(bob, path, body, error):
    # In his own name the lease is not his (404, as Arc answers); in alice's name the key forbids it (403).
    assert bob.post(path, body) == (404, {"ok": False, "error": error})
    assert bob.post(path, {**body, "agent_id": "alice", "owner_agent_id": "alice"})[0] == 403

    assert Claim.objects.active().get(pk="held-by-alice").owner_agent_id == "alice"
    assert Lock.objects.active().get(pk="src/held.py").agent_id == "alice"


@pytest.mark.usefixtures("alices_work")
def test_bob_cannot_take_over_alices_claim_or_lock_while_held(bob):
    claim_status, claim = bob.post("/v1/claims", {"claim_key": "held-by-alice"})
    lock_status, lock = bob.post("/v1/locks", {"file_path": "src/held.py"})

    assert (claim_status, claim["acquired"], claim["result"]["owner_agent_id"]) == (200, False, "alice")
    assert (lock_status, lock["acquired"], lock["result"]["agent_id"]) == (200, False, "alice")


@pytest.mark.usefixtures("alices_work")
def test_the_owner_releases_her_own_claim_and_lock(alice):
    assert alice.post("/v1/claims/release", {"claim_key": "held-by-alice"})[1]["result"]["released_at"]
    assert alice.post("/v1/locks/release", {"file_path": "src/held.py"})[1]["result"]["released_at"]


@pytest.fixture
def carols_task(alice: Persona, carol: Persona) -> int:
    """A task alice requested and assigned to carol."""
    return post(alice, to_agent="carol", kind="task_request", body="run the migration")["id"]


def task_status(task_id: int) -> str:
    return Task.objects.get(pk=task_id).status


def test_it_refuses_to_let_bob_complete_a_task_that_is_not_his(bob, carols_task):
    status, env = bob.post(f"/v1/tasks/{carols_task}/complete")

    assert status == 403
    assert env["error"] == f"only the task's requester, assignee or claimant may complete task {carols_task}"
    assert task_status(carols_task) == "open"


def test_bobs_result_for_a_task_that_is_not_his_is_refused_like_completing_it(bob, carols_task):
    # Answering a task is finishing it: the rule of /complete (docs/access.md), and nothing is stored.
    before = Message.objects.count()
    status, env = bob.post(
        "/v1/messages",
        {"kind": "task_result", "reply_to": carols_task, "body": "gave up", "metadata": {"success": False}},
    )

    assert status == 403
    assert env["error"] == f"only the task's requester, assignee or claimant may answer task {carols_task}"
    assert task_status(carols_task) == "open"
    assert Message.objects.count() == before


def test_the_requester_may_complete_her_task(alice, carols_task):
    status, env = alice.post(f"/v1/tasks/{carols_task}/complete")

    assert (status, env["result"]["status"]) == (200, "done")


def test_the_assignee_may_complete_the_task(carol, carols_task):
    assert carol.post(f"/v1/tasks/{carols_task}/complete")[1]["result"]["status"] == "done"


def test_the_assignee_may_fail_the_task_with_a_failed_result(carol, carols_task):
    reply = post(carol, kind="task_result", reply_to=carols_task, body="disk full", metadata={"success": False})

    assert reply["metadata"]["task_failed"] == carols_task
    assert task_status(carols_task) == "failed"
    assert Task.objects.get(pk=carols_task).failure_reason == "disk full"


def test_a_worker_who_claimed_the_task_may_complete_it(alice, bob):
    task_id = post(alice, kind="task", body="anyone: rebuild the index")["id"]
    assert bob.post("/v1/claims", {"task_message_id": task_id})[1]["acquired"] is True

    assert bob.post(f"/v1/tasks/{task_id}/complete")[1]["result"]["status"] == "done"


# ── Revocation ────────────────────────────────────────────────────────────


def test_a_revoked_key_gets_401_on_its_very_next_request(alice):
    assert alice.get("/v1/bootstrap")[0] == 200

    call_command("revoke", alice.key.prefix, stdout=StringIO())

    assert alice.get("/v1/bootstrap") == (401, {"ok": False, "error": "this agent key was revoked"})
    assert alice.post("/v1/messages", {"body": "still me?"})[0] == 401
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/v1/hub-info", None),
        ("get", "/v1/events", None),
        ("get", "/v1/stream", None),
        ("post", "/v1/messages", {"body": "hi"}),
        ("post", "/v1/sessions", {}),
        ("post", "/v1/claims", {"claim_key": "k"}),
        ("post", "/v1/network", {"allow_remote": True}),
    ],
)
def test_a_revoked_key_may_do_nothing(rex, method, path, body):
    status, env = status_of(rex, path) if method == "get" else rex.post(path, body)

    assert (status, env) == (401, {"ok": False, "error": "this agent key was revoked"})
    assert not Message.objects.exists()
    assert not Session.objects.exists()
    assert not Claim.objects.exists()


def test_revoking_one_key_leaves_the_agents_other_keys_working(alice):
    laptop = Persona("alice", label="second key")

    services.key_revoke(key_id=alice.key.prefix)

    assert alice.get("/v1/bootstrap")[0] == 401
    assert laptop.get("/v1/bootstrap")[0] == 200


def test_revoking_an_unknown_key_is_an_error(anyone):
    with pytest.raises(CommandError, match="no key nope"):
        call_command("revoke", "nope", stdout=StringIO())


# ── Rate limit ────────────────────────────────────────────────────────────


def test_it_limits_a_keyed_agents_posts_with_429_and_retry_after(alice, bob, settings):
    settings.ARC_RATE_LIMIT = (5, 60.0, 2)  # 5 a minute, bursts of 2

    responses = [
        alice.client.post("/v1/messages", {"body": f"m{i}"}, content_type="application/json") for i in range(3)
    ]

    assert [r.status_code for r in responses] == [201, 201, 429]
    refused = responses[-1]
    assert refused.json()["ok"] is False
    assert "alice is posting too fast" in refused.json()["error"]
    assert 1 <= int(refused["Retry-After"]) <= 12  # one token back at 5/60 per second
    assert Message.objects.count() == 2
    assert post(bob, body="bob has his own budget")["from_agent"] == "bob"


def test_a_second_key_does_not_double_an_agents_rate_limit(alice, settings):
    settings.ARC_RATE_LIMIT = (5, 60.0, 2)
    spare = Persona("alice", label="spare")

    statuses = [who.post("/v1/messages", {"body": "x"})[0] for who in (alice, spare, spare, alice)]

    assert statuses == [201, 201, 429, 429]


def test_anonymous_loopback_posts_are_not_rate_limited(anyone, settings):
    # Arc's clients name any agent, so a per-agent limit would not bind them (documented choice).
    settings.ARC_RATE_LIMIT = (5, 60.0, 2)

    assert [anyone.post("/v1/messages", {"from_agent": "alice", "body": "x"})[0] for _ in range(4)] == [201] * 4


# ── Size limit ────────────────────────────────────────────────────────────


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_oversize_body_gets_413_even_with_a_valid_key(alice, declared):
    limit = settings.ARC_MAX_REQUEST_BYTES
    body = b'{"body": "' + b"x" * limit + b'"}'
    headers = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {alice.secret}".encode())]
    if declared:
        headers.append((b"content-length", str(len(body)).encode()))

    response = async_to_sync(
        HttpCommunicator(application, "POST", "/v1/messages", body=body, headers=headers).get_response
    )()

    assert response["status"] == 413
    assert json.loads(response["body"]) == {"ok": False, "error": f"request body exceeds max size ({limit} bytes)"}
    assert not Message.objects.exists()


# ── Secrets and deployment checks ─────────────────────────────────────────


def test_the_secret_key_is_generated_once_into_arc_home_with_mode_0600(tmp_path, monkeypatch):
    monkeypatch.delenv("DJANGO_SECRET_KEY", raising=False)
    home = tmp_path / "fresh-home"

    first = _secret_key(home)

    path = home / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == first
    assert len(first) >= 50
    assert _secret_key(home) == first  # kept, not regenerated
    assert _secret_key(tmp_path / "another-home") != first


def _check_deploy(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = hub_env(home, **env)
    environment.pop("DJANGO_SECRET_KEY", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check", "--deploy", "--fail-level", "WARNING"],
        env=environment,
        cwd=str(home.parent),
        capture_output=True,
        text=True,
        timeout=120,
    )


PRODUCTION = {
    "ARC_PRODUCTION": "1",
    "ARC_ALLOWED_HOSTS": "hub.example.com",
    "ARC_CSRF_TRUSTED_ORIGINS": "https://hub.example.com",
}


def test_check_deploy_passes_with_the_documented_production_settings(tmp_path):
    home = tmp_path / "home"

    result = _check_deploy(home, **PRODUCTION)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    assert stat.S_IMODE((home / "secret_key").stat().st_mode) == 0o600


def test_check_deploy_fails_without_the_production_settings(tmp_path):
    # The check above can fail: without ARC_PRODUCTION the hub is set up for loopback HTTP.
    result = _check_deploy(tmp_path / "home")

    assert result.returncode != 0
    assert "security.W" in result.stdout + result.stderr
