"""Races are decided by the database: many real concurrent clients, exactly one winner.

Service-level tests run threads with their own database connections against the
test database (a file on SQLite, a real server on PostgreSQL). The HTTP test
runs two hub processes on one database and sends them concurrent requests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from coordination.core import services
from coordination.core.errors import Conflict
from coordination.core.models import Claim, Lock, Session, Task
from tests.hubproc import live_database, start_hub

CONTENDERS = 12


def _race(n: int, attempt: Callable[[int], Any]) -> list[Any]:
    """Run ``attempt(i)`` in ``n`` threads released at the same instant."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        try:
            barrier.wait(10)
            return attempt(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


@pytest.fixture
def rooms(transactional_db: None) -> None:
    services.rooms_ensure_defaults()


def test_it_gives_a_contested_claim_to_exactly_one_agent(rooms: None) -> None:
    results = _race(CONTENDERS, lambda i: services.claim_acquire(owner_agent_id=f"worker-{i}", claim_key="build-42")[1])
    assert results.count(True) == 1
    winner = Claim.objects.get(pk="build-42").owner_agent_id
    assert winner == f"worker-{results.index(True)}"


def test_it_gives_an_expired_claim_to_exactly_one_new_owner(rooms: None) -> None:
    services.claim_acquire(owner_agent_id="ghost", claim_key="stale", ttl_sec=5)
    Claim.objects.filter(pk="stale").update(expires_at=Claim.objects.get(pk="stale").claimed_at)
    results = _race(CONTENDERS, lambda i: services.claim_acquire(owner_agent_id=f"worker-{i}", claim_key="stale")[1])
    assert results.count(True) == 1
    assert Claim.objects.get(pk="stale").owner_agent_id == f"worker-{results.index(True)}"


def test_it_gives_a_contested_lock_to_exactly_one_agent(rooms: None) -> None:
    results = _race(CONTENDERS, lambda i: services.lock_acquire(agent_id=f"worker-{i}", file_path="src/main.py")[1])
    assert results.count(True) == 1
    assert Lock.objects.get(pk="src/main.py").agent_id == f"worker-{results.index(True)}"


def test_it_keeps_one_active_session_per_agent_under_concurrent_registration(rooms: None) -> None:
    def register(i: int) -> str:
        try:
            services.session_create(agent_id="alice", replace=False)
            return "created"
        except Conflict:
            return "conflict"

    results = _race(CONTENDERS, register)
    assert results.count("created") == 1
    assert Session.objects.filter(agent_id="alice", active=True).count() == 1


def test_concurrent_replacing_registrations_leave_one_active_session(rooms: None) -> None:
    _race(CONTENDERS, lambda i: services.session_create(agent_id="bob", replace=True))
    assert Session.objects.filter(agent_id="bob", active=True).count() == 1
    assert Session.objects.filter(agent_id="bob").count() == CONTENDERS


def test_siblings_finishing_together_roll_the_parent_up_once(rooms: None) -> None:
    parent = services.message_post(from_agent="alice", kind="task", body="parent")
    children = [
        services.message_post(from_agent="alice", kind="task", body=f"child {i}", parent_task_id=parent.id)
        for i in range(6)
    ]
    results = _race(len(children), lambda i: services.task_complete(task_id=children[i].id)[1])
    assert results.count(True) == 1
    assert Task.objects.get(pk=parent.id).status == "done"


@pytest.mark.live
def test_two_hub_processes_on_one_database_give_a_claim_to_exactly_one_client(tmp_path: Path) -> None:
    """Arc's shared-database mode: two `manage.py up` workers, 32 concurrent HTTP clients, one winner."""
    with live_database() as database_url:
        first = start_hub(tmp_path / "one", database_url=database_url)
        storage = first.home / "arc.sqlite3"
        second = start_hub(
            tmp_path / "two", database_url=database_url, extra_env={} if database_url else {"ARC_STORAGE": str(storage)}
        )
        try:
            info = [hub.call("GET", "/v1/hub-info")[1]["result"] for hub in (first, second)]
            assert info[0]["instance_id"] == info[1]["instance_id"]  # same hub identity, two processes
            hubs = (first, second)

            def contend(i: int) -> tuple[int, dict[str, Any]]:
                return hubs[i % 2].call(
                    "POST", "/v1/claims", {"owner_agent_id": f"agent-{i}", "claim_key": "deploy", "ttl_sec": 60}
                )

            barrier = threading.Barrier(32)

            def run(i: int) -> tuple[int, dict[str, Any]]:
                barrier.wait(10)
                return contend(i)

            with ThreadPoolExecutor(32) as pool:
                answers = list(pool.map(run, range(32)))
            winners = [body for status, body in answers if body["acquired"]]
            assert len(winners) == 1
            assert sorted(status for status, _ in answers) == [200] * 31 + [201]
            owner = winners[0]["result"]["owner_agent_id"]
            assert all(body["result"]["owner_agent_id"] == owner for _, body in answers)
        finally:
            second.stop()
            first.stop()
