"""Sessions and presence: who is connected, and what happens to the work of those who left."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from coordination.core import db, events, selectors
from coordination.core.errors import Conflict, Forbidden, NotFound
from coordination.core.models import Session
from coordination.core.parsing import agent_name, repository_name
from coordination.core.services import leases

log = logging.getLogger("arc.services")
WORKSPACE_KEYS = ("repo", "worktree")  # what an agent declares of where it works (session metadata)


def session_create(
    *,
    agent_id: str,
    display_name: str | None = None,
    capabilities: Iterable[str] = (),
    metadata: dict[str, Any] | None = None,
    replace: bool = False,
) -> Session:
    """Open the agent's one active session.

    An active, fresh session makes this a ``Conflict`` unless ``replace``; a stale
    one (older than the presence TTL) is replaced either way, as in Arc.
    """
    agent_id = agent_name(agent_id, "agent_id")
    ttl = timedelta(seconds=settings.ARC_PRESENCE_TTL_SEC)
    now = timezone.now()
    with transaction.atomic():
        # One registration per agent at a time: SQLite's single writer already does this;
        # on PostgreSQL an advisory lock keyed by the agent id does (there may be no row to lock).
        db.serialize_on(f"session:{agent_id}")
        current = Session.objects.filter(agent_id=agent_id, active=True).first()
        metadata = dict(metadata or {})
        if current is not None:
            if current.last_seen >= now - ttl and not replace:
                raise Conflict("agent_id already has an active session")
            Session.objects.filter(pk=current.pk, active=True).update(active=False)
            # The workspace it declared (repository, worktree) outlives a re-registration that does not
            # say it again: its locks keep their names (``leases.lock_name``).
            kept = current.metadata if isinstance(current.metadata, dict) else {}
            metadata = {**{k: kept[k] for k in WORKSPACE_KEYS if k in kept}, **metadata}
        try:
            with transaction.atomic():
                session = Session.objects.create(
                    session_id=str(uuid.uuid4()),
                    agent_id=agent_id,
                    display_name=display_name or agent_id,
                    capabilities=list(capabilities),
                    metadata=metadata,
                    created_at=now,
                    last_seen=now,
                    active=True,
                )
        except IntegrityError as exc:  # the partial unique index is the last word
            raise Conflict("agent_id already has an active session") from exc
        events.publish("presence", {"agent_id": agent_id, "state": "live", "session": session.as_wire()})
        transaction.on_commit(selectors.live_agents_changed)
        _touched.pop(agent_id, None)  # a new session: the next activity refreshes it
        return session


def session_close(*, session_id: str, actor: str | None = None) -> Session:
    """Close a session; an ``actor`` (a key's agent) may close only its own (``Forbidden`` otherwise)."""
    with transaction.atomic():
        sessions = Session.objects.filter(pk=session_id, active=True)
        if actor is not None:
            owner = sessions.values_list("agent_id", flat=True).first()
            if owner is not None and owner != actor:
                raise Forbidden(f"session {session_id} belongs to {owner}; a key may close only {actor}'s sessions")
            sessions = sessions.filter(agent_id=actor)
        if not sessions.update(active=False):
            raise NotFound("session not found")
        session = Session.objects.get(pk=session_id)
        events.publish("presence", {"agent_id": session.agent_id, "state": "gone", "session": session.as_wire()})
        transaction.on_commit(selectors.live_agents_changed)
        return session


_TOUCH_EVERY_SEC = 1.0
_touched: dict[str, float] = {}  # agent id → when this process last refreshed its presence


def session_workspace_declare(*, agent_id: str, repo: str, worktree: str) -> None:
    """Record in ``agent_id``'s live session which repository it works in and where its working tree is
    (``metadata.repo``, ``metadata.worktree``): its file locks are then named from the repository's root
    (``leases.lock_name``). Nothing happens when it has no live session or already says so."""
    repo = repository_name(repo)
    session = Session.objects.live(settings.ARC_PRESENCE_TTL_SEC).filter(agent_id=agent_id).first()
    if session is None:
        return
    metadata = dict(session.metadata) if isinstance(session.metadata, dict) else {}
    if metadata.get("repo") == repo and metadata.get("worktree") == worktree:
        return
    metadata.update(repo=repo, worktree=worktree)
    Session.objects.filter(pk=session.pk).update(metadata=metadata)


def touches_forget() -> None:
    _touched.clear()


def session_touch(*, agent_id: str) -> None:
    """Refresh the agent's presence (``last_seen``), at most once a second per agent and process."""
    now = time.monotonic()
    if now - _touched.get(agent_id, -_TOUCH_EVERY_SEC) < _TOUCH_EVERY_SEC:
        return
    if len(_touched) > 10_000:
        _touched.clear()
    _touched[agent_id] = now
    Session.objects.filter(agent_id=agent_id, active=True).update(last_seen=timezone.now())


def sessions_prune_expired() -> list[Session]:
    """Deactivate sessions past the presence TTL and release their work.

    For each session this call deactivates (a conditional update, so two workers
    never both recover the same agent), the agent's active claims and locks are
    released and a recovery ``notice`` is posted for each, as Arc does.
    """
    ttl = settings.ARC_PRESENCE_TTL_SEC
    expired: list[Session] = []
    for candidate in list(Session.objects.stale(ttl)):
        with transaction.atomic():
            cutoff = timezone.now() - timedelta(seconds=ttl)
            won = Session.objects.filter(pk=candidate.pk, active=True, last_seen__lt=cutoff).update(active=False)
            if not won:
                continue
            candidate.active = False
            expired.append(candidate)
            events.publish(
                "presence", {"agent_id": candidate.agent_id, "state": "expired", "session": candidate.as_wire()}
            )
            leases.leases_recover(agent_id=candidate.agent_id)
        log.info("session expired: agent=%s session=%s", candidate.agent_id, candidate.session_id)
    return expired


def sessions_roster(*, capability: str | None = None) -> list[dict[str, Any]]:
    """The live agents (``capability`` filters), as the wire shows them, after expiring stale sessions."""
    sessions_prune_expired()
    return [session.as_wire() for session in selectors.agents_live(capability=capability)]
