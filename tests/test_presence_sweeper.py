"""Presence expiry runs inside the hub: a stale agent's work is released and announced (Arc's recovery)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.hubproc import running_hub

pytestmark = pytest.mark.live


def test_the_hub_recovers_a_silent_agents_claims_and_locks(tmp_path: Path) -> None:
    # TTL 5 s (Arc's minimum): the in-hub sweeper runs every ~1.7 s.
    with running_hub(tmp_path / "hub", extra_env={"ARC_PRESENCE_TTL_SEC": "5"}) as hub:
        hub.call("POST", "/v1/sessions", {"agent_id": "bob"})
        hub.call(
            "POST", "/v1/claims", {"owner_agent_id": "bob", "claim_key": "build-7", "thread_id": "t-7", "ttl_sec": 300}
        )
        hub.call("POST", "/v1/locks", {"agent_id": "bob", "file_path": "src/app.py", "ttl_sec": 300})
        deadline = time.monotonic() + 15
        notices: list[dict] = []
        while time.monotonic() < deadline:
            _, page = hub.call("GET", "/v1/messages?channel=general")
            notices = [m for m in page["result"] if m["metadata"].get("recovery")]
            if len(notices) == 2:
                break
            time.sleep(0.3)
        assert {n["metadata"].get("claim_key") or n["metadata"].get("file_path") for n in notices} == {
            "build-7",
            "src/app.py",
        }
        assert all(n["from_agent"] == "system" and n["kind"] == "notice" for n in notices)
        _, claims = hub.call("GET", "/v1/claims?active_only=true")
        _, locks = hub.call("GET", "/v1/locks?active_only=true")
        assert claims["result"] == []
        assert locks["result"] == []
        _, agents = hub.call("GET", "/v1/agents")
        assert agents["result"] == []
