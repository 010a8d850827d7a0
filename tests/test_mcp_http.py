"""``/mcp`` on a live hub: who may call it, and as whom (the REST edge's rules, docs/access.md).

Personas: ``alice`` holds a key for every room; ``bob`` holds a key scoped to the room
``ops``; an unkeyed loopback client names its agent with ``?agent=``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.hubproc import ROOT, Hub, running_hub
from tests.hubproc import mint_key as invite
from tests.test_mcp import call, error

pytestmark = pytest.mark.live

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("mcp-http") / "hub") as live:
        yield live


def raw_post(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any] | str]:
    request = urllib.request.Request(
        url,
        data=json.dumps(INITIALIZE).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **(headers or {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def keyed(hub: Hub, key: str, query: str = "") -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30.0, read=120.0))
    return Client(streamable_http_client(f"{hub.url}/mcp{query}", http_client=http))


def test_an_unkeyed_loopback_client_must_name_its_agent(hub: Hub) -> None:
    status, body = raw_post(f"{hub.url}/mcp")
    assert status == 400
    assert isinstance(body, dict)
    assert "?agent=NAME" in body["error"]

    status, _ = raw_post(f"{hub.url}/mcp?agent=alice")
    assert status == 200


def test_a_bad_key_is_401_and_a_revoked_one_too(hub: Hub) -> None:
    status, body = raw_post(f"{hub.url}/mcp", {"Authorization": "Bearer arc_nope_nope"})
    assert status == 401
    assert isinstance(body, dict)
    assert body["ok"] is False

    key = invite(hub, "dora")
    assert raw_post(f"{hub.url}/mcp", {"Authorization": f"Bearer {key}"})[0] == 200
    key_id = key.split("_")[1]
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "revoke", key_id],
        env=hub.env,
        cwd=str(hub.home),
        check=True,
        capture_output=True,
        timeout=60,
    )
    status, body = raw_post(f"{hub.url}/mcp", {"Authorization": f"Bearer {key}"})
    assert status == 401
    assert isinstance(body, dict)
    assert "revoked" in body["error"]


def test_a_key_may_not_name_another_agent(hub: Hub) -> None:
    key = invite(hub, "erin")
    status, body = raw_post(f"{hub.url}/mcp?agent=mallory", {"Authorization": f"Bearer {key}"})
    assert status == 403
    assert isinstance(body, dict)
    assert "erin" in body["error"]


def test_an_unkeyed_request_to_a_rebound_host_is_refused(hub: Hub) -> None:
    port = hub.url.rsplit(":", 1)[1]
    status, body = raw_post(f"{hub.url}/mcp?agent=alice", {"Host": f"evil.example:{port}"})
    assert status == 403
    assert isinstance(body, dict)
    assert "loopback host" in body["error"]
    status, body = raw_post(f"{hub.url}/mcp?agent=alice", {"Origin": "http://evil.example"})
    assert status == 403

    key = invite(hub, "frank")  # a key proves itself: the host does not matter then
    assert raw_post(f"{hub.url}/mcp", {"Authorization": f"Bearer {key}", "Host": f"hub.example:{port}"})[0] == 200


async def test_a_keyed_client_acts_as_its_keys_agent_within_its_rooms(hub: Hub) -> None:
    tag = uuid.uuid4().hex[:6]
    alice_key = invite(hub, f"alice-{tag}")
    async with keyed(hub, alice_key) as alice:
        await call(alice, "arc_create_channel", name=f"ops-{tag}")  # a key is scoped to rooms that exist
    bob_key = invite(hub, f"bob-{tag}", "--rooms", f"ops-{tag}")
    async with keyed(hub, alice_key) as alice, keyed(hub, bob_key) as bob:
        assert (await call(alice, "arc_whoami"))["agent_id"] == f"alice-{tag}"
        who = await call(bob, "arc_whoami")
        assert (who["agent_id"], who["keyed"], who["key_rooms"]) == (f"bob-{tag}", True, [f"ops-{tag}"])

        await call(bob, "arc_poll_messages", timeout=0)
        await call(alice, "arc_post_message", channel="general", body="not for bob")
        await call(alice, "arc_post_message", channel=f"ops-{tag}", body="for bob")
        seen = await call(bob, "arc_poll_messages", timeout=10)
        assert [m["channel"] for m in seen["messages"]] == [f"ops-{tag}"]

        assert "limited to rooms" in await error(bob, "arc_post_message", channel="general", body="hi")
        assert "limited to rooms" in await error(bob, "arc_poll_messages", channel="general", timeout=0)
        assert "403" in await error(bob, "arc_post_message", channel="general", body="hi")


def test_a_hub_requiring_keys_refuses_unkeyed_mcp(tmp_path: Path) -> None:
    with running_hub(tmp_path / "hub", extra_env={"ARC_AUTH": "required"}) as strict:
        status, body = raw_post(f"{strict.url}/mcp?agent=alice")
        assert status == 401
        assert isinstance(body, dict)
        assert "ARC_AUTH=required" in body["error"]
        key = invite(strict, "alice")
        assert raw_post(f"{strict.url}/mcp", {"Authorization": f"Bearer {key}"})[0] == 200
