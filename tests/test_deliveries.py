"""Reliable direct delivery (docs/protocol.md): a work queue per recipient.

State machine tests call the services directly; wire tests go through REST; the
race tests lease one inbox from many real concurrent clients (threads with their
own database connections, and HTTP clients against a live hub process) on SQLite
and, on the PostgreSQL run, on PostgreSQL.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from coordination.core import services
from coordination.core.errors import Conflict, Invalid, NotFound
from coordination.core.models import Delivery, Message
from tests.conftest import ApiClient, Persona
from tests.hubproc import Hub


def dm(to: str = "bob", body: str = "work", **extra: Any) -> Message:
    return services.message_post(from_agent="alice", to_agent=to, body=body, **extra)


def state_of(message: Message, agent: str = "bob") -> Delivery:
    return Delivery.objects.get(message=message, agent_id=agent)


def lapse_leases(agent: str = "bob") -> None:
    """Move every live lease of ``agent`` into the past, as if ``lease_sec`` had gone by."""
    Delivery.objects.filter(agent_id=agent, state="leased").update(leased_until=timezone.now() - timedelta(seconds=1))


# ── The state machine ──────────────────────────────────────────────────────


@pytest.mark.django_db
class TestLease:
    def test_it_leases_highest_priority_first_then_oldest(self) -> None:
        low = dm(body="low", priority="low")
        normal_1 = dm(body="n1")
        critical = dm(body="crit", priority="critical")
        normal_2 = dm(body="n2")
        high = dm(body="high", priority="high")

        leased = services.inbox_lease(agent_id="bob", max_messages=10)

        assert [d.message_id for d in leased] == [critical.id, high.id, normal_1.id, normal_2.id, low.id]
        assert {d.state for d in leased} == {"leased"}
        assert all(d.attempts == 1 for d in leased)

    def test_a_leased_message_is_not_leased_again_until_its_lease_ends(self) -> None:
        first, second = dm(body="1"), dm(body="2")

        assert [d.message_id for d in services.inbox_lease(agent_id="bob", max_messages=1)] == [first.id]
        assert [d.message_id for d in services.inbox_lease(agent_id="bob", max_messages=5)] == [second.id]
        assert services.inbox_lease(agent_id="bob") == []

    def test_it_leases_only_the_agents_own_messages(self) -> None:
        dm(to="carol")
        services.message_post(from_agent="alice", channel="general", body="broadcast")

        assert services.inbox_lease(agent_id="bob") == []
        assert len(services.inbox_lease(agent_id="carol")) == 1

    def test_a_message_a_poll_already_showed_is_still_pending_work(self) -> None:
        message = dm()
        services.deliveries_mark_delivered(agent_id="bob", message_ids=[message.id])
        assert state_of(message).state == "delivered"

        [leased] = services.inbox_lease(agent_id="bob")

        assert leased.message_id == message.id
        assert leased.delivered_at is not None

    @pytest.mark.parametrize(("kwargs", "error"), [({"max_messages": 0}, "max"), ({"lease_sec": 1}, "lease_sec")])
    def test_it_refuses_out_of_range_arguments(self, kwargs: dict[str, int], error: str) -> None:
        with pytest.raises(Invalid, match=error):
            services.inbox_lease(agent_id="bob", **kwargs)


@pytest.mark.django_db
class TestAckNack:
    def test_ack_finishes_a_delivery(self) -> None:
        message = dm()
        services.inbox_lease(agent_id="bob")

        assert services.delivery_ack(agent_id="bob", message_ids=[message.id]) == 1

        delivery = state_of(message)
        assert (delivery.state, delivery.leased_until) == ("acked", None)
        assert delivery.acked_at is not None
        assert services.inbox_lease(agent_id="bob") == []
        assert services.delivery_ack(agent_id="bob", message_ids=[message.id]) == 0  # once

    def test_another_agent_cannot_ack_bobs_delivery(self) -> None:
        message = dm()
        assert services.delivery_ack(agent_id="carol", message_ids=[message.id]) == 0
        assert state_of(message).state == "queued"

    def test_nack_requeues_after_the_delay(self) -> None:
        message = dm()
        services.inbox_lease(agent_id="bob")

        delivery = services.delivery_nack(agent_id="bob", message_id=message.id, reason="busy", delay_sec=60)

        assert (delivery.state, delivery.attempts, delivery.last_error) == ("queued", 1, "busy")
        assert services.inbox_lease(agent_id="bob") == []  # not before the delay
        Delivery.objects.filter(pk=delivery.pk).update(available_at=timezone.now())
        [again] = services.inbox_lease(agent_id="bob")
        assert (again.message_id, again.attempts) == (message.id, 2)

    def test_the_last_allowed_attempt_makes_a_dead_letter(self) -> None:
        message = dm(max_attempts=2)
        for _ in range(2):
            services.inbox_lease(agent_id="bob")
            delivery = services.delivery_nack(agent_id="bob", message_id=message.id, reason="cannot parse")

        assert (delivery.state, delivery.attempts) == ("failed", 2)
        assert services.inbox_lease(agent_id="bob") == []
        with pytest.raises(Conflict, match="failed"):
            services.delivery_nack(agent_id="bob", message_id=message.id)

    def test_nack_of_a_message_never_leased_counts_an_attempt(self) -> None:
        message = dm(max_attempts=1)
        assert services.delivery_nack(agent_id="bob", message_id=message.id).state == "failed"

    def test_nack_of_an_unknown_delivery_is_not_found(self) -> None:
        with pytest.raises(NotFound):
            services.delivery_nack(agent_id="bob", message_id=999)

    def test_max_attempts_is_checked(self) -> None:
        with pytest.raises(Invalid, match="max_attempts"):
            dm(max_attempts=0)

    def test_an_admin_retries_dead_letters_with_fresh_attempts(self) -> None:
        message = dm(max_attempts=1)
        services.delivery_nack(agent_id="bob", message_id=message.id)

        assert services.deliveries_retry(message_ids=[message.id]) == 1

        delivery = state_of(message)
        assert (delivery.state, delivery.attempts) == ("queued", 0)
        assert [d.message_id for d in services.inbox_lease(agent_id="bob")] == [message.id]
        assert services.deliveries_retry(message_ids=[message.id]) == 0  # only dead letters


@pytest.mark.django_db
class TestSettling:
    def test_an_expired_lease_goes_back_to_the_queue_and_the_holder_is_told(self) -> None:
        message = dm()
        services.inbox_lease(agent_id="bob")
        lapse_leases()

        assert services.deliveries_settle() == (1, 0)

        assert state_of(message).state == "queued"
        notice = Message.objects.filter(to_agent="bob", kind="notice").get()
        assert notice.metadata["lease_expired"] == message.id
        assert "queued again" in notice.body
        assert not Delivery.objects.filter(message=notice).exists()  # the notice is not itself queued work
        assert services.deliveries_settle() == (0, 0)  # told once

    def test_an_expired_lease_on_the_last_attempt_is_a_dead_letter(self) -> None:
        message = dm(max_attempts=1)
        services.inbox_lease(agent_id="bob")
        lapse_leases()

        services.deliveries_settle(agent_id="bob")

        assert state_of(message).state == "failed"
        assert "dead letter" in Message.objects.get(to_agent="bob", kind="notice").body

    def test_a_new_lease_settles_expired_leases_first(self) -> None:
        message = dm()
        services.inbox_lease(agent_id="bob")
        lapse_leases()

        [again] = services.inbox_lease(agent_id="bob")

        assert (again.message_id, again.attempts) == (message.id, 2)

    def test_a_message_past_its_ttl_expires_and_is_not_leased(self) -> None:
        message = dm(ttl_sec=60)
        Message.objects.filter(pk=message.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        Delivery.objects.filter(message=message).update(expires_at=timezone.now() - timedelta(seconds=1))

        assert services.inbox_lease(agent_id="bob") == []
        assert state_of(message).state == "expired"


# ── The wire ───────────────────────────────────────────────────────────────


def post_dm(api: ApiClient, body: str, **extra: Any) -> int:
    status, env = api.post("/v1/messages", {"from_agent": "alice", "to_agent": "bob", "body": body, **extra})
    assert status == 201, env
    return int(env["result"]["id"])


def test_lease_ack_and_nack_over_rest(api: ApiClient) -> None:
    urgent = post_dm(api, "urgent", priority="critical")
    routine = post_dm(api, "routine", max_attempts=3)

    status, env = api.post("/v1/inbox/bob/lease", {"max": 5, "lease_sec": 30})
    assert status == 200
    assert [m["id"] for m in env["result"]] == [urgent, routine]
    assert env["result"][0]["delivery"]["state"] == "leased"
    assert env["result"][1]["delivery"]["max_attempts"] == 3

    status, env = api.post("/v1/deliveries/ack", {"agent_id": "bob", "message_ids": [urgent]})
    assert (status, env["result"]) == (200, {"agent_id": "bob", "acked": 1})
    status, env = api.post(
        "/v1/deliveries/nack", {"agent_id": "bob", "message_id": routine, "reason": "later", "delay_sec": 0}
    )
    assert status == 200
    assert (env["result"]["state"], env["result"]["last_error"]) == ("queued", "later")

    status, env = api.get("/v1/deliveries", agent_id="bob")
    assert [(d["message_id"], d["state"]) for d in env["result"]] == [(routine, "queued"), (urgent, "acked")]
    assert env["result"][0]["message"]["body"] == "routine"
    _, env = api.get(f"/v1/messages/{urgent}/status")
    assert env["result"]["recipients"][0]["state"] == "acked"


def test_dead_letters_are_listed_and_retried_by_an_admin_only(api: ApiClient, admin_api: ApiClient) -> None:
    message_id = post_dm(api, "poison", max_attempts=1)
    api.post("/v1/deliveries/nack", {"agent_id": "bob", "message_id": message_id, "reason": "bad input"})

    status, env = api.get("/v1/deliveries", agent_id="bob", state="failed")
    assert [d["message_id"] for d in env["result"]] == [message_id]

    status, env = api.post("/v1/deliveries/retry", {"message_ids": [message_id]})
    assert status == 403
    assert "admin" in env["error"]
    status, env = admin_api.post("/v1/deliveries/retry", {"agent_id": "bob", "message_ids": [message_id]})
    assert (status, env["result"]) == (200, {"retried": 1})
    assert api.get("/v1/deliveries", agent_id="bob", state="queued")[1]["result"][0]["message_id"] == message_id


def test_a_keyed_agent_leases_and_lists_only_its_own_queue(db: None) -> None:
    bob, carol = Persona("bob"), Persona("carol")
    ApiClient().post("/v1/messages", {"from_agent": "alice", "to_agent": "bob", "body": "for bob"})

    assert carol.post("/v1/inbox/bob/lease", {})[0] == 403
    assert carol.get("/v1/deliveries", agent_id="bob")[0] == 403
    assert carol.post("/v1/deliveries/ack", {"agent_id": "bob", "message_ids": [1]})[0] == 403
    assert carol.get("/v1/deliveries")[1]["result"] == []  # absent agent_id means her own
    status, env = bob.post("/v1/inbox/bob/lease", {})
    assert (status, len(env["result"])) == (200, 1)
    status, env = bob.post("/v1/deliveries/ack", {"message_ids": [env["result"][0]["id"]]})  # agent filled in
    assert env["result"]["acked"] == 1


@pytest.mark.parametrize(
    ("path", "payload", "fragment"),
    [
        ("/v1/inbox/bob/lease", {"max": 0}, "max"),
        ("/v1/inbox/bob/lease", {"max": "ten"}, "max"),
        ("/v1/inbox/bob/lease", {"lease_sec": 99999}, "lease_sec"),
        ("/v1/deliveries/ack", {"agent_id": "bob"}, "message_ids"),
        ("/v1/deliveries/ack", {"agent_id": "bob", "message_ids": []}, "message_ids"),
        ("/v1/deliveries/ack", {"agent_id": "bob", "message_ids": ["x"]}, "message_ids"),
        ("/v1/deliveries/ack", {"agent_id": "bob", "message_ids": 5}, "message_ids"),
        ("/v1/deliveries/nack", {"agent_id": "bob"}, "message_id"),
        ("/v1/deliveries/nack", {"agent_id": "bob", "message_id": 1, "delay_sec": -1}, "delay_sec"),
        ("/v1/messages", {"from_agent": "a", "to_agent": "b", "body": "x", "max_attempts": 0}, "max_attempts"),
    ],
)
def test_bad_delivery_input_gets_a_clear_400(api: ApiClient, path: str, payload: dict[str, Any], fragment: str) -> None:
    status, env = api.post(path, payload)
    assert status == 400, env
    assert fragment in env["error"]


def test_bad_delivery_queries_get_a_clear_400(api: ApiClient) -> None:
    status, env = api.get("/v1/deliveries", state="lost")
    assert status == 400
    assert "state must be one of" in env["error"]
    assert api.post("/v1/deliveries/nack", {"agent_id": "bob", "message_id": 12345})[0] == 404


# ── Two consumers leasing at once ─────────────────────────────────────────


@pytest.mark.django_db(transaction=True)
def test_concurrent_consumers_never_lease_the_same_message() -> None:
    services.rooms_ensure_defaults()
    total, consumers = 60, 8
    for i in range(total):
        dm(body=f"job {i}")
    barrier = threading.Barrier(consumers)

    def consume(_: int) -> list[int]:
        got: list[int] = []
        try:
            barrier.wait(10)
            while batch := services.inbox_lease(agent_id="bob", max_messages=3):
                got += [d.message_id for d in batch]
        finally:
            connection.close()
        return got

    with ThreadPoolExecutor(consumers) as pool:
        results = list(pool.map(consume, range(consumers)))
    leased = [m for got in results for m in got]
    assert len(leased) == len(set(leased)) == total
    assert Delivery.objects.filter(agent_id="bob", state="leased", attempts=1).count() == total


@pytest.mark.live
def test_concurrent_http_consumers_never_lease_the_same_message(live_hub: Hub) -> None:
    total, consumers = 40, 8
    ids = []
    for i in range(total):
        _status, env = live_hub.call("POST", "/v1/messages", {"from_agent": "alice", "to_agent": "bob", "body": f"{i}"})
        ids.append(env["result"]["id"])
    barrier = threading.Barrier(consumers)

    def consume(_: int) -> list[int]:
        got: list[int] = []
        barrier.wait(10)
        while True:
            status, env = live_hub.call("POST", "/v1/inbox/bob/lease", {"max": 2, "lease_sec": 60})
            assert status == 200, env
            if not env["result"]:
                return got
            got += [m["id"] for m in env["result"]]

    with ThreadPoolExecutor(consumers) as pool:
        results = list(pool.map(consume, range(consumers)))
    leased = [m for got in results for m in got]
    assert sorted(leased) == sorted(ids)  # every message once, none twice
    assert sum(1 for got in results if got) > 1  # the work really was shared


def test_the_django_admin_retries_dead_letters(api: ApiClient) -> None:
    from django.contrib.auth.models import User
    from django.test import Client

    dead = dm(body="poison", max_attempts=1)
    alive = dm(body="fine")
    services.delivery_nack(agent_id="bob", message_id=dead.id)
    staff = Client()
    staff.force_login(User.objects.create_superuser("ada", "ada@example.com", "pw"))
    selected = [state_of(dead).pk, state_of(alive).pk]

    response = staff.post(
        "/admin/coordination/delivery/",
        {"action": "retry_dead_letters", "_selected_action": selected},
        follow=True,
    )

    assert "Queued 1 dead letter(s) again." in response.content.decode()
    assert (state_of(dead).state, state_of(dead).attempts) == ("queued", 0)
    assert state_of(alive).state == "queued"
