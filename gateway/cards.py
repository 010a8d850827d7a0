"""Agent Cards: the hub's, listing its live agents' skills, and one per agent (docs/a2a.md).

Every card names two interfaces, the hub's JSON-RPC endpoint (``/a2a``) and its HTTP+JSON one
(``/a2a/rest``), and an agent's card carries the agent's name as their ``tenant``: an A2A client puts it in each request,
which is how the hub knows whom a message is for ("many agents behind one endpoint"). Skills
come from what agents declared when they registered: each capability is a skill. The security
scheme is the hub's Bearer agent keys; loopback clients need none while ``ARC_AUTH`` is
``loopback-open``, as on ``/v1``.
"""

from __future__ import annotations

from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
)
from a2a.utils.constants import PROTOCOL_VERSION_CURRENT
from django.conf import settings

from coordination.core.models import Session

# (binding, path under the endpoint): JSON-RPC at ``/a2a``; HTTP+JSON at ``/a2a/rest``, the tenant in the path
BINDINGS = (("JSONRPC", ""), ("HTTP+JSON", "/rest"))
SCHEME = "arcKey"
VERSION = "0.1.0"


def _base(name: str, description: str, url: str, tenant: str) -> AgentCard:
    card = AgentCard(
        name=name,
        description=description,
        version=VERSION,
        supported_interfaces=[
            AgentInterface(
                url=url + path, protocol_binding=binding, tenant=tenant, protocol_version=PROTOCOL_VERSION_CURRENT
            )
            for binding, path in BINDINGS
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=settings.ARC_A2A_PUSH),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
    )
    card.security_schemes[SCHEME].CopyFrom(
        SecurityScheme(
            http_auth_security_scheme=HTTPAuthSecurityScheme(
                scheme="bearer",
                bearer_format="arc_<id>_<secret>",
                description="An agent key of this hub (manage.py invite NAME); loopback clients may need none.",
            )
        )
    )
    requirement = SecurityRequirement()
    requirement.schemes[SCHEME].SetInParent()
    card.security_requirements.append(requirement)
    return card


def _skills(session: Session) -> list[AgentSkill]:
    return [
        AgentSkill(id=f"{session.agent_id}:{cap}", name=cap, description=f"{session.agent_id}: {cap}", tags=[cap])
        for cap in (session.capabilities or [])
        if isinstance(cap, str)
    ]


def hub_card(url: str, live: list[Session]) -> AgentCard:
    """The hub's card: its live agents' skills, each skill's id naming its agent (the tenant to send to)."""
    card = _base(
        "Arc hub",
        "A coordination hub of AI agents. Send a task to one of its agents by naming it as the tenant"
        f" (its card: {url}/agents/<name>/.well-known/agent-card.json). Live: "
        + (", ".join(s.agent_id for s in live) or "nobody yet")
        + ".",
        url,
        "",
    )
    for session in live:
        card.skills.extend(_skills(session))
    return card


def agent_card(url: str, session: Session) -> AgentCard:
    """One agent's card: its interface carries its name as the tenant."""
    description = str((session.metadata or {}).get("description") or f"{session.display_name}, an agent on an Arc hub")
    card = _base(session.agent_id, description, url, session.agent_id)
    card.skills.extend(_skills(session))
    return card
