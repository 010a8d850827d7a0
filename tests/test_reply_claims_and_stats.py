"""Reply etiquette (``expects_reply`` and atomic reply-claims), ``/v1/stats`` and ``/metrics``.

Personas: alice asks; bob and carol are workers who may answer; ``root`` holds an admin key.
"""

from __future__ import annotations

import pytest
from django.db import connection

from coordination.core import services
from coordination.core.models import Message
from tests.test_races import _race


def ask(api, expects_reply="anyone", **extra):
    status, env = api.post(
        "/v1/messages", {"from_agent": "alice", "body": "who can review #12?", "expects_reply": expects_reply, **extra}
    )
    assert status == 201
    return env["result"]


def test_a_message_that_expects_a_reply_shows_who_claimed_it(api):
    question = ask(api)
    assert question["expects_reply"] == "anyone"
    assert question["reply_claimed_by"] is None

    status, env = api.post(f"/v1/messages/{question['id']}/reply-claim", {"agent_id": "bob"})

    assert status == 201
    assert env["acquired"] is True
    assert env["result"]["reply_claimed_by"] == "bob"
    assert api.get("/v1/messages", channel="general")[1]["result"][-1]["reply_claimed_by"] == "bob"


def test_the_second_claimant_is_told_the_winner(api):
    question = ask(api)
    api.post(f"/v1/messages/{question['id']}/reply-claim", {"agent_id": "bob"})

    status, env = api.post(f"/v1/messages/{question['id']}/reply-claim", {"agent_id": "carol"})

    assert status == 200
    assert env["acquired"] is False
    assert env["result"]["reply_claimed_by"] == "bob"


def test_the_winner_claiming_again_still_holds_it(api):
    question = ask(api)
    api.post(f"/v1/messages/{question['id']}/reply-claim", {"agent_id": "bob"})
    assert api.post(f"/v1/messages/{question['id']}/reply-claim", {"agent_id": "bob"})[1]["acquired"] is True


def test_only_the_named_agent_may_claim_a_reply_addressed_to_it(api):
    question = ask(api, expects_reply="carol")

    status, env = api.post(f"/v1/messages/{question['id']}/reply-claim", {"agent_id": "bob"})
    assert status == 403
    assert "carol only" in env["error"]
    assert api.post(f"/v1/messages/{question['id']}/reply-claim", {"agent_id": "carol"})[1]["acquired"] is True


def test_a_message_expecting_no_reply_cannot_be_claimed(api):
    status, env = api.post("/v1/messages", {"from_agent": "alice", "body": "fyi"})
    status, env = api.post(f"/v1/messages/{env['result']['id']}/reply-claim", {"agent_id": "bob"})
    assert status == 409
    assert "expects no reply" in env["error"]


def test_reply_claim_errors_are_envelopes(api):
    assert api.post("/v1/messages/999999/reply-claim", {"agent_id": "bob"})[0] == 404
    question = ask(api)
    status, env = api.post(f"/v1/messages/{question['id']}/reply-claim", {})
    assert status == 400
    assert "agent_id" in env["error"]


def test_a_key_claims_only_as_its_own_agent(api):
    from tests.conftest import ApiClient

    _, key = services.key_mint(agent_id="bob")
    question = ask(api)
    bob = ApiClient(key=key)
    assert bob.post(f"/v1/messages/{question['id']}/reply-claim", {"agent_id": "carol"})[0] == 403
    status, env = bob.post(f"/v1/messages/{question['id']}/reply-claim", {})
    assert status == 201
    assert env["result"]["reply_claimed_by"] == "bob"


@pytest.mark.django_db(transaction=True)
def test_exactly_one_of_many_concurrent_claimants_wins() -> None:
    services.rooms_ensure_defaults()
    question = services.message_post(from_agent="alice", body="anyone?", expects_reply="anyone")
    results = _race(12, lambda i: services.reply_claim(message_id=question.id, agent_id=f"worker-{i}")[1])
    assert results.count(True) == 1
    assert Message.objects.get(pk=question.id).reply_claimed_by == f"worker-{results.index(True)}"
    connection.close()


def test_stats_count_the_hub(api):
    api.post("/v1/sessions", {"agent_id": "bob"})
    api.post("/v1/messages", {"from_agent": "alice", "to_agent": "bob", "body": "hi"})
    api.post("/v1/messages", {"from_agent": "alice", "kind": "task", "body": "do it"})
    api.post("/v1/claims", {"owner_agent_id": "bob", "claim_key": "k"})

    status, env = api.get("/v1/stats")

    assert status == 200
    stats = env["result"]
    assert stats["messages"] == 2
    assert stats["agents"] == {"live": 1, "idle": 0}
    assert stats["deliveries"] == {"queued": 1}
    assert stats["tasks"] == {"open": 1}
    assert stats["claims_active"] == 1
    assert stats["locks_active"] == 0


def test_metrics_speak_prometheus_to_loopback(api):
    api.post("/v1/messages", {"from_agent": "alice", "body": "hi"})

    response = api.client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert "# TYPE arc_messages gauge" in text
    assert "arc_messages 1" in text
    assert 'arc_agents{state="live"} 0' in text


def test_metrics_refuse_remote_clients_without_an_admin_key(api, admin_api):
    admin_api.post("/v1/network", {"allow_remote": True})
    assert api.client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 401
    _, alice_key = services.key_mint(agent_id="alice")
    from tests.conftest import ApiClient

    assert ApiClient(key=alice_key).client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 403
    assert admin_api.client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 200
