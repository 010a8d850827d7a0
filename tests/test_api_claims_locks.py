"""Claims and file locks: the lease state machine of docs/protocol.md ("Claims and locks").

Personas: alice coordinates and posts tasks; bob and carol are workers who race for
the same claims and files (carol is the one who arrives second).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from coordination.core.models import Claim, Lock, Session

pytestmark = pytest.mark.django_db

CLAIM_KEYS = {
    "claim_key",
    "thread_id",
    "task_message_id",
    "owner_agent_id",
    "claimed_at",
    "expires_at",
    "released_at",
    "metadata",
}
LOCK_KEYS = {"file_path", "agent_id", "locked_at", "expires_at", "released_at", "metadata"}


def claim(api, owner, key="build-1", **fields):
    return api.post("/v1/claims", {"owner_agent_id": owner, "claim_key": key, **fields})


def lock(api, agent, path="src/auth.py", **fields):
    return api.post("/v1/locks", {"agent_id": agent, "file_path": path, **fields})


def later(seconds):
    return timezone.now() + timedelta(seconds=seconds)


def expire(model, key):
    """Time passes: the lease ran out a moment ago."""
    model.objects.filter(pk=key).update(expires_at=timezone.now() - timedelta(seconds=1))


def seconds_left(wire):
    expires = datetime.fromisoformat(wire["expires_at"])
    return (expires - timezone.now()).total_seconds()


# ── Claims: acquire ─────────────────────────────────────────────────────────


def test_it_acquires_a_free_claim(api):
    status, env = claim(api, "bob", thread_id="t-build", ttl_sec=60, metadata={"step": 1})

    assert status == 201
    assert env["ok"] is True
    assert env["acquired"] is True
    result = env["result"]
    assert set(result) == CLAIM_KEYS
    assert result["claim_key"] == "build-1"
    assert result["owner_agent_id"] == "bob"
    assert result["thread_id"] == "t-build"
    assert result["task_message_id"] is None
    assert result["released_at"] is None
    assert result["metadata"] == {"step": 1}
    assert 55 <= seconds_left(result) <= 61


def test_the_default_ttl_is_300_seconds(api):
    assert 295 <= seconds_left(claim(api, "bob")[1]["result"]) <= 301


def test_task_message_id_alone_derives_the_claim_key(api):
    task = api.post("/v1/messages", {"from_agent": "alice", "kind": "task", "body": "fix auth"})[1]["result"]

    status, env = api.post("/v1/claims", {"owner_agent_id": "bob", "task_message_id": task["id"]})

    assert status == 201
    assert env["result"]["claim_key"] == f"task-{task['id']}"
    assert env["result"]["task_message_id"] == task["id"]


def test_it_needs_a_claim_key_or_task_message_id(api):
    status, env = api.post("/v1/claims", {"owner_agent_id": "bob"})

    assert (status, env) == (400, {"ok": False, "error": "claim_key or task_message_id is required"})


def test_it_needs_an_owner(api):
    status, env = api.post("/v1/claims", {"claim_key": "build-1"})

    assert status == 400
    assert "owner_agent_id" in env["error"]


@pytest.mark.parametrize("ttl", [4, 0, -5])
def test_it_refuses_a_ttl_under_five_seconds(api, ttl):
    status, env = claim(api, "bob", ttl_sec=ttl)

    assert status == 400
    assert "ttl_sec" in env["error"]
    assert not Claim.objects.exists()


def test_same_owner_reacquiring_refreshes_the_lease(api):
    first = claim(api, "bob", thread_id="t-build", metadata={"step": 1}, ttl_sec=60)[1]["result"]
    Claim.objects.filter(pk="build-1").update(expires_at=later(10))

    status, env = claim(api, "bob", thread_id="t-other", metadata={"step": 2}, ttl_sec=600)

    assert status == 201
    assert env["acquired"] is True
    assert 595 <= seconds_left(env["result"]) <= 601
    # A refresh keeps the original claim: only the lease moves.
    assert env["result"]["claimed_at"] == first["claimed_at"]
    assert env["result"]["thread_id"] == "t-build"
    assert env["result"]["metadata"] == {"step": 1}


def test_it_denies_a_claim_held_by_another_agent(api):
    held = claim(api, "bob", ttl_sec=60)[1]["result"]

    status, env = claim(api, "carol", ttl_sec=600)

    assert status == 200
    assert env == {"ok": True, "acquired": False, "result": held}
    assert Claim.objects.get(pk="build-1").owner_agent_id == "bob"


def test_a_released_claim_can_be_taken_by_anyone(api):
    claim(api, "bob", thread_id="t-build", metadata={"by": "bob"})
    api.post("/v1/claims/release", {"claim_key": "build-1", "agent_id": "bob"})

    status, env = claim(api, "carol", thread_id="t-retry", metadata={"by": "carol"})

    assert status == 201
    assert env["acquired"] is True
    result = env["result"]
    assert result["owner_agent_id"] == "carol"
    assert result["released_at"] is None
    assert result["thread_id"] == "t-retry"
    assert result["metadata"] == {"by": "carol"}


def test_an_expired_claim_is_overwritten(api):
    claim(api, "bob", task_message_id=7)
    expire(Claim, "build-1")

    status, env = claim(api, "carol")

    assert status == 201
    assert env["acquired"] is True
    assert env["result"]["owner_agent_id"] == "carol"
    assert env["result"]["task_message_id"] is None
    assert seconds_left(env["result"]) > 290


def test_the_former_owner_can_retake_an_expired_claim(api):
    claim(api, "bob")
    expire(Claim, "build-1")

    status, env = claim(api, "bob")

    assert (status, env["acquired"]) == (201, True)
    assert seconds_left(env["result"]) > 290


def test_acquiring_touches_the_owners_session(api):
    api.post("/v1/sessions", {"agent_id": "bob"})
    Session.objects.filter(agent_id="bob").update(last_seen=timezone.now() - timedelta(seconds=60))

    claim(api, "bob")

    assert (timezone.now() - Session.objects.get(agent_id="bob").last_seen).total_seconds() < 5


# ── Claims: refresh ─────────────────────────────────────────────────────────


def test_the_owner_refreshes_a_claim(api):
    claim(api, "bob", ttl_sec=60)

    status, env = api.post("/v1/claims/refresh", {"claim_key": "build-1", "owner_agent_id": "bob", "ttl_sec": 900})

    assert status == 200
    assert env["ok"] is True
    assert env["acquired"] is True
    assert env["result"]["owner_agent_id"] == "bob"
    assert 895 <= seconds_left(env["result"]) <= 901


def test_refresh_defaults_to_300_seconds(api):
    claim(api, "bob", ttl_sec=60)

    env = api.post("/v1/claims/refresh", {"claim_key": "build-1", "owner_agent_id": "bob"})[1]

    assert 295 <= seconds_left(env["result"]) <= 301


def test_refresh_answers_404_for_another_owner_an_expired_a_released_or_a_missing_claim(api):
    not_found = (404, {"ok": False, "error": "claim not found or not owned by owner_agent_id"})
    claim(api, "bob", "held")
    claim(api, "bob", "gone-stale")
    expire(Claim, "gone-stale")
    claim(api, "bob", "let-go")
    api.post("/v1/claims/release", {"claim_key": "let-go", "agent_id": "bob"})

    assert api.post("/v1/claims/refresh", {"claim_key": "held", "owner_agent_id": "carol"}) == not_found
    assert api.post("/v1/claims/refresh", {"claim_key": "gone-stale", "owner_agent_id": "bob"}) == not_found
    assert api.post("/v1/claims/refresh", {"claim_key": "let-go", "owner_agent_id": "bob"}) == not_found
    assert api.post("/v1/claims/refresh", {"claim_key": "never", "owner_agent_id": "bob"}) == not_found


def test_refresh_refuses_a_ttl_under_five_seconds(api):
    claim(api, "bob")

    status, env = api.post("/v1/claims/refresh", {"claim_key": "build-1", "owner_agent_id": "bob", "ttl_sec": 4})

    assert status == 400
    assert "ttl_sec" in env["error"]


# ── Claims: release ─────────────────────────────────────────────────────────


def test_the_owner_releases_a_claim(api):
    claim(api, "bob")

    status, env = api.post("/v1/claims/release", {"claim_key": "build-1", "agent_id": "bob"})

    assert status == 200
    assert env["ok"] is True
    assert set(env["result"]) == CLAIM_KEYS
    assert env["result"]["released_at"] is not None
    assert api.get("/v1/claims", active_only="true")[1]["result"] == []


def test_it_refuses_a_release_by_another_agent(api):
    claim(api, "bob")

    status, env = api.post("/v1/claims/release", {"claim_key": "build-1", "agent_id": "carol"})

    assert (status, env) == (404, {"ok": False, "error": "claim not found or not owned by agent_id"})
    assert Claim.objects.get(pk="build-1").released_at is None


def test_releasing_a_missing_claim_is_404(api):
    status, env = api.post("/v1/claims/release", {"claim_key": "never", "agent_id": "bob"})

    assert (status, env) == (404, {"ok": False, "error": "claim not found or not owned by agent_id"})


def test_releasing_twice_returns_the_released_row(api):
    claim(api, "bob")
    first = api.post("/v1/claims/release", {"claim_key": "build-1", "agent_id": "bob"})[1]["result"]

    status, env = api.post("/v1/claims/release", {"claim_key": "build-1", "agent_id": "bob"})

    assert status == 200
    assert env == {"ok": True, "result": first}


def test_the_owner_can_release_an_expired_claim(api):
    claim(api, "bob")
    expire(Claim, "build-1")

    status, env = api.post("/v1/claims/release", {"claim_key": "build-1", "agent_id": "bob"})

    assert status == 200
    assert env["result"]["released_at"] is not None


# ── Claims: list ────────────────────────────────────────────────────────────


def test_it_lists_claims_with_thread_and_active_filters(api):
    claim(api, "bob", "a", thread_id="t-1")
    claim(api, "carol", "b", thread_id="t-1")
    claim(api, "bob", "c", thread_id="t-2")
    claim(api, "bob", "d")
    api.post("/v1/claims/release", {"claim_key": "b", "agent_id": "carol"})
    expire(Claim, "c")

    def keys(**params):
        status, env = api.get("/v1/claims", **params)
        assert status == 200
        return sorted(c["claim_key"] for c in env["result"])

    assert keys() == ["a", "b", "c", "d"]
    assert keys(thread_id="t-1") == ["a", "b"]
    assert keys(active_only="true") == ["a", "d"]
    assert keys(active_only="1", thread_id="t-1") == ["a"]
    assert keys(active_only="yes", thread_id="t-2") == []
    assert keys(active_only="false") == ["a", "b", "c", "d"]
    assert all(set(c) == CLAIM_KEYS for c in api.get("/v1/claims")[1]["result"])


# ── Locks ───────────────────────────────────────────────────────────────────


def test_it_acquires_a_free_lock(api):
    status, env = lock(api, "bob", ttl_sec=60, metadata={"thread_id": "t-auth"})

    assert status == 201
    assert env["ok"] is True
    assert env["acquired"] is True
    result = env["result"]
    assert set(result) == LOCK_KEYS
    assert result["file_path"] == "src/auth.py"
    assert result["agent_id"] == "bob"
    assert result["released_at"] is None
    assert result["metadata"] == {"thread_id": "t-auth"}
    assert 55 <= seconds_left(result) <= 61


def test_a_lock_needs_an_agent_and_a_file_path(api):
    for payload, field in (
        ({"file_path": "a.py"}, "agent_id"),
        ({"agent_id": "bob"}, "file_path"),
        ({"agent_id": "bob", "file_path": " "}, "file_path"),
    ):
        status, env = api.post("/v1/locks", payload)
        assert status == 400
        assert field in env["error"]


def test_it_refuses_a_lock_ttl_under_five_seconds(api):
    status, env = lock(api, "bob", ttl_sec=4)

    assert status == 400
    assert "ttl_sec" in env["error"]


def test_same_agent_relocking_refreshes_the_lease(api):
    first = lock(api, "bob", metadata={"thread_id": "t-auth"})[1]["result"]
    Lock.objects.filter(pk="src/auth.py").update(expires_at=later(10))

    status, env = lock(api, "bob", ttl_sec=600, metadata={"thread_id": "t-other"})

    assert (status, env["acquired"]) == (201, True)
    assert 595 <= seconds_left(env["result"]) <= 601
    assert env["result"]["locked_at"] == first["locked_at"]
    assert env["result"]["metadata"] == {"thread_id": "t-auth"}


def test_it_denies_a_lock_held_by_another_agent(api):
    held = lock(api, "bob")[1]["result"]

    status, env = lock(api, "carol")

    assert status == 200
    assert env == {"ok": True, "acquired": False, "result": held}


def test_released_and_expired_locks_are_overwritten(api):
    lock(api, "bob", "a.py")
    api.post("/v1/locks/release", {"agent_id": "bob", "file_path": "a.py"})
    lock(api, "bob", "b.py")
    expire(Lock, "b.py")

    for path in ("a.py", "b.py"):
        status, env = lock(api, "carol", path, metadata={"by": "carol"})
        assert (status, env["acquired"]) == (201, True)
        assert env["result"]["agent_id"] == "carol"
        assert env["result"]["released_at"] is None
        assert env["result"]["metadata"] == {"by": "carol"}


def test_the_holder_refreshes_a_lock(api):
    lock(api, "bob", ttl_sec=60)

    status, env = api.post("/v1/locks/refresh", {"agent_id": "bob", "file_path": "src/auth.py", "ttl_sec": 900})

    assert status == 200
    assert env["acquired"] is True
    assert 895 <= seconds_left(env["result"]) <= 901


def test_lock_refresh_answers_404_for_another_agent_an_expired_or_a_missing_lock(api):
    not_found = (404, {"ok": False, "error": "lock not found or not owned by agent_id"})
    lock(api, "bob", "held.py")
    lock(api, "bob", "stale.py")
    expire(Lock, "stale.py")

    assert api.post("/v1/locks/refresh", {"agent_id": "carol", "file_path": "held.py"}) == not_found
    assert api.post("/v1/locks/refresh", {"agent_id": "bob", "file_path": "stale.py"}) == not_found
    assert api.post("/v1/locks/refresh", {"agent_id": "bob", "file_path": "never.py"}) == not_found


def test_the_holder_releases_a_lock_and_only_the_holder(api):
    lock(api, "bob")

    assert api.post("/v1/locks/release", {"agent_id": "carol", "file_path": "src/auth.py"}) == (
        404,
        {"ok": False, "error": "lock not found or not owned by agent_id"},
    )
    status, env = api.post("/v1/locks/release", {"agent_id": "bob", "file_path": "src/auth.py"})
    assert status == 200
    assert env["result"]["released_at"] is not None
    assert api.post("/v1/locks/release", {"agent_id": "bob", "file_path": "src/auth.py"}) == (200, env)


def test_it_lists_locks_with_agent_and_active_filters(api):
    lock(api, "bob", "a.py")
    lock(api, "carol", "b.py")
    lock(api, "bob", "c.py")
    expire(Lock, "c.py")
    lock(api, "bob", "d.py")
    api.post("/v1/locks/release", {"agent_id": "bob", "file_path": "d.py"})

    def paths(**params):
        status, env = api.get("/v1/locks", **params)
        assert status == 200
        return sorted(lk["file_path"] for lk in env["result"])

    assert paths() == ["a.py", "b.py", "c.py", "d.py"]
    assert paths(agent_id="bob") == ["a.py", "c.py", "d.py"]
    assert paths(active_only="true") == ["a.py", "b.py"]
    assert paths(agent_id="bob", active_only="1") == ["a.py"]
    assert paths(agent_id="dave") == []
