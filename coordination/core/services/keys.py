"""Agent keys (docs/access.md): minted once, stored as a hash, revoked at once."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from coordination.core import events
from coordination.core.errors import Invalid, NotFound, Unauthorized
from coordination.core.models import AgentKey, Room
from coordination.core.parsing import agent_name, fits, required_text

KEY_TOUCH_EVERY_SEC = 60  # last_used_at is kept to the minute, not written on every request


def key_mint(
    *,
    agent_id: str,
    rooms: Iterable[str] = (),
    expires: str = "never",
    admin: bool = False,
    label: str = "",
    created_by: str = "",
) -> tuple[AgentKey, str]:
    """Mint a key for ``agent_id``. Returns the row and the plaintext key, which is never stored
    (only its SHA-256) and so can be shown only this once."""
    agent_id, room_names, seconds = key_check(agent_id=agent_id, rooms=rooms, expires=expires)
    fits(AgentKey, label=label, created_by=created_by)
    now = timezone.now()
    prefix = secrets.token_hex(6)
    plaintext = f"arc_{prefix}_{secrets.token_urlsafe(32)}"
    key = AgentKey.objects.create(
        prefix=prefix,
        digest=key_digest(plaintext),
        agent_id=agent_id,
        rooms=room_names,
        is_admin=admin,
        label=label,
        created_by=created_by,
        created_at=now,
        expires_at=now + timedelta(seconds=seconds) if seconds is not None else None,
    )
    return key, plaintext


def key_check(*, agent_id: str, rooms: Iterable[str] = (), expires: str = "never") -> tuple[str, list[str], int | None]:
    """What ``key_mint`` would mint with: the agent id, the room names and the lifetime in seconds
    (``None``: never expires); ``Invalid`` when one of them is not acceptable."""
    agent_id = agent_name(agent_id, "agent_id")
    fits(AgentKey, agent_id=agent_id)
    if expires not in AgentKey.EXPIRY_CHOICES:
        raise Invalid(f"expires must be one of {', '.join(AgentKey.EXPIRY_CHOICES)}")
    room_names = sorted({required_text(room, "rooms[]") for room in rooms})
    unknown = [name for name in room_names if not Room.objects.filter(pk=name).exists()]
    if unknown:
        raise Invalid(f"unknown rooms: {', '.join(unknown)}")
    return agent_id, room_names, AgentKey.EXPIRY_CHOICES[expires]


def key_revoke(*, key_id: str) -> AgentKey:
    """Revoke a key at once: its next request gets 401, its open streams and sockets close."""
    with transaction.atomic():
        key = AgentKey.objects.filter(prefix=key_id).first()
        if key is None:
            raise NotFound(f"no key {key_id}")
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            events.publish("key", {"action": "revoked", "key_id": key.prefix, "agent_id": key.agent_id})
        return key


def key_find(*, reference: str) -> AgentKey:
    """The key ``reference`` names: its id (``key_id``, the part after ``arc_``) or the whole key.

    A whole key must be the real one (its hash matches), so a guessed secret finds nothing;
    ``NotFound`` when nothing matches.
    """
    reference = reference.strip()
    parts = reference.split("_", 2)
    if len(parts) == 3 and parts[0] == "arc":
        key = AgentKey.objects.filter(prefix=parts[1]).first()
        if key is None or not hmac.compare_digest(key.digest, key_digest(reference)):
            raise NotFound("no key matches the key given (its id is known, but not with that secret)")
        return key
    key = AgentKey.objects.filter(prefix=reference.removeprefix("arc_")).first()
    if key is None:
        raise NotFound(f"no key {reference}")
    return key


def keys_revoke_agent(*, agent_id: str) -> list[AgentKey]:
    """Revoke every usable key of ``agent_id``; the keys revoked (none: ``NotFound``)."""
    prefixes = list(AgentKey.objects.usable().filter(agent_id=agent_id).values_list("prefix", flat=True))
    if not prefixes:
        raise NotFound(f"{agent_id} has no live key")
    return [key_revoke(key_id=prefix) for prefix in sorted(prefixes)]


def key_authenticate(*, presented: str) -> AgentKey:
    """The usable key ``presented`` (``arc_<prefix>_<secret>``), or ``Unauthorized``.

    Records ``last_used_at`` (to the minute)."""
    parts = presented.split("_")
    if len(parts) < 3 or parts[0] != "arc":
        raise Unauthorized("malformed agent key (expected arc_<id>_<secret>)")
    key = AgentKey.objects.filter(prefix=parts[1]).first()
    if key is None or not hmac.compare_digest(key.digest, key_digest(presented)):
        raise Unauthorized("unknown agent key")
    now = timezone.now()
    if key.revoked_at is not None:
        raise Unauthorized("this agent key was revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthorized("this agent key has expired")
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() >= KEY_TOUCH_EVERY_SEC:
        AgentKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def key_digest(plaintext: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(plaintext.encode()).hexdigest()
