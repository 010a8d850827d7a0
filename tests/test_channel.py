"""Waking an idle Claude Code session through the MCP channel notification (docs/agents.md).

The official SDK's client declares the ``claude/channel`` capability (as a client extension) and
listens for ``notifications/claude/channel``; ``manage.py mcp`` over stdio is the server, on a
live hub. One wake per message addressed to the agent, at most one pending: a second message
before the agent reads wakes nobody; after it reads, the next one wakes it again.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.extension import ClientExtension, NotificationBinding
from pydantic import BaseModel

from coordination.core.turns import asks_reply_of as for_agent
from mcpserver.channel import CAPABILITY, METHOD, client_supports
from tests.hubproc import ROOT, Hub, running_hub

pytestmark = pytest.mark.live
WAIT_SEC = 60  # generous: a wake is a long-poll answer and one notification, on a busy machine
# Claude Code speaks the handshake protocol (initialize); the SDK client would probe the 2026 era first.
HANDSHAKE = "legacy"


class ChannelParams(BaseModel):
    content: str
    meta: dict[str, str] = {}


class ChannelListener(ClientExtension):
    """A client that supports Claude Code's channel: it declares it and collects the wakes."""

    identifier = CAPABILITY

    def __init__(self) -> None:
        self.wakes: list[ChannelParams] = []
        self.arrived = anyio.Event()

    async def collect(self, params: ChannelParams) -> None:
        self.wakes.append(params)
        self.arrived.set()

    def notifications(self) -> list[NotificationBinding[Any]]:
        return [NotificationBinding(method=METHOD, params_type=ChannelParams, handler=self.collect)]

    async def next_wake(self) -> ChannelParams:
        with anyio.fail_after(WAIT_SEC):
            await self.arrived.wait()
        self.arrived = anyio.Event()
        return self.wakes[-1]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("channel"), args=("--no-relay",)) as hub:
        yield hub


def server(hub: Hub, agent: str, *args: str) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARC_")}
    command = [str(ROOT / "manage.py"), "mcp", "--agent", agent, "--url", hub.url, *args]
    return StdioServerParameters(command=sys.executable, args=command, env=env)


def dm(hub: Hub, to: str, body: str, sender: str = "nina") -> int:
    status, posted = hub.call("POST", "/v1/messages", {"from_agent": sender, "to_agent": to, "body": body})
    assert status == 201, posted
    return int(posted["result"]["id"])


def test_a_message_wakes_the_session_once_until_it_is_read(hub: Hub) -> None:
    async def scenario() -> tuple[list[ChannelParams], dict[str, Any]]:
        listener = ChannelListener()
        async with Client(server(hub, "otto"), extensions=[listener], mode=HANDSHAKE) as client:
            declared = client.server_capabilities
            first = dm(hub, "otto", "are you free?")
            wake = await listener.next_wake()
            assert wake.meta["message_id"] == str(first)
            dm(hub, "otto", "second thought")  # the first wake is pending: no wake for this one
            read = await client.call_tool("arc_poll_messages", {"timeout": 0})
            assert isinstance(read.structured_content, dict)
            assert read.structured_content["count"] == 2
            third = dm(hub, "otto", "one more")
            wake = await listener.next_wake()
            assert wake.meta["message_id"] == str(third)
            return listener.wakes, declared.model_dump(by_alias=True, exclude_none=True) if declared else {}

    wakes, capabilities = anyio.run(scenario)
    assert capabilities["experimental"] == {CAPABILITY: {}}
    assert len(wakes) == 2
    assert "a direct message from nina" in wakes[0].content
    assert "arc_poll_messages" in wakes[0].content
    assert "are you free?" not in wakes[0].content  # the body comes through the fenced poll, not the wake


def test_channel_off_declares_nothing() -> None:
    # (what a client that never declares the capability gets in auto mode is decided by client_supports)
    assert not client_supports(None)
    assert not client_supports({"experimental": {"other/thing": {}}})
    assert client_supports({"experimental": {CAPABILITY: {}}})
    assert client_supports({"extensions": {CAPABILITY: {}}})


def test_what_wakes_an_agent() -> None:
    assert for_agent("otto", {"to_agent": "otto"})
    assert for_agent("otto", {"to_agent": None, "channel": "general", "expects_reply": "otto"})
    assert not for_agent("otto", {"to_agent": None, "channel": "general", "expects_reply": "anyone"})
    assert not for_agent("otto", {"to_agent": "pia"})


def test_with_channel_off_the_capability_is_not_declared(hub: Hub) -> None:
    async def declared() -> dict[str, Any]:
        params = server(hub, "pia", "--channel", "off")
        async with Client(params, extensions=[ChannelListener()], mode=HANDSHAKE) as client:
            caps = client.server_capabilities
            return caps.model_dump(by_alias=True, exclude_none=True) if caps else {}

    assert CAPABILITY not in (anyio.run(declared).get("experimental") or {})
