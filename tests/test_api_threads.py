"""Thread summaries and detail: ``GET /v1/threads``, ``GET /v1/threads/{thread_id}`` (docs/protocol.md).

Personas: alice coordinates and posts the tasks; bob works on them (claims, locks,
artifacts); carol reviews.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from coordination.core.models import Lock

pytestmark = pytest.mark.django_db

SUMMARY_KEYS = {
    "thread_id",
    "channel",
    "root_task_id",
    "latest_message_id",
    "latest_message_ts",
    "latest_artifact_id",
    "message_count",
    "total_task_count",
    "open_task_count",
    "active_claim_count",
    "active_lock_count",
    "status",
}


def post(api, **fields):
    fields.setdefault("from_agent", "alice")
    status, env = api.post("/v1/messages", fields)
    assert status == 201, env
    return env["result"]


def summaries(api):
    status, env = api.get("/v1/threads")
    assert status == 200
    return {s["thread_id"]: s for s in env["result"]}


def test_there_are_no_threads_at_first(api):
    assert api.get("/v1/threads") == (200, {"ok": True, "result": []})


def test_it_summarises_a_thread_being_worked_on(api):
    api.post("/v1/channels", {"name": "builds"})
    root = post(api, kind="task", body="fix auth", channel="builds", thread_id="t-auth")
    post(api, kind="task", body="write tests", channel="builds", thread_id="t-auth", parent_task_id=root["id"])
    api.post("/v1/claims", {"owner_agent_id": "bob", "task_message_id": root["id"], "thread_id": "t-auth"})
    api.post("/v1/locks", {"agent_id": "bob", "file_path": "src/auth.py", "metadata": {"thread_id": "t-auth"}})
    api.post("/v1/locks", {"agent_id": "bob", "file_path": "src/other.py"})  # not scoped to the thread
    post(api, from_agent="bob", kind="artifact", body="patch v1", channel="builds", thread_id="t-auth")
    artifact = post(api, from_agent="bob", kind="artifact", body="patch v2", channel="builds", thread_id="t-auth")
    latest = post(api, from_agent="carol", body="looks good", to_agent="bob", thread_id="t-auth")

    summary = summaries(api)["t-auth"]

    assert set(summary) == SUMMARY_KEYS
    assert summary == {
        "thread_id": "t-auth",
        "channel": "builds",
        "root_task_id": root["id"],
        "latest_message_id": latest["id"],
        "latest_message_ts": latest["ts"],
        "latest_artifact_id": artifact["id"],
        # Direct messages in the thread count too, as in Arc.
        "message_count": 5,
        "total_task_count": 2,
        "open_task_count": 2,
        "active_claim_count": 1,
        "active_lock_count": 1,
        "status": "open",
    }


def test_a_thread_whose_tasks_are_all_done_is_completed(api):
    task = post(api, kind="task", body="ship it", thread_id="t-ship")
    api.post("/v1/claims", {"owner_agent_id": "bob", "task_message_id": task["id"], "thread_id": "t-ship"})
    api.post(f"/v1/tasks/{task['id']}/complete")

    summary = summaries(api)["t-ship"]

    # "completed" wins over an active claim.
    assert summary["status"] == "completed"
    assert summary["open_task_count"] == 0
    assert summary["total_task_count"] == 1
    assert summary["active_claim_count"] == 1


def test_a_thread_with_an_open_task_and_no_active_work_is_waiting(api):
    task = post(api, kind="task", body="someone pick this up", thread_id="t-wait")
    api.post("/v1/claims", {"owner_agent_id": "bob", "task_message_id": task["id"], "thread_id": "t-wait"})
    api.post("/v1/claims/release", {"claim_key": f"task-{task['id']}", "agent_id": "bob"})

    summary = summaries(api)["t-wait"]

    assert summary["status"] == "waiting"
    assert summary["active_claim_count"] == 0


def test_a_thread_without_tasks_is_waiting_until_someone_locks_a_file_in_it(api):
    post(api, body="just talking", thread_id="t-chat")
    assert summaries(api)["t-chat"]["status"] == "waiting"
    assert summaries(api)["t-chat"]["root_task_id"] is None
    assert summaries(api)["t-chat"]["latest_artifact_id"] is None

    api.post("/v1/locks", {"agent_id": "bob", "file_path": "notes.md", "metadata": {"thread_id": "t-chat"}})

    assert summaries(api)["t-chat"]["status"] == "open"
    assert summaries(api)["t-chat"]["active_lock_count"] == 1


def test_expired_locks_do_not_count(api):
    post(api, body="talking", thread_id="t-chat")
    api.post("/v1/locks", {"agent_id": "bob", "file_path": "notes.md", "metadata": {"thread_id": "t-chat"}})
    Lock.objects.filter(pk="notes.md").update(expires_at=timezone.now() - timedelta(seconds=1))

    summary = summaries(api)["t-chat"]

    assert summary["active_lock_count"] == 0
    assert summary["status"] == "waiting"


def test_threads_are_listed_newest_activity_first(api):
    post(api, body="a1", thread_id="t-a")
    post(api, body="b1", thread_id="t-b")
    post(api, body="a2", thread_id="t-a")
    post(api, body="c1", thread_id="t-c")
    api.post("/v1/claims", {"owner_agent_id": "bob", "claim_key": "k1", "thread_id": "t-claim-only"})

    threads = api.get("/v1/threads")[1]["result"]

    # A thread known only from a claim has no latest message and sorts last.
    assert [t["thread_id"] for t in threads] == ["t-c", "t-a", "t-b", "t-claim-only"]
    claim_only = threads[-1]
    assert claim_only["latest_message_id"] is None
    assert claim_only["latest_message_ts"] is None
    assert claim_only["channel"] is None
    assert claim_only["message_count"] == 0
    assert claim_only["status"] == "open"


def test_root_task_id_is_the_smallest_parentless_task(api):
    outside = post(api, kind="task", body="elsewhere")
    first = post(api, kind="task", body="root one", thread_id="t-tree")
    post(api, kind="task", body="child of outside", thread_id="t-tree", parent_task_id=outside["id"])
    post(api, kind="task", body="root two", thread_id="t-tree")

    assert summaries(api)["t-tree"]["root_task_id"] == first["id"]


# ── GET /v1/threads/{thread_id} ─────────────────────────────────────────────


def test_thread_detail_has_the_summary_and_every_related_record(api):
    task = post(api, kind="task", body="fix auth", thread_id="t-auth")
    claim = api.post("/v1/claims", {"owner_agent_id": "bob", "task_message_id": task["id"], "thread_id": "t-auth"})[1][
        "result"
    ]
    lock = api.post("/v1/locks", {"agent_id": "bob", "file_path": "src/auth.py", "metadata": {"thread_id": "t-auth"}})[
        1
    ]["result"]
    api.post("/v1/locks", {"agent_id": "bob", "file_path": "src/other.py"})
    api.post("/v1/claims", {"owner_agent_id": "bob", "claim_key": "unrelated", "thread_id": "t-other"})
    dm = post(api, from_agent="bob", to_agent="alice", body="question", thread_id="t-auth")
    post(api, body="not in the thread")

    status, env = api.get("/v1/threads/t-auth")

    assert status == 200
    detail = env["result"]
    assert set(detail) == {"thread", "messages", "tasks", "claims", "locks"}
    assert detail["thread"] == summaries(api)["t-auth"]
    assert [m["id"] for m in detail["messages"]] == [task["id"], dm["id"]]
    assert [t["task_id"] for t in detail["tasks"]] == [task["id"]]
    assert detail["tasks"][0]["status"] == "in_progress"  # claiming a task starts it (docs/protocol.md)
    assert detail["claims"] == [claim]
    assert detail["locks"] == [lock]


def test_a_thread_known_only_from_a_lock_has_detail_but_no_summary_entry(api):
    api.post("/v1/locks", {"agent_id": "bob", "file_path": "src/auth.py", "metadata": {"thread_id": "t-lock"}})

    assert "t-lock" not in summaries(api)  # Arc discovers threads from messages, tasks and claims only
    status, env = api.get("/v1/threads/t-lock")
    assert status == 200
    assert env["result"]["thread"]["active_lock_count"] == 1
    assert [lk["file_path"] for lk in env["result"]["locks"]] == ["src/auth.py"]


def test_thread_detail_answers_404_for_an_unknown_thread(api):
    post(api, body="elsewhere", thread_id="t-known")

    assert api.get("/v1/threads/t-unknown") == (404, {"ok": False, "error": "thread not found"})
