"""Arc's own clients, unchanged, against a live hub: ``ArcClient`` and the ``smoke-agent`` roles."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from tests.arcref import arc, arc_py_path
from tests.hubproc import Hub

pytestmark = pytest.mark.live


def test_smoke_roles_run_unchanged_over_http(live_hub: Hub) -> None:
    """arc.py's smoke-a, smoke-b and smoke-c, each as its own `arc.py smoke-agent` process, all over HTTP."""
    script = str(arc_py_path())
    procs = {
        role: subprocess.Popen(
            [
                sys.executable,
                script,
                "smoke-agent",
                "--role",
                role,
                "--transport",
                "http",
                "--base-url",
                live_hub.url,
                "--timeout-sec",
                "30",
                "--poll-interval-sec",
                "0.1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for role in ("smoke-a", "smoke-b", "smoke-c")
    }
    outputs = {role: proc.communicate(timeout=60)[0] for role, proc in procs.items()}
    for role, proc in procs.items():
        assert proc.returncode == 0, f"{role} failed: {outputs[role]}"
    status, thread = live_hub.call("GET", "/v1/threads/smoke-relay-001")
    assert status == 200
    senders = {m["from_agent"] for m in thread["result"]["messages"]}
    assert {"smoke-a", "smoke-b", "smoke-c"} <= senders
    assert thread["result"]["claims"][0]["released_at"] is not None


def test_arc_client_conversation_and_rpc(live_hub: Hub) -> None:
    """Arc's ArcClient: register, post, poll with exclude_self, claims, locks, tasks and call() RPC."""
    ArcClient = arc().ArcClient
    alice = ArcClient.quickstart("alice", live_hub.url, capabilities=["plan"])
    bob = ArcClient.quickstart("bob", live_hub.url, capabilities=["code"])
    alice.bootstrap()
    bob.bootstrap()

    alice.post("general", "hello bob")
    seen = bob.poll(timeout=5)
    assert [m["body"] for m in seen] == ["hello bob"]
    assert alice.poll(timeout=0) == []  # exclude_self: alice does not see her own post

    claim = bob.claim("build-1", thread_id="t1", ttl_sec=60)
    assert claim["owner_agent_id"] == "bob"
    assert bob.refresh_claim("build-1", ttl_sec=120)["owner_agent_id"] == "bob"
    assert bob.release("build-1")["released_at"] is not None
    assert bob.lock("src/app.py")["agent_id"] == "bob"
    assert bob.unlock("src/app.py")["released_at"] is not None

    parent = alice.post("general", "build it", kind="task")
    child = alice.post("general", "part", kind="task", parent_task_id=parent["id"])
    assert bob.complete_task(child["id"])["status"] == "done"

    def serve() -> None:
        for _ in range(50):
            for msg in bob.poll(timeout=1):
                if msg["kind"] == "task_request":
                    bob.post(msg["channel"], "42", kind="task_result", reply_to=msg["id"], to_agent=None)
                    return

    worker = threading.Thread(target=serve)
    worker.start()
    # Arc's call() scans the channel for the result, so the worker answers on the channel.
    result = alice.call("bob", "what is 6*7?", channel="general", timeout=20, poll_interval=0.1)
    worker.join(10)
    assert result["body"] == "42"
    _, tasks = live_hub.call("GET", "/v1/tasks?status=done")
    assert result["reply_to"] in {t["task_id"] for t in tasks["result"]}
