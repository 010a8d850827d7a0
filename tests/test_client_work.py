"""The client's work-coordination calls against a real hub process: lease/ack/nack,
delegate (by name and by capability, with and without waiting), ask/gather, wait_for.

Personas: ``alice`` coordinates; ``bob`` and ``carol`` are workers with the ``code`` capability.
"""

from __future__ import annotations

import threading
import time

import pytest

from coordination.client import ArcClient, ArcError
from tests.hubproc import Hub

pytestmark = pytest.mark.live


@pytest.fixture
def alice(live_hub: Hub) -> ArcClient:
    return ArcClient.quickstart("alice", live_hub.url, capabilities=["plan"])


@pytest.fixture
def bob(live_hub: Hub) -> ArcClient:
    return ArcClient.quickstart("bob", live_hub.url, capabilities=["code"])


def test_a_worker_leases_acks_and_nacks_its_inbox(alice: ArcClient, bob: ArcClient) -> None:
    chore = alice.dm("bob", "tidy the logs", priority="low")
    fire = alice.dm("bob", "prod is down", priority="critical", max_attempts=2)

    leased = bob.lease(5, lease_sec=30)

    assert [m["id"] for m in leased] == [fire["id"], chore["id"]]
    assert leased[0]["delivery"]["max_attempts"] == 2
    assert bob.ack(fire["id"]) == 1
    assert bob.nack(chore["id"], reason="later", delay_sec=0)["state"] == "queued"
    assert [m["id"] for m in bob.lease()] == [chore["id"]]
    assert {d["message_id"]: d["state"] for d in bob.deliveries()} == {fire["id"]: "acked", chore["id"]: "leased"}
    assert alice.message_status(fire["id"])["recipients"][0]["state"] == "acked"


def test_a_message_nacked_max_attempts_times_is_a_dead_letter(alice: ArcClient, bob: ArcClient) -> None:
    poison = alice.dm("bob", "{not json", max_attempts=2)
    for _ in range(2):
        [leased] = bob.lease(1)
        bob.nack(leased["id"], reason="cannot parse")

    assert bob.lease() == []
    [dead] = bob.deliveries(state="failed")
    assert (dead["message_id"], dead["attempts"], dead["last_error"]) == (poison["id"], 2, "cannot parse")


def test_delegate_by_capability_and_wait_for_the_result(live_hub: Hub, alice: ArcClient, bob: ArcClient) -> None:
    def work() -> None:
        [task] = bob.lease(1, lease_sec=30)
        assert task["kind"] == "task_request"
        assert task["metadata"]["payload"] == {"n": 21}
        bob.post("direct", "42", kind="task_result", to_agent="alice", reply_to=task["id"])
        bob.ack(task["id"])

    worker = threading.Timer(0.3, work)
    worker.start()
    result = alice.delegate("double it", to_capability="code", payload={"n": 21}, wait=20)
    worker.join()

    assert (result["kind"], result["body"], result["from_agent"]) == ("task_result", "42", "bob")
    _status, tasks = live_hub.call("GET", "/v1/tasks?assignee=bob&status=done")
    assert [t["task_id"] for t in tasks["result"]] == [result["reply_to"]]


def test_delegate_without_waiting_returns_the_request(alice: ArcClient, bob: ArcClient) -> None:
    request = alice.delegate("review PR 7", to_agent="bob", ttl_sec=600)
    assert (request["kind"], request["to_agent"]) == ("task_request", "bob")
    with pytest.raises(ArcError) as caught:
        alice.delegate("deploy", to_capability="deploy")
    assert caught.value.status == 409


def test_ask_gathers_replies_from_a_room(live_hub: Hub, alice: ArcClient, bob: ArcClient) -> None:
    carol = ArcClient.quickstart("carol", live_hub.url)

    def answer() -> None:
        for worker in (bob, carol):
            [question] = [m for m in worker.poll(timeout=10) if m["metadata"].get("ask")]
            worker.post("general", f"{worker.agent_id} can", reply_to=question["id"])

    threading.Thread(target=answer).start()
    started = time.monotonic()
    result = alice.ask("who can take the migration?", max_replies=2, timeout=20)

    assert result["complete"] is True
    assert sorted(r["body"] for r in result["replies"]) == ["bob can", "carol can"]
    assert time.monotonic() - started < 10
    gathered = alice.gather(result["question"]["id"], max_replies=2, timeout=1)
    assert sorted(r["body"] for r in gathered) == ["bob can", "carol can"]


def test_wait_for_returns_once_enough_agents_are_live(live_hub: Hub, alice: ArcClient) -> None:
    threading.Timer(0.3, lambda: ArcClient.quickstart("dave", live_hub.url, capabilities=["code"])).start()
    roster = alice.wait_for(1, capability="code", timeout=10)
    assert [a["agent_id"] for a in roster] == ["dave"]
