"""Other MCP mail servers, run from their PyPI packages, for the bench's MCP phase (``bench_compare.py --mcp-peers``).

Each peer is installed once into its own virtualenv under ``.cache/mcp-peers/`` (never
vendored) and started fresh, on a temporary data directory, for every run. The client is
this project's official ``mcp`` SDK, as for the hub; what differs per peer is how it is
started and set up, and which tools send and read (a ``bench_mcp.Dialect``):

- ``agent-mailbox`` 0.8.2: a workbench service owns the store; each agent is enrolled
  (``agent-mailbox enroll``) and gets a stdio server of its own (``mailbox-mcp
  --session-file``). ``project_message`` sends (to the recipient's employee id),
  ``project_messages`` reads the inbox. Its default folding of repeated messages into one
  digest (bodies dropped) is turned off, so every message arrives whole.
- ``mcp-agent-mail`` 0.1.0: one stdio server (its FastMCP app; the package ships only an
  HTTP command), the agent named in each call: ``send_message`` and ``fetch_inbox``. Its
  tool logging, which writes to stdout, the protocol's channel, is turned off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from coordination import bench_mcp  # noqa: E402  (needs ROOT on sys.path)

CACHE = ROOT / ".cache" / "mcp-peers"

Session = Callable[[Path], AbstractAsyncContextManager[tuple[bench_mcp.Opener, bench_mcp.Dialect]]]


@dataclass(frozen=True)
class Peer:
    name: str
    requirement: str
    session: Session  # (venv bin directory) → a fresh server: (opener, dialect)

    def venv_bin(self) -> Path:
        """Its virtualenv (created and installed on first use), and that venv's ``bin``."""
        venv = CACHE / self.requirement.replace("==", "-")
        marker = venv / ".installed"
        if not marker.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", self.requirement], check=True)
            marker.write_text(self.requirement + "\n")
        return venv / "bin"


def _text(result: Any) -> str:
    return "\n".join(getattr(part, "text", "") for part in result.content)


@asynccontextmanager
async def agent_mailbox(bin_dir: Path) -> AsyncIterator[tuple[bench_mcp.Opener, bench_mcp.Dialect]]:
    from mcp import Client, StdioServerParameters

    cli = str(bin_dir / "agent-mailbox")
    with tempfile.TemporaryDirectory(prefix="arc-bench-agent-mailbox-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "HOME": str(root)}
        # Every message whole: no folding of repeated messages into a digest without bodies.
        env |= {"AGENT_MAILBOX_FOLD_TIERS": "300:1000000,21600:1000000", "AGENT_MAILBOX_BACKLOG_FOLD": "0"}
        home = root / "home"
        workbench = subprocess.Popen(
            [cli, "--home", str(home), "--port", "0", "--no-browser"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        try:
            assert workbench.stdout is not None
            workbench.stdout.readline()  # its URL, once it serves
            instance = json.loads((home / "workbench" / "instance.json").read_text())
            (root / "project").mkdir()
            request = urllib.request.Request(
                instance["endpoint"] + "/api/workbench/projects",
                data=json.dumps({"name": "bench", "path": str(root / "project")}).encode(),
                headers={"Authorization": f"Bearer {instance['token']}", "Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=30) as answer:
                project = json.loads(answer.read())
            ids: dict[str, str] = {}

            @asynccontextmanager
            async def open_agent(agent: str) -> AsyncIterator[Any]:
                enrolled = subprocess.run(
                    [
                        cli,
                        "enroll",
                        "claude",
                        "--home",
                        str(home),
                        "--project",
                        project["id"],
                        "--name",
                        agent,
                        "--json",
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=env,
                )
                info = json.loads(enrolled.stdout)
                ids[agent] = info["employee"]["id"]
                params = StdioServerParameters(
                    command=cli, args=["mailbox-mcp", "--session-file", info["session_file"]], env=env
                )
                async with Client(params) as client:
                    yield client

            yield (
                open_agent,
                bench_mcp.Dialect(
                    send_tool="project_message",
                    send_args=lambda _sender, to, body: {"title": body[:40], "body": body, "recipient_id": ids[to]},
                    read_tool="project_messages",
                    read_args=lambda _reader: {"folder": "inbox", "limit": 1},
                ),
            )
        finally:
            workbench.terminate()
            try:
                workbench.wait(10)
            except subprocess.TimeoutExpired:
                workbench.kill()


@asynccontextmanager
async def mcp_agent_mail(bin_dir: Path) -> AsyncIterator[tuple[bench_mcp.Opener, bench_mcp.Dialect]]:
    from mcp import Client, StdioServerParameters

    with tempfile.TemporaryDirectory(prefix="arc-bench-mcp-agent-mail-") as tmp:
        data = Path(tmp)
        env = {
            "HOME": str(data),
            "PATH": os.environ.get("PATH", ""),
            "STORAGE_ROOT": str(data / "archive"),
            "DATABASE_URL": f"sqlite+aiosqlite:///{data}/storage.sqlite3",
            "TOOLS_LOG_ENABLED": "false",  # else it prints panels on stdout, the protocol's channel
            "LLM_ENABLED": "false",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # offline: no fetch of a model price list at import
        }
        params = StdioServerParameters(
            command=str(bin_dir / "python"),
            args=["-c", "from mcp_agent_mail.app import build_mcp_server; build_mcp_server().run('stdio')"],
            env=env,
            cwd=str(data),  # it reads ./.env: an empty directory
        )
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(Client(params))  # one server: the agent is an argument

            @asynccontextmanager
            async def open_agent(agent: str) -> AsyncIterator[Any]:
                arguments = {"project_key": "bench", "program": "bench", "model": "none", "name": agent}
                result = await client.call_tool("register_agent", arguments)
                if result.is_error:
                    raise bench_mcp.McpBenchError(f"register_agent: {_text(result)[:300]}")
                yield client

            yield (
                open_agent,
                bench_mcp.Dialect(
                    send_tool="send_message",
                    send_args=lambda sender, to, body: {
                        "project_key": "bench",
                        "sender_name": sender,
                        "to": [to],
                        "subject": body[:40],
                        "body_md": body,
                    },
                    read_tool="fetch_inbox",
                    read_args=lambda reader: {
                        "project_key": "bench",
                        "agent_name": reader,
                        "limit": 1,
                        "include_bodies": True,
                    },
                ),
            )


PEERS = {
    "agent-mailbox": Peer("agent-mailbox 0.8.2", "agent-mailbox==0.8.2", agent_mailbox),
    "mcp-agent-mail": Peer("mcp-agent-mail 0.1.0", "mcp-agent-mail==0.1.0", mcp_agent_mail),
}
# Agent names each peer accepts (mcp-agent-mail wants plain names; agent-mailbox takes any).
NAMES = {"agent-mailbox": ("A", "B"), "mcp-agent-mail": ("A", "B")}


async def measure(kind: str, run_id: str, round_trips: int, sends: int, wait_sec: float) -> dict[str, Any]:
    """The MCP phase against a fresh server of peer ``kind``: a bench report with ``results.mcp.stdio``."""
    peer = PEERS[kind]
    bin_dir = peer.venv_bin()
    try:
        async with peer.session(bin_dir) as (opener, dialect):
            result = await bench_mcp.measure(
                opener,
                dialect,
                run_id=run_id,
                round_trips=round_trips,
                sends=sends,
                wait_sec=wait_sec,
                names=NAMES[kind],
            )
    except Exception as exc:  # noqa: BLE001 - a peer that fails is reported, the comparison goes on
        result = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"[:500]}
    return {"url": f"stdio ({peer.name})", "results": {"mcp": {"stdio": result}}}
