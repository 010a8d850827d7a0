"""Sessions, presence and bootstrap: ``/v1/sessions``, ``/v1/agents``, ``/v1/bootstrap`` (docs/protocol.md).

Personas: alice coordinates (posts tasks, reads the roster); bob and carol are workers
that register with capabilities, claim work and sometimes go silent.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from coordination.core import services
from coordination.core.models import Session

pytestmark = pytest.mark.django_db

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
SESSION_KEYS = {
    "session_id",
    "agent_id",
    "display_name",
    "capabilities",
    "metadata",
    "created_at",
    "last_seen",
    "active",
}


def register(api, agent_id, **fields):
    status, env = api.post("/v1/sessions", {"agent_id": agent_id, **fields})
    assert status == 201, env
    return env["result"]


def go_silent(agent_id, seconds_past_ttl=5):
    """Make the agent's session look as if it was last seen beyond the presence TTL."""
    past = timezone.now() - timedelta(seconds=settings.ARC_PRESENCE_TTL_SEC + seconds_past_ttl)
    Session.objects.filter(agent_id=agent_id, active=True).update(last_seen=past)


# ── POST /v1/sessions ───────────────────────────────────────────────────────


def test_it_creates_a_session_with_arc_defaults(api):
    status, env = api.post("/v1/sessions", {"agent_id": "bob"})

    assert status == 201
    assert env["ok"] is True
    session = env["result"]
    assert set(session) == SESSION_KEYS
    assert str(uuid.UUID(session["session_id"], version=4)) == session["session_id"]
    assert session["agent_id"] == "bob"
    assert session["display_name"] == "bob"
    assert session["capabilities"] == []
    assert session["metadata"] == {}
    assert session["active"] is True
    assert ISO_Z.match(session["created_at"])
    assert session["last_seen"] == session["created_at"]


def test_it_stores_display_name_capabilities_and_metadata(api):
    session = register(
        api, "bob", display_name="Bob the Builder", capabilities=["code", "review"], metadata={"model": "x"}
    )

    assert session["display_name"] == "Bob the Builder"
    assert session["capabilities"] == ["code", "review"]
    assert session["metadata"] == {"model": "x"}


def test_it_refuses_a_second_live_session_without_replace(api):
    first = register(api, "bob")

    status, env = api.post("/v1/sessions", {"agent_id": "bob"})

    assert status == 409
    assert env == {"ok": False, "error": "agent_id already has an active session"}
    assert Session.objects.get(pk=first["session_id"]).active is True


def test_it_replaces_a_live_session_when_asked(api):
    first = register(api, "bob")

    second = register(api, "bob", replace=True)

    assert second["session_id"] != first["session_id"]
    assert Session.objects.get(pk=first["session_id"]).active is False
    assert Session.objects.filter(agent_id="bob", active=True).count() == 1


def test_it_replaces_a_stale_session_even_without_replace(api):
    first = register(api, "bob")
    go_silent("bob")

    second = register(api, "bob")

    assert second["session_id"] != first["session_id"]
    assert Session.objects.get(pk=first["session_id"]).active is False


def test_it_validates_agent_id(api):
    for payload in ({}, {"agent_id": ""}, {"agent_id": "   "}, {"agent_id": None}):
        status, env = api.post("/v1/sessions", payload)
        assert status == 400, payload
        assert env["ok"] is False
        assert "agent_id" in env["error"]


# ── DELETE /v1/sessions/{id} ────────────────────────────────────────────────


def test_it_closes_a_session(api):
    session = register(api, "bob")

    status, env = api.delete(f"/v1/sessions/{session['session_id']}")

    assert status == 200
    assert env == {"ok": True, "result": {"session_id": session["session_id"], "deleted": True}}
    assert Session.objects.get(pk=session["session_id"]).active is False
    assert api.get("/v1/agents")[1]["result"] == []


def test_it_answers_404_for_an_unknown_or_closed_session(api):
    session = register(api, "bob")
    api.delete(f"/v1/sessions/{session['session_id']}")

    assert api.delete(f"/v1/sessions/{session['session_id']}") == (404, {"ok": False, "error": "session not found"})
    assert api.delete("/v1/sessions/no-such-session") == (404, {"ok": False, "error": "session not found"})


def test_a_closed_agent_can_register_again_without_replace(api):
    session = register(api, "bob")
    api.delete(f"/v1/sessions/{session['session_id']}")

    assert register(api, "bob")["session_id"] != session["session_id"]


# ── GET /v1/agents ──────────────────────────────────────────────────────────


def test_it_lists_live_agents_sorted_by_agent_id(api):
    register(api, "carol")
    register(api, "alice")
    register(api, "bob")

    status, env = api.get("/v1/agents")

    assert status == 200
    assert [a["agent_id"] for a in env["result"]] == ["alice", "bob", "carol"]
    assert all(set(a) == SESSION_KEYS and a["active"] is True for a in env["result"])


def test_it_filters_agents_by_capability(api):
    register(api, "alice", capabilities=["plan"])
    register(api, "bob", capabilities=["code", "review"])
    register(api, "carol", capabilities=["code"])

    assert [a["agent_id"] for a in api.get("/v1/agents", capability="code")[1]["result"]] == ["bob", "carol"]
    assert [a["agent_id"] for a in api.get("/v1/agents", capability="review")[1]["result"]] == ["bob"]
    assert api.get("/v1/agents", capability="deploy")[1]["result"] == []


def test_it_leaves_stale_agents_out_of_the_roster(api):
    register(api, "alice")
    register(api, "bob")
    go_silent("bob")

    assert [a["agent_id"] for a in api.get("/v1/agents")[1]["result"]] == ["alice"]
    assert Session.objects.get(agent_id="bob").active is False  # the listing pruned it


def test_posting_refreshes_the_senders_presence(api):
    register(api, "bob")
    go_silent("bob", seconds_past_ttl=-60)  # seen a while ago, still live
    before = Session.objects.get(agent_id="bob").last_seen

    api.post("/v1/messages", {"from_agent": "bob", "body": "still here"})

    assert Session.objects.get(agent_id="bob").last_seen > before


# ── GET /v1/bootstrap ───────────────────────────────────────────────────────


def test_bootstrap_requires_agent_id(api):
    assert api.get("/v1/bootstrap") == (400, {"ok": False, "error": "agent_id query parameter is required"})


def test_bootstrap_returns_session_latest_visible_id_and_roster(api):
    bob = register(api, "bob")
    register(api, "alice")
    first = api.post("/v1/messages", {"from_agent": "alice", "body": "hello all"})[1]["result"]
    to_bob = api.post("/v1/messages", {"from_agent": "alice", "to_agent": "bob", "body": "psst bob"})[1]["result"]
    api.post("/v1/messages", {"from_agent": "alice", "to_agent": "carol", "body": "psst carol"})

    status, env = api.get("/v1/bootstrap", agent_id="bob")

    assert status == 200
    result = env["result"]
    assert set(result) == {"agent_id", "session", "latest_visible_id", "live_agents", "default_channel"}
    assert result["agent_id"] == "bob"
    assert result["session"]["session_id"] == bob["session_id"]
    assert result["session"]["active"] is True
    # carol's direct message is newer but invisible to bob.
    assert result["latest_visible_id"] == to_bob["id"] > first["id"]
    assert [a["agent_id"] for a in result["live_agents"]] == ["alice", "bob"]
    assert result["default_channel"] == "general"


def test_bootstrap_for_an_unknown_agent_has_no_session(api):
    register(api, "alice")

    result = api.get("/v1/bootstrap", agent_id="carol")[1]["result"]

    assert result["session"] is None
    assert result["latest_visible_id"] == 0
    assert [a["agent_id"] for a in result["live_agents"]] == ["alice"]


# ── Presence expiry and recovery (docs/protocol.md) ───────────────────────────────────────


def test_expiry_releases_claims_and_locks_and_posts_recovery_notices(api):
    register(api, "alice")
    register(api, "bob")
    api.post("/v1/channels", {"name": "builds"})
    task = api.post(
        "/v1/messages",
        {"from_agent": "alice", "channel": "builds", "kind": "task", "body": "fix auth", "thread_id": "t-auth"},
    )[1]["result"]
    api.post("/v1/claims", {"owner_agent_id": "bob", "task_message_id": task["id"], "thread_id": "t-auth"})
    api.post("/v1/locks", {"agent_id": "bob", "file_path": "src/auth.py", "metadata": {"thread_id": "t-auth"}})
    api.post("/v1/locks", {"agent_id": "bob", "file_path": "README.md"})
    go_silent("bob")

    expired = services.sessions_prune_expired()

    assert [s.agent_id for s in expired] == ["bob"]
    claims = api.get("/v1/claims")[1]["result"]
    assert [(c["claim_key"], c["released_at"] is not None) for c in claims] == [(f"task-{task['id']}", True)]
    locks = api.get("/v1/locks")[1]["result"]
    assert len(locks) == 2
    assert all(lk["released_at"] is not None for lk in locks)

    in_builds = api.get("/v1/messages", channel="builds")[1]["result"]
    claim_notice, lock_notice = in_builds[1:]
    assert claim_notice["from_agent"] == "system"
    assert claim_notice["kind"] == "notice"
    assert claim_notice["thread_id"] == "t-auth"
    assert claim_notice["reply_to"] == task["id"]
    assert claim_notice["body"] == f"Recovered stale claim task-{task['id']} from bob. Work is available for pickup."
    assert claim_notice["metadata"] == {
        "recovery": True,
        "stale_agent_id": "bob",
        "claim_key": f"task-{task['id']}",
        "task_message_id": task["id"],
    }
    assert lock_notice["thread_id"] == "t-auth"
    assert lock_notice["reply_to"] is None
    assert lock_notice["body"] == "Recovered stale lock on src/auth.py from bob. The file is available for pickup."
    assert lock_notice["metadata"] == {"recovery": True, "stale_agent_id": "bob", "file_path": "src/auth.py"}
    # A lock outside any thread is announced in general.
    in_general = api.get("/v1/messages", channel="general")[1]["result"]
    assert [m["metadata"].get("file_path") for m in in_general] == ["README.md"]


def test_expiry_leaves_other_agents_work_alone(api):
    register(api, "bob")
    register(api, "carol")
    api.post("/v1/claims", {"owner_agent_id": "carol", "claim_key": "deploy"})
    go_silent("bob")

    services.sessions_prune_expired()

    assert api.get("/v1/claims", active_only="1")[1]["result"][0]["owner_agent_id"] == "carol"
    assert api.get("/v1/messages", channel="general")[1]["result"] == []


def test_listing_agents_runs_the_same_recovery(api):
    register(api, "bob")
    api.post("/v1/claims", {"owner_agent_id": "bob", "claim_key": "deploy"})
    go_silent("bob")

    assert api.get("/v1/agents")[1]["result"] == []

    assert api.get("/v1/claims", active_only="true")[1]["result"] == []
    notices = api.get("/v1/messages", channel="general")[1]["result"]
    assert [n["metadata"]["claim_key"] for n in notices] == ["deploy"]


def test_a_pruned_session_is_recovered_only_once(api):
    register(api, "bob")
    api.post("/v1/claims", {"owner_agent_id": "bob", "claim_key": "deploy"})
    go_silent("bob")

    services.sessions_prune_expired()
    assert services.sessions_prune_expired() == []

    assert len(api.get("/v1/messages", channel="general")[1]["result"]) == 1
