"""The SDK's side of ``/mcp``: the tool server as a Starlette app, and each request's backend.

Imported on the first ``/mcp`` request only (``mcpserver.http``): the SDK takes about a second
to import, and most hub processes never serve MCP over HTTP.
"""

from __future__ import annotations

from typing import Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings

from mcpserver.backend import Backend, hub_error
from mcpserver.http import PATH, SCOPE_KEY, Caller
from mcpserver.local import LocalBackend
from mcpserver.tools import build_server


async def backend_for(ctx: Context) -> Backend:
    """The in-process backend of the caller this request was resolved to (see ``McpEndpoint``)."""
    request = ctx.request_context.request
    caller = getattr(request, "scope", {}).get(SCOPE_KEY)
    if not isinstance(caller, Caller):  # only reachable if the endpoint was bypassed: fail closed
        raise hub_error("the request was not authenticated", 401)
    backend = LocalBackend(caller.agent_id, caller.identity, capabilities=caller.capabilities)
    await backend.start()
    return backend


def tool_server(tools: Literal["core", "all"]) -> tuple[MCPServer, Any]:
    """The tool server for ``tools`` and its stateless streamable-HTTP app (any worker answers any request)."""
    server: MCPServer = build_server(backend_for, tools=tools)
    app = server.streamable_http_app(
        streamable_http_path=PATH,
        stateless_http=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    return server, app
