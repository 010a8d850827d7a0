"""Tasks: auto-registration from messages, ``GET /v1/tasks``, ``POST /v1/tasks/{id}/complete`` and rollup
(docs/protocol.md).

Personas: alice coordinates (posts tasks and requests); bob and carol are workers who
finish subtasks and answer requests.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

TASK_KEYS = {"task_id", "parent_task_id", "channel", "thread_id", "status", "created_at", "completed_at"}


def post(api, **fields):
    fields.setdefault("from_agent", "alice")
    status, env = api.post("/v1/messages", fields)
    assert status == 201, env
    return env["result"]


def tasks(api, **params):
    status, env = api.get("/v1/tasks", **params)
    assert status == 200, env
    return env["result"]


def task(api, task_id):
    return next(t for t in tasks(api) if t["task_id"] == task_id)


def test_a_task_message_registers_an_open_task(api):
    api.post("/v1/channels", {"name": "builds"})
    message = post(api, kind="task", body="fix auth", channel="builds", thread_id="t-auth")

    [registered] = tasks(api)

    assert set(registered) >= TASK_KEYS
    assert registered["task_id"] == message["id"]
    assert registered["parent_task_id"] is None
    assert registered["channel"] == "builds"
    assert registered["thread_id"] == "t-auth"
    assert registered["status"] == "open"
    assert registered["completed_at"] is None
    assert registered["created_at"] == message["ts"]


def test_a_task_request_registers_a_task_too(api):
    message = post(api, kind="task_request", body="what is 6*7?", to_agent="bob")

    assert [t["task_id"] for t in tasks(api)] == [message["id"]]
    assert task(api, message["id"])["channel"] == "direct"


@pytest.mark.parametrize(
    "kind", ["chat", "notice", "claim", "release", "artifact", "task_result", "status_update", "code_review"]
)
def test_other_kinds_register_no_task(api, kind):
    post(api, kind=kind, body="not a task")

    assert tasks(api) == []


def test_a_subtask_links_to_its_parent(api):
    parent = post(api, kind="task", body="build the app")

    child = post(api, kind="task", body="build the frontend", parent_task_id=parent["id"])

    assert task(api, child["id"])["parent_task_id"] == parent["id"]
    assert task(api, parent["id"])["parent_task_id"] is None


def test_it_lists_tasks_with_filters(api):
    api.post("/v1/channels", {"name": "builds"})
    parent = post(api, kind="task", body="app", thread_id="t-app")
    front = post(api, kind="task", body="frontend", parent_task_id=parent["id"], thread_id="t-app")
    back = post(api, kind="task", body="backend", parent_task_id=parent["id"], channel="builds", thread_id="t-back")
    other = post(api, kind="task", body="unrelated", channel="builds")
    api.post(f"/v1/tasks/{front['id']}/complete")

    def ids(**params):
        return [t["task_id"] for t in tasks(api, **params)]

    assert ids() == [parent["id"], front["id"], back["id"], other["id"]]
    assert ids(parent_id=parent["id"]) == [front["id"], back["id"]]
    assert ids(status="done") == [front["id"]]
    assert ids(status="open") == [parent["id"], back["id"], other["id"]]
    assert ids(channel="builds") == [back["id"], other["id"]]
    assert ids(thread_id="t-app") == [parent["id"], front["id"]]
    assert ids(parent_id=parent["id"], status="open", channel="builds") == [back["id"]]


def test_an_unknown_status_filter_is_refused(api):
    status, env = api.get("/v1/tasks", status="finished")

    assert status == 400
    assert env["ok"] is False
    assert "status" in env["error"]


def test_a_non_numeric_parent_id_is_refused(api):
    assert api.get("/v1/tasks", parent_id="first") == (400, {"ok": False, "error": "parent_id must be an integer"})


# ── POST /v1/tasks/{id}/complete ────────────────────────────────────────────


def test_it_completes_a_task(api):
    message = post(api, kind="task", body="fix auth")

    status, env = api.post(f"/v1/tasks/{message['id']}/complete")

    assert status == 200
    assert set(env) == {"ok", "result"}  # no parent_completed key without a rollup
    assert env["ok"] is True
    assert env["result"]["task_id"] == message["id"]
    assert env["result"]["status"] == "done"
    assert env["result"]["completed_at"] is not None


def test_completing_a_done_task_again_changes_nothing(api):
    message = post(api, kind="task", body="fix auth")
    done = api.post(f"/v1/tasks/{message['id']}/complete")[1]

    assert api.post(f"/v1/tasks/{message['id']}/complete") == (200, done)


def test_completing_an_unknown_task_is_404(api):
    assert api.post("/v1/tasks/999/complete") == (404, {"ok": False, "error": "task not found"})


def test_the_last_subtask_completes_the_parent_and_posts_a_notice(api):
    api.post("/v1/channels", {"name": "builds"})
    parent = post(api, kind="task", body="build the app", channel="builds", thread_id="t-app")
    front = post(api, kind="task", body="frontend", parent_task_id=parent["id"], thread_id="t-app")
    back = post(api, kind="task", body="backend", parent_task_id=parent["id"], thread_id="t-app")

    first = api.post(f"/v1/tasks/{front['id']}/complete")
    assert first[0] == 200
    assert "parent_completed" not in first[1]
    assert task(api, parent["id"])["status"] == "open"

    status, env = api.post(f"/v1/tasks/{back['id']}/complete")

    assert status == 200
    assert env["parent_completed"] is True
    assert env["result"]["task_id"] == back["id"]
    assert env["result"]["status"] == "done"
    assert task(api, parent["id"])["status"] == "done"
    [notice] = [m for m in api.get("/v1/messages", channel="builds")[1]["result"] if m["kind"] == "notice"]
    assert notice["from_agent"] == "system"
    assert notice["thread_id"] == "t-app"
    assert notice["reply_to"] == parent["id"]
    assert notice["body"] == f"All 2 subtasks of task {parent['id']} are complete."
    assert notice["metadata"] == {"auto_rollup": True, "parent_task_id": parent["id"]}


def test_a_rollup_happens_once(api):
    parent = post(api, kind="task", body="app")
    child = post(api, kind="task", body="only part", parent_task_id=parent["id"])
    assert api.post(f"/v1/tasks/{child['id']}/complete")[1]["parent_completed"] is True

    again = api.post(f"/v1/tasks/{child['id']}/complete")[1]

    assert "parent_completed" not in again
    assert len([m for m in api.get("/v1/messages", channel="general")[1]["result"] if m["kind"] == "notice"]) == 1


# ── task_request / task_result (arc.py) ─────────────────────────────────────


def test_a_task_result_replying_to_a_task_request_completes_it(api):
    request = post(api, kind="task_request", body="what is 6*7?", to_agent="bob")

    result = post(api, from_agent="bob", kind="task_result", body="42", reply_to=request["id"])

    assert result["metadata"] == {"task_completed": request["id"]}
    done = task(api, request["id"])
    assert done["status"] == "done"
    assert done["completed_at"] is not None


def test_a_task_result_keeps_its_own_metadata(api):
    request = post(api, kind="task_request", body="lint", to_agent="bob")

    result = post(
        api, from_agent="bob", kind="task_result", body="clean", reply_to=request["id"], metadata={"warnings": 0}
    )

    assert result["metadata"] == {"warnings": 0, "task_completed": request["id"]}


def test_a_task_result_for_a_plain_task_does_not_complete_it(api):
    plain = post(api, kind="task", body="fix auth")

    result = post(api, from_agent="bob", kind="task_result", body="done", reply_to=plain["id"])

    assert result["metadata"] == {}
    assert task(api, plain["id"])["status"] == "open"


def test_a_second_task_result_does_not_complete_again(api):
    request = post(api, kind="task_request", body="6*7?", to_agent="bob")
    post(api, from_agent="bob", kind="task_result", body="42", reply_to=request["id"])

    late = post(api, from_agent="carol", kind="task_result", body="also 42", reply_to=request["id"])

    assert late["metadata"] == {}


def test_a_failed_task_result_fails_the_request(api):
    request = post(api, kind="task_request", body="deploy", to_agent="bob")

    result = post(
        api,
        from_agent="bob",
        kind="task_result",
        body="cannot reach prod",
        reply_to=request["id"],
        metadata={"success": False},
    )

    assert result["metadata"] == {"success": False, "task_failed": request["id"]}
    failed = task(api, request["id"])
    assert failed["status"] == "failed"
    assert failed["failure_reason"] == "cannot reach prod"
    assert [t["task_id"] for t in tasks(api, status="failed")] == [request["id"]]
