"""``manage.py mcp``: the hub's MCP tools over stdio, for Claude Code, Codex and other MCP clients."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import anyio
from django.core.management.base import BaseCommand, CommandError, CommandParser
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from coordination.core.errors import ArcError
from coordination.process.cli import KEY_ENV, add_location_arguments, agent_key, default_url
from mcpserver.backend import Backend
from mcpserver.channel import ChannelMiddleware
from mcpserver.local import LocalBackend, identity_for
from mcpserver.remote import ClientBackend
from mcpserver.tools import CORE_TOOLS, build_server


def _state_home() -> Path:
    """Where a client keeps its own state (not the hub's): the XDG state directory of the user."""
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")


class Command(BaseCommand):
    help = (
        "Serve the hub's MCP tools over stdio (stdin/stdout JSON-RPC) as --agent: over HTTP to a running hub "
        f"(--url, default: the one found through .arc.pid), or in this process on the hub's database with --local. "
        f"--tools core exposes only {', '.join(CORE_TOOLS)}. The agent key comes from --key, --key-file or ${KEY_ENV}. "
        "Nothing but MCP frames is written to stdout; logs go to stderr."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        add_location_arguments(parser)
        parser.add_argument("--agent", required=True, help="the agent id the tools act as")
        parser.add_argument("--url", "--base-url", dest="url", metavar="URL", help="hub URL (HTTP mode)")
        parser.add_argument(
            "--key", metavar="KEY", help=f"agent key (default: ${KEY_ENV}); prefer the variable: argv is public"
        )
        parser.add_argument(
            "--key-file", metavar="FILE", help="file holding the agent key (what `manage.py connect` writes)"
        )
        parser.add_argument(
            "--local",
            action="store_true",
            help="call the hub's services in this process (its database) instead of HTTP",
        )
        parser.add_argument("--tools", choices=("core", "all"), default="all", help="tool set (default all)")
        parser.add_argument(
            "--capabilities", default="", metavar="A,B", help="capabilities the agent declares when it registers"
        )
        parser.add_argument(
            "--channel",
            choices=("auto", "on", "off"),
            default="auto",
            help="wake an idle Claude Code session when a message for the agent arrives (its MCP channel "
            "notification, docs/agents.md): auto (default) when the client declares claude/channel, on, off; "
            "HTTP mode only",
        )
        parser.add_argument(
            "--state-dir",
            metavar="DIR",
            help="where the HTTP mode keeps the agent's poll cursor between runs "
            "(default $XDG_STATE_HOME/arc-hub/mcp, or ~/.local/state/arc-hub/mcp)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
        agent = str(options["agent"]).strip()
        if not agent:
            raise CommandError("--agent must name an agent")
        try:
            key = options["key"] or agent_key(options["key_file"])
        except OSError as exc:
            raise CommandError(f"cannot read --key-file {options['key_file']}: {exc.strerror}") from None
        capabilities = [c.strip() for c in str(options["capabilities"]).split(",") if c.strip()]
        backend: ClientBackend | LocalBackend
        if options["local"]:
            try:
                identity = identity_for(f"Bearer {key}" if key else None)
                backend = LocalBackend(agent, identity, capabilities=capabilities)
            except ArcError as exc:
                raise CommandError(f"arc error: {exc.message}") from None
            except ToolError as exc:  # the key belongs to another agent than --agent
                raise CommandError(str(exc)) from None
        else:
            state_dir = Path(options["state_dir"]) if options["state_dir"] else _state_home() / "arc-hub" / "mcp"
            backend = ClientBackend(
                agent, options["url"] or default_url(), key=key, capabilities=capabilities, state_dir=state_dir
            )
        try:
            anyio.run(self._start, backend)
        except ToolError as exc:  # the hub's refusal or "cannot reach the hub", as the tools would report it
            raise CommandError(f"cannot start as {agent}: {exc}") from None

        async def backend_for(ctx: Context) -> Backend:
            if isinstance(backend, LocalBackend):
                await backend.start()  # keep the agent live, as each request over HTTP does
            return backend

        server = build_server(backend_for, tools=options["tools"])
        if isinstance(backend, ClientBackend) and options["channel"] != "off":
            server.middleware.append(ChannelMiddleware(backend, options["channel"]))
        server.run("stdio")

    @staticmethod
    async def _start(backend: ClientBackend | LocalBackend) -> None:
        await backend.start()
