"""The bench's MCP phase (``manage.py bench --only mcp``): two agents talking through MCP tools.

Measured with the official SDK's client, as an MCP host would call the tools: agent A
sends B a direct message and B reads it (the round trip, one at a time), then A sends
``sends`` messages in a row (sends/s). Each agent is its own MCP client, as two agents
in two hosts are. ``stdio``: this hub's ``manage.py mcp --agent NAME --url HUB`` as a
subprocess per agent; ``http``: the hub's ``/mcp`` endpoint.

What a server's tools are called and take is a ``Dialect``, so the comparison script
(``scripts/bench_compare.py``) measures other MCP mail servers, run from their PyPI
packages, with the same code.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from coordination import bench

ROOT = Path(__file__).resolve().parent.parent

Opener = Callable[[str], AbstractAsyncContextManager[Any]]  # agent name → a connected ``mcp.Client``


class McpBenchError(Exception):
    """A tool answered with an error, or a message never arrived."""


@dataclass(frozen=True)
class Dialect:
    """Which tools send a direct message and read an agent's inbox, and with which arguments."""

    send_tool: str
    send_args: Callable[[str, str, str], dict[str, Any]]  # (sender, recipient, body)
    read_tool: str
    read_args: Callable[[str], dict[str, Any]]  # (reader)
    # Once per agent after connecting (register, join a project...): (client, agent) → awaitable.
    setup: Callable[[Any, str], Awaitable[None]] | None = None


ARC_DIALECT = Dialect(
    send_tool="arc_dm",
    send_args=lambda _sender, to, body: {"to_agent": to, "body": body},
    read_tool="arc_poll_messages",
    read_args=lambda _reader: {"timeout": 5},
)


async def call(client: Any, tool: str, arguments: dict[str, Any]) -> str:
    """Call ``tool``; its whole answer as text (structured content, else the text parts)."""
    result = await client.call_tool(tool, arguments)
    parts = [getattr(part, "text", "") for part in result.content]
    text = json.dumps(result.structured_content) if result.structured_content is not None else "\n".join(parts)
    if result.is_error:
        raise McpBenchError(f"{tool} answered an error: {' '.join(parts)[:300]}")
    return text


def arc_opener(url: str, transport: str, token: str | None, state_dir: str) -> Opener:
    """This hub's MCP tools for one agent, over ``transport`` (``stdio`` or ``http``)."""
    from mcp import Client, StdioServerParameters

    @asynccontextmanager
    async def open_agent(agent: str) -> AsyncIterator[Any]:
        if transport == "stdio":
            env = {k: v for k, v in os.environ.items() if k != "ARC_AGENT_KEY"}
            if token:
                env["ARC_AGENT_KEY"] = token
            params = StdioServerParameters(
                command=sys.executable,
                args=[str(ROOT / "manage.py"), "mcp", "--agent", agent, "--url", url, "--state-dir", state_dir],
                env=env,
            )
            async with Client(params) as client:
                yield client
            return
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        endpoint = f"{url}/mcp?agent={quote(agent)}"
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=120.0)) as http,
            Client(streamable_http_client(endpoint, http_client=http)) as client,
        ):
            yield client

    return open_agent


async def measure(
    open_agent: Opener,
    dialect: Dialect,
    *,
    run_id: str,
    round_trips: int = 50,
    sends: int = 200,
    wait_sec: float = 10.0,
    cpu: Callable[[], float | None] = lambda: None,
    names: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Round trips A→B (send, then B reads until the body is there), then ``sends`` sends in a row.

    ``cpu``: the server's CPU seconds so far (``None``: not measured); its growth over the
    sends is reported per send. ``names``: the two agents' names (default: fresh ones per run).
    """
    sender, reader = names or (f"bench-mcp-a-{run_id}", f"bench-mcp-b-{run_id}")
    latencies: list[float] = []
    lost = 0
    async with open_agent(sender) as a, open_agent(reader) as b:
        if dialect.setup is not None:
            await dialect.setup(a, sender)
            await dialect.setup(b, reader)
        await _round_trip(a, b, dialect, sender, reader, f"mcp warm {run_id}", wait_sec)  # both sides connected
        for i in range(round_trips):
            try:
                latencies.append(await _round_trip(a, b, dialect, sender, reader, f"mcp rt {run_id} {i}", wait_sec))
            except TimeoutError:
                lost += 1
        cpu_before = cpu()
        started = time.perf_counter()
        for i in range(sends):
            await call(a, dialect.send_tool, dialect.send_args(sender, reader, f"mcp send {run_id} {i}"))
        elapsed = time.perf_counter() - started
        cpu_after = cpu()
    result: dict[str, Any] = {
        "status": "ok",
        "round_trip": {"lost": lost, **bench.latency_summary(latencies)},
        "sends": sends,
        "sends_per_sec": round(sends / elapsed, 1) if elapsed else None,
    }
    if cpu_before is not None and cpu_after is not None:
        result["cpu_ms_per_send"] = round((cpu_after - cpu_before) * 1000 / sends, 3)
    return result


async def _round_trip(a: Any, b: Any, dialect: Dialect, sender: str, reader: str, body: str, wait_sec: float) -> float:
    started = time.perf_counter()
    await call(a, dialect.send_tool, dialect.send_args(sender, reader, body))
    deadline = started + wait_sec
    while body not in await call(b, dialect.read_tool, dialect.read_args(reader)):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{reader} never read {body!r}")
    return time.perf_counter() - started


async def measure_hub(
    url: str,
    token: str | None,
    transports: Iterable[str],
    *,
    run_id: str,
    round_trips: int,
    sends: int,
    wait_sec: float,
    cpu: Callable[[], float | None],
) -> dict[str, Any]:
    """``measure`` over each of this hub's MCP transports; a transport that fails says why."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="arc-bench-mcp-") as state_dir:
        for transport in transports:
            try:
                results[transport] = await measure(
                    arc_opener(url, transport, token, state_dir),
                    ARC_DIALECT,
                    run_id=f"{run_id}-{transport}",
                    round_trips=round_trips,
                    sends=sends,
                    wait_sec=wait_sec,
                    cpu=cpu,
                )
            except Exception as exc:  # noqa: BLE001 - the SDK raises many kinds (and groups); report it, go on
                results[transport] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"[:500]}
    return results


async def phase(config: bench.BenchConfig, run_id: str, cpu: Callable[[], float | None]) -> dict[str, Any]:
    """The bench's ``mcp`` measurement (``bench.run(..., mcp_phase=phase)``) against ``config.url``."""
    return await measure_hub(
        config.url,
        config.token,
        config.mcp_transports,
        run_id=run_id,
        round_trips=config.mcp_round_trips,
        sends=config.mcp_sends,
        wait_sec=config.wait_sec,
        cpu=cpu,
    )
