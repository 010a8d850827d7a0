"""The task lifecycle (docs/protocol.md): open → in_progress → done / failed / timeout, with 409 for the rest.

Personas: alice requests work; bob and carol are workers.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from coordination.core import services
from coordination.core.models import Task


def task(api, **extra):
    status, env = api.post("/v1/messages", {"from_agent": "alice", "kind": "task", "body": "build it", **extra})
    assert status == 201
    return env["result"]["id"]


def test_a_claim_on_a_task_starts_it_and_makes_the_claimant_its_assignee(api):
    task_id = task(api)
    api.post("/v1/claims", {"owner_agent_id": "bob", "task_message_id": task_id})

    [listed] = api.get("/v1/tasks", status="in_progress")[1]["result"]

    assert listed["task_id"] == task_id
    assert listed["assignee"] == "bob"
    assert listed["started_at"] is not None


def test_start_moves_an_open_task_to_in_progress(api):
    task_id = task(api)

    status, env = api.post(f"/v1/tasks/{task_id}/start")

    assert status == 200
    assert env["result"]["status"] == "in_progress"
    assert api.post(f"/v1/tasks/{task_id}/start")[0] == 200  # again: nothing changes
    assert api.post(f"/v1/tasks/{task_id}/complete")[1]["result"]["status"] == "done"


def test_invalid_transitions_are_conflicts(api):
    done, failed = task(api), task(api)
    api.post(f"/v1/tasks/{done}/complete")
    api.post(f"/v1/tasks/{failed}/fail", {"reason": "no disk"})

    for task_id, verb in ((done, "start"), (done, "fail"), (failed, "start"), (failed, "complete"), (failed, "fail")):
        status, env = api.post(f"/v1/tasks/{task_id}/{verb}", {"reason": "x"} if verb == "fail" else {})
        assert status == 409, (task_id, verb)
        assert "only" in env["error"]


def test_fail_records_the_reason(api):
    task_id = task(api)

    status, env = api.post(f"/v1/tasks/{task_id}/fail", {"reason": "tests are red"})

    assert status == 200
    assert env["result"]["status"] == "failed"
    assert env["result"]["failure_reason"] == "tests are red"
    assert api.post("/v1/tasks/999999/fail", {"reason": "x"})[0] == 404


def test_an_overdue_task_times_out_and_its_requester_is_told(api):
    task_id = task(api, ttl_sec=60)
    api.post("/v1/claims", {"owner_agent_id": "bob", "task_message_id": task_id})
    Task.objects.filter(pk=task_id).update(deadline=timezone.now() - timedelta(seconds=1))

    timed_out = services.tasks_time_out()

    assert [t.task_id for t in timed_out] == [task_id]
    assert Task.objects.get(pk=task_id).status == "timeout"
    [notice] = api.get("/v1/inbox/alice")[1]["result"]
    assert notice["kind"] == "notice"
    assert notice["from_agent"] == "system"
    assert notice["reply_to"] == task_id
    assert notice["metadata"] == {"task_timeout": task_id, "assignee": "bob"}
    assert services.tasks_time_out() == []  # announced once
    assert api.post(f"/v1/tasks/{task_id}/complete")[0] == 409


def test_a_task_without_a_deadline_never_times_out(api):
    task_id = task(api)
    services.tasks_time_out()
    assert Task.objects.get(pk=task_id).status == "open"


def test_a_keyed_worker_cannot_start_a_task_assigned_to_someone_else(api):
    from tests.conftest import ApiClient

    status, env = api.post(
        "/v1/messages", {"from_agent": "alice", "to_agent": "carol", "kind": "task_request", "body": "x"}
    )
    _, bob_key = services.key_mint(agent_id="bob")

    status, env = ApiClient(key=bob_key).post(f"/v1/tasks/{env['result']['id']}/start")

    assert status == 403


def test_a_canceled_task_fails_as_canceled_and_only_its_assignee_hears_of_it(api):
    from coordination.core.errors import Forbidden

    status, env = api.post(
        "/v1/messages", {"from_agent": "alice", "to_agent": "bob", "kind": "task_request", "body": "port it"}
    )
    assert status == 201
    task_id = env["result"]["id"]

    with pytest.raises(Forbidden):  # not a party to the task
        services.task_cancel(task_id=task_id, reason="mine now", actor="mallory")
    canceled = services.task_cancel(task_id=task_id, reason="plans changed", actor="alice")

    assert (canceled.status, canceled.failure_reason) == ("failed", "canceled: plans changed")
    notices = [m for m in api.get("/v1/inbox/bob")[1]["result"] if m["kind"] == "notice"]
    assert [(n["reply_to"], n["metadata"]["task_canceled"]) for n in notices] == [(task_id, task_id)]
    assert not [m for m in api.get("/v1/inbox/alice")[1]["result"] if m["kind"] == "notice"]
