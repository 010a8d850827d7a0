"""Expiry is told to the holder (claims and locks), and delegation by capability over REST."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from coordination.core import services
from coordination.core.models import Claim, Lock, Message, Task
from coordination.process.sweeper import Sweeper
from tests.conftest import ApiClient


def lapse(model: type[Claim] | type[Lock], key: str) -> None:
    model.objects.filter(pk=key).update(expires_at=timezone.now() - timedelta(seconds=1))


def notices_to(agent: str) -> list[Message]:
    return list(Message.objects.filter(to_agent=agent, kind="notice", from_agent="system").order_by("id"))


@pytest.mark.django_db
class TestExpiryIsToldToTheHolder:
    def test_the_sweeper_tells_a_claim_holder_once(self) -> None:
        services.claim_acquire(owner_agent_id="bob", claim_key="build-7", thread_id="t-1")
        lapse(Claim, "build-7")

        Sweeper(interval_sec=1).sweep_once()
        Sweeper(interval_sec=1).sweep_once()

        [notice] = notices_to("bob")
        assert notice.metadata["claim_expired"] == "build-7"
        assert notice.thread_id == "t-1"
        assert "expired" in notice.body
        assert "build-7" in notice.body
        assert Claim.objects.get(pk="build-7").expiry_noticed_at is not None

    def test_the_sweeper_tells_a_lock_holder(self) -> None:
        services.lock_acquire(agent_id="carol", file_path="src/app.py")
        lapse(Lock, "src/app.py")

        assert services.leases_tell_expired() == 1

        [notice] = notices_to("carol")
        assert notice.metadata["lock_expired"] == "src/app.py"

    def test_a_taker_tells_the_holder_before_it_wins(self) -> None:
        services.claim_acquire(owner_agent_id="bob", claim_key="deploy")
        lapse(Claim, "deploy")

        claim, acquired = services.claim_acquire(owner_agent_id="carol", claim_key="deploy")

        assert acquired
        assert claim.owner_agent_id == "carol"
        [notice] = notices_to("bob")
        assert notice.metadata["claim_expired"] == "deploy"
        assert claim.expiry_noticed_at is None  # carol's lease is a new one
        assert services.leases_tell_expired() == 0  # and bob is not told twice

    def test_a_holder_taking_back_its_own_lapsed_claim_is_not_told(self) -> None:
        services.claim_acquire(owner_agent_id="bob", claim_key="mine")
        lapse(Claim, "mine")

        assert services.claim_acquire(owner_agent_id="bob", claim_key="mine")[1]
        assert notices_to("bob") == []

    def test_released_leases_are_not_announced_as_expired(self) -> None:
        services.lock_acquire(agent_id="bob", file_path="a.py")
        services.lock_release(agent_id="bob", file_path="a.py")
        lapse(Lock, "a.py")

        assert services.leases_tell_expired() == 0

    def test_a_reacquired_lease_can_be_told_again_when_it_lapses_again(self) -> None:
        services.claim_acquire(owner_agent_id="bob", claim_key="k")
        lapse(Claim, "k")
        services.leases_tell_expired()
        services.claim_acquire(owner_agent_id="carol", claim_key="k")
        lapse(Claim, "k")

        assert services.leases_tell_expired() == 1
        assert len(notices_to("carol")) == 1


def register(api: ApiClient, agent: str, *capabilities: str) -> None:
    status, env = api.post("/v1/sessions", {"agent_id": agent, "capabilities": list(capabilities)})
    assert status == 201, env


def test_a_task_request_to_a_capability_goes_to_the_least_loaded_live_agent(api: ApiClient) -> None:
    register(api, "alice")
    register(api, "rev-1", "review")
    register(api, "rev-2", "review")
    register(api, "builder", "build")

    assignees = []
    for n in range(4):
        status, env = api.post(
            "/v1/messages",
            {"from_agent": "alice", "kind": "task_request", "to_capability": "review", "body": f"review PR {n}"},
        )
        assert status == 201, env
        assignees.append(env["result"]["to_agent"])
        assert env["result"]["metadata"]["to_capability"] == "review"
        assert env["result"]["channel"] == "direct"

    assert sorted(assignees) == ["rev-1", "rev-1", "rev-2", "rev-2"]  # fair: two each
    assert assignees[0] != assignees[1]
    task = Task.objects.get(pk=env["result"]["id"])
    assert (task.assignee, task.requester, task.status) == (assignees[-1], "alice", "open")


def test_delegating_to_a_capability_nobody_live_has_is_409(api: ApiClient) -> None:
    register(api, "alice", "review")  # the requester itself is never picked
    status, env = api.post(
        "/v1/messages", {"from_agent": "alice", "kind": "task_request", "to_capability": "review", "body": "x"}
    )
    assert status == 409
    assert "review" in env["error"]
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"kind": "chat", "to_capability": "review"}, "task_request"),
        ({"kind": "task_request", "to_capability": "review", "to_agent": "bob"}, "not both"),
        ({"kind": "task_request", "to_capability": "  "}, "to_capability"),
    ],
)
def test_bad_delegation_input_is_400(api: ApiClient, payload: dict[str, str], fragment: str) -> None:
    status, env = api.post("/v1/messages", {"from_agent": "alice", "body": "x", **payload})
    assert status == 400, env
    assert fragment in env["error"]
