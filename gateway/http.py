"""``/a2a``: the Agent2Agent protocol's JSON-RPC binding and Agent Cards, inside the hub's ASGI app (docs/a2a.md).

Who is calling is decided by the same edge as ``/v1`` and ``/mcp`` (``coordination.core.edge``):
a Bearer agent key acts as its agent (401 for a bad, revoked or expired key), a loopback client
without a key under ``ARC_AUTH=loopback-open`` may send, a remote client needs a key and remote
access on; refusals are Arc error envelopes. The A2A SDK's own routes then parse the request and
call ``gateway.handler.HubRequestHandler``. Nothing is kept in a worker, so any worker answers.

Paths: ``GET /.well-known/agent-card.json`` (the hub's card), ``GET
/a2a/agents/<name>/.well-known/agent-card.json`` (an agent's), ``POST /a2a`` (JSON-RPC), and the
HTTP+JSON binding under ``/a2a/rest/<tenant>/`` (``message:send``, ``tasks/<id>``, ...).
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from coordination.core import edge, selectors
from coordination.core.errors import ArcError, NotFound

PATH = "/a2a"
WELL_KNOWN = "/.well-known/agent-card.json"
SCOPE_KEY = "arc.a2a.identity"


def _is_ours(path: str) -> bool:
    return path in (WELL_KNOWN, PATH) or path.startswith(PATH + "/")


class A2AEndpoint:
    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: edge.Scope, receive: Any, send: Any) -> None:
        send = edge.stamped(send)
        try:
            identity = await edge.identity_of(scope)
            if identity.key_id is None:
                edge.check_host(edge.headers_of(scope), PATH)
            receive = await edge.checked_body(scope, receive, "the JSON-RPC request")
        except ArcError as exc:
            await edge.refuse(send, exc.status, exc.message)
            return
        await self.app(scope)({**scope, SCOPE_KEY: identity}, receive, send)

    def app(self, scope: edge.Scope) -> Any:
        if self._app is None:
            self._app = _starlette_app()  # the SDK's import takes a while: only once /a2a is used
        return self._app


def _starlette_app() -> Any:
    from a2a.server.request_handlers.response_helpers import agent_card_to_dict
    from a2a.server.routes.common import DefaultServerCallContextBuilder
    from a2a.server.routes.jsonrpc_routes import create_jsonrpc_routes
    from a2a.server.routes.rest_routes import create_rest_routes
    from a2a.types import AgentCard
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Mount, Route

    from gateway import cards
    from gateway.handler import IDENTITY, PATH_TENANT, HubRequestHandler

    class Builder(DefaultServerCallContextBuilder):
        def build(self, request: Request) -> Any:
            context = super().build(request)
            context.state[IDENTITY] = request.scope[SCOPE_KEY]
            if "agent" in request.path_params:
                context.state[PATH_TENANT] = str(request.path_params["agent"])
            return context

    def endpoint_url(request: Request) -> str:
        trusted = getattr(settings, "SECURE_PROXY_SSL_HEADER", None) is not None
        return public_base(str(request.base_url), request.headers.get("x-forwarded-proto"), trusted) + PATH

    def card_response(card: AgentCard) -> Response:
        return JSONResponse(agent_card_to_dict(card))

    async def hub_card(request: Request) -> Response:
        live = await sync_to_async(selectors.agents_live)()
        return card_response(cards.hub_card(endpoint_url(request), live))

    async def agent_card(request: Request) -> Response:
        name = str(request.path_params["agent"])
        session = await sync_to_async(selectors.session_live)(name)
        if session is None:
            error = NotFound(f"no agent {name[:200]} is live on this hub")
            return JSONResponse({"ok": False, "error": error.message}, status_code=error.status)
        return card_response(cards.agent_card(endpoint_url(request), session))

    handler = HubRequestHandler()
    routes = [
        Route(WELL_KNOWN, hub_card, methods=["GET"]),
        Route(PATH + "/agents/{agent}" + WELL_KNOWN, agent_card, methods=["GET"]),
        # The 0.3 method names too (the SDK's compatibility mode): a 0.3 client, which has no tenant, sends to
        # an agent's own endpoint, /a2a/agents/<name>.
        *create_jsonrpc_routes(handler, rpc_url=PATH, context_builder=Builder(), enable_v0_3_compat=True),
        *create_jsonrpc_routes(
            handler, rpc_url=PATH + "/agents/{agent}", context_builder=Builder(), enable_v0_3_compat=True
        ),
        # The SDK's REST routes, mounted (not prefixed): a tenant's are then at /a2a/rest/<tenant>/..., as its
        # client builds them from an interface's url and tenant.
        Mount(PATH + "/rest", routes=create_rest_routes(handler, context_builder=Builder(), enable_v0_3_compat=True)),
    ]
    return Starlette(routes=routes)


def public_base(base_url: str, forwarded_proto: str | None, trust_proxy: bool) -> str:
    """The hub's URL as a client outside sees it: behind a TLS-terminating proxy the hub is reached
    over plain HTTP, and says ``https`` in its cards only when it trusts the proxy's ``X-Forwarded-Proto``
    (``ARC_PRODUCTION`` with ``ARC_BEHIND_PROXY``, docs/deployment.md)."""
    base = base_url.rstrip("/")
    if trust_proxy and forwarded_proto == "https" and base.startswith("http://"):
        base = "https://" + base[len("http://") :]
    return base


def mount(app: Any) -> Any:
    """``app`` with ``/a2a`` and the well-known card answered by the A2A endpoint."""
    endpoint = A2AEndpoint()

    async def router(scope: edge.Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and _is_ours(scope.get("path", "")):
            await endpoint(scope, receive, send)
        else:
            await app(scope, receive, send)

    return router
