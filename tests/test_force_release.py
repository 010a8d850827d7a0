"""An admin force-releases a claim or a lock: ``services.claim_force_release`` / ``lock_force_release``.

Personas:
- ``ada``: a staff user (dashboard or Django admin) who takes leases back;
- ``bob``: a worker holding the claim or the lock;
- ``carol``: a second worker who wants what bob holds.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from coordination.core import services
from coordination.core.errors import NotFound
from coordination.core.models import Claim, Lock, Message
from tests.conftest import Published

pytestmark = pytest.mark.django_db


def releases(published: Published, name: str) -> list[dict[str, Any]]:
    return [data for event, data in published if event == name and data["action"] == "released"]


def notices_to(agent: str) -> list[Message]:
    return list(Message.objects.filter(to_agent=agent, from_agent=services.SYSTEM_AGENT, kind="notice").order_by("id"))


# ── Claims ────────────────────────────────────────────────────────────────


def test_it_releases_a_claim_and_tells_its_holder(published: Published) -> None:
    services.claim_acquire(owner_agent_id="bob", claim_key="deploy-7", thread_id="release-train")

    claim = services.claim_force_release(claim_key="deploy-7", actor="ada")

    assert claim.released_at is not None
    assert Claim.objects.get(pk="deploy-7").released_at == claim.released_at
    assert not Claim.objects.active().exists()
    (notice,) = notices_to("bob")
    assert notice.metadata == {"claim_released": "deploy-7", "released_by": "ada"}
    assert notice.thread_id == "release-train"
    assert "released by ada" in notice.body
    (event,) = releases(published, "claim")
    assert (event["forced_by"], event["claim"]["claim_key"], event["claim"]["owner_agent_id"]) == (
        "ada",
        "deploy-7",
        "bob",
    )
    assert event["claim"]["released_at"] is not None


def test_another_agent_may_claim_it_afterwards() -> None:
    services.claim_acquire(owner_agent_id="bob", claim_key="deploy-7")
    assert services.claim_acquire(owner_agent_id="carol", claim_key="deploy-7")[1] is False  # held by bob

    services.claim_force_release(claim_key="deploy-7", actor="ada")
    claim, acquired = services.claim_acquire(owner_agent_id="carol", claim_key="deploy-7")

    assert (acquired, claim.owner_agent_id, claim.released_at) == (True, "carol", None)


def test_it_tells_whoever_holds_the_claim_now() -> None:
    services.claim_acquire(owner_agent_id="bob", claim_key="deploy-7")
    Claim.objects.filter(pk="deploy-7").update(expires_at=timezone.now() - timedelta(seconds=1))
    services.claim_acquire(owner_agent_id="carol", claim_key="deploy-7")  # takes over bob's expired claim

    services.claim_force_release(claim_key="deploy-7", actor="ada")

    assert [n.metadata for n in notices_to("carol")] == [{"claim_released": "deploy-7", "released_by": "ada"}]
    assert not any("claim_released" in n.metadata for n in notices_to("bob"))


@pytest.mark.parametrize("setup", ["unknown", "released by its holder", "force-released already", "lapsed"])
def test_a_claim_not_held_is_not_found_and_nobody_is_told(setup: str, published: Published) -> None:
    if setup != "unknown":
        services.claim_acquire(owner_agent_id="bob", claim_key="deploy-7")
        if setup == "released by its holder":
            services.claim_release(claim_key="deploy-7", agent_id="bob")
        elif setup == "lapsed":  # the sweeper tells a lapsed holder; a forced release must not as well
            Claim.objects.filter(pk="deploy-7").update(expires_at=timezone.now() - timedelta(seconds=1))
        else:
            services.claim_force_release(claim_key="deploy-7", actor="ada")
    told, announced = len(notices_to("bob")), len(releases(published, "claim"))

    with pytest.raises(NotFound, match="no claim deploy-7 is held"):
        services.claim_force_release(claim_key="deploy-7", actor="ada")

    assert (len(notices_to("bob")), len(releases(published, "claim"))) == (told, announced)


# ── Locks ─────────────────────────────────────────────────────────────────


def test_it_releases_a_lock_and_tells_its_holder(published: Published) -> None:
    services.lock_acquire(agent_id="bob", file_path="src/app.py")

    lock = services.lock_force_release(file_path="src/app.py", actor="ada")

    assert lock.released_at is not None
    assert Lock.objects.get(pk="src/app.py").released_at == lock.released_at
    (notice,) = notices_to("bob")
    assert notice.metadata == {"lock_released": "src/app.py", "released_by": "ada"}
    assert "lock on src/app.py was released by ada" in notice.body
    (event,) = releases(published, "lock")
    assert (event["forced_by"], event["lock"]["file_path"], event["lock"]["agent_id"]) == ("ada", "src/app.py", "bob")
    assert not releases(published, "claim")


def test_another_agent_may_lock_it_afterwards() -> None:
    services.lock_acquire(agent_id="bob", file_path="src/app.py")
    assert services.lock_acquire(agent_id="carol", file_path="src/app.py")[1] is False

    services.lock_force_release(file_path="src/app.py", actor="ada")
    lock, acquired = services.lock_acquire(agent_id="carol", file_path="src/app.py")

    assert (acquired, lock.agent_id, lock.released_at) == (True, "carol", None)


@pytest.mark.parametrize("setup", ["unknown", "released by its holder", "force-released already"])
def test_a_lock_not_held_is_not_found_and_nobody_is_told(setup: str, published: Published) -> None:
    if setup != "unknown":
        services.lock_acquire(agent_id="bob", file_path="src/app.py")
        if setup == "released by its holder":
            services.lock_release(file_path="src/app.py", agent_id="bob")
        else:
            services.lock_force_release(file_path="src/app.py", actor="ada")
    told, announced = len(notices_to("bob")), len(releases(published, "lock"))

    with pytest.raises(NotFound, match=re.escape("no lock src/app.py is held")):
        services.lock_force_release(file_path="src/app.py", actor="ada")

    assert (len(notices_to("bob")), len(releases(published, "lock"))) == (told, announced)


def test_a_claim_and_a_lock_with_the_same_name_are_released_apart() -> None:
    services.claim_acquire(owner_agent_id="bob", claim_key="src/app.py")
    services.lock_acquire(agent_id="bob", file_path="src/app.py")

    services.lock_force_release(file_path="src/app.py", actor="ada")

    assert Claim.objects.active().filter(pk="src/app.py").exists()
    assert not Lock.objects.active().exists()
