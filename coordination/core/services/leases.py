"""Claims and file locks: leases with a TTL, decided by the database, whose holders hear when they end."""

from __future__ import annotations

import posixpath
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from coordination.core import events, selectors
from coordination.core.errors import Invalid, NotFound
from coordination.core.models import Claim, Lock, Message
from coordination.core.parsing import agent_name, repository_name, required_text
from coordination.core.services import messages, rooms, sessions, tasks

MIN_TTL_SEC = 5  # the shortest lease (claims, locks, delivery leases)
DEFAULT_TTL_SEC = 300


def claim_acquire(
    *,
    owner_agent_id: str,
    claim_key: str | None = None,
    task_message_id: int | None = None,
    thread_id: str | None = None,
    ttl_sec: int = DEFAULT_TTL_SEC,
    metadata: dict[str, Any] | None = None,
) -> tuple[Claim, bool]:
    """Acquire, refresh (same owner) or be denied a claim. Returns ``(claim, acquired)``."""
    owner_agent_id = agent_name(owner_agent_id, "owner_agent_id")
    if not claim_key:
        if task_message_id is None:
            raise Invalid("claim_key or task_message_id is required")
        claim_key = f"task-{task_message_id}"
    values = {"thread_id": thread_id or None, "task_message_id": task_message_id, "metadata": dict(metadata or {})}
    with transaction.atomic():
        claim, acquired = _lease_acquire(Claim, claim_key, owner_agent_id, ttl_sec, values)
        if acquired and task_message_id is not None:
            tasks.task_begin(task_message_id, owner_agent_id)  # claiming a task starts it
    sessions.session_touch(agent_id=owner_agent_id)
    return claim, acquired


def claim_refresh(*, claim_key: str, owner_agent_id: str, ttl_sec: int = DEFAULT_TTL_SEC) -> Claim:
    claim = _lease_refresh(Claim, claim_key, owner_agent_id, ttl_sec)
    if claim is None:
        raise NotFound("claim not found or not owned by owner_agent_id")
    sessions.session_touch(agent_id=owner_agent_id)
    return claim


def claim_release(*, claim_key: str, agent_id: str) -> Claim:
    claim = _lease_release(Claim, claim_key, agent_id)
    if claim is None:
        raise NotFound("claim not found or not owned by agent_id")
    sessions.session_touch(agent_id=agent_id)
    return claim


def lock_name(*, agent_id: str, file_path: str) -> str:
    """The name ``agent_id``'s lock on ``file_path`` is held under (docs/agents.md, "Worktrees").

    An agent whose live session declares its repository (``metadata.repo``, any string naming it,
    and ``metadata.worktree``, the absolute root of its working tree) locks files as
    ``<repo>:<path from the repository root>``: an absolute path inside its worktree, or a relative
    one, so the agents in other worktrees (or clones) of the same repository meet the same lock.
    Any other path, and every path of an agent that declares no repository, is the name as given.
    """
    session = selectors.session_live(agent_id)
    workspace = session.metadata if session is not None and isinstance(session.metadata, dict) else {}
    repo, worktree = workspace.get("repo"), workspace.get("worktree")
    if not isinstance(repo, str) or not repo:
        return file_path
    repo = repository_name(repo)  # (declared at registration too, where it was not cleaned)
    if file_path.startswith(f"{repo}:"):
        return file_path
    path = file_path
    if posixpath.isabs(path):
        if not isinstance(worktree, str) or not posixpath.isabs(worktree):
            return file_path
        path = posixpath.relpath(posixpath.normpath(path), posixpath.normpath(worktree))
    path = posixpath.normpath(path)
    if path == "." or path.startswith(".."):
        return file_path  # the worktree itself, or outside it
    return f"{repo}:{path}"


def lock_acquire(
    *, agent_id: str, file_path: str, ttl_sec: int = DEFAULT_TTL_SEC, metadata: dict[str, Any] | None = None
) -> tuple[Lock, bool]:
    """Acquire, refresh (same holder) or be denied a file lock. Returns ``(lock, acquired)``."""
    agent_id = agent_name(agent_id, "agent_id")
    file_path = lock_name(agent_id=agent_id, file_path=required_text(file_path, "file_path"))
    lock, acquired = _lease_acquire(Lock, file_path, agent_id, ttl_sec, {"metadata": dict(metadata or {})})
    sessions.session_touch(agent_id=agent_id)
    return lock, acquired


def lock_refresh(*, file_path: str, agent_id: str, ttl_sec: int = DEFAULT_TTL_SEC) -> Lock:
    lock = _lease_refresh(Lock, lock_name(agent_id=agent_id, file_path=file_path), agent_id, ttl_sec)
    if lock is None:
        raise NotFound("lock not found or not owned by agent_id")
    sessions.session_touch(agent_id=agent_id)
    return lock


def lock_release(*, file_path: str, agent_id: str) -> Lock:
    lock = _lease_release(Lock, lock_name(agent_id=agent_id, file_path=file_path), agent_id)
    if lock is None:
        raise NotFound("lock not found or not owned by agent_id")
    sessions.session_touch(agent_id=agent_id)
    return lock


def claim_force_release(*, claim_key: str, actor: str) -> Claim:
    """An admin takes back a claim from whoever holds it (dashboard, Django admin).

    The holder is told (a direct ``notice``) and a ``released`` claim event says who
    forced it. ``NotFound`` when no such claim is held now.
    """
    return _lease_force_release(Claim, claim_key, actor)


def lock_force_release(*, file_path: str, actor: str) -> Lock:
    """An admin takes back a file lock from its holder; as ``claim_force_release``."""
    return _lease_force_release(Lock, file_path, actor)


def _lease_force_release(model: type[Claim] | type[Lock], key: str, actor: str) -> Any:
    now = timezone.now()
    with transaction.atomic():
        # Only a lease held now: a lapsed one is anyone's already, and the sweeper tells its holder.
        held = model.objects.filter(pk=key).active(now)
        lease = held.first()
        # Conditional on the holder read just now: a release or takeover in between wins.
        if lease is None or not held.held_by(lease.holder).update(released_at=now):
            raise NotFound(f"no {model.__name__.lower()} {key} is held")
        lease.refresh_from_db()
        noun, what = _lease_names(lease)
        _lease_event(lease, "released", forced_by=actor)
        _lease_notice(
            lease,
            f"Your {what} was released by {actor}; others may take it now.",
            {f"{noun}_released": key, "released_by": actor},
        )
        return lease


def _lease_names(lease: Claim | Lock) -> tuple[str, str]:
    """``("claim", "claim K")`` or ``("lock", "lock on PATH")``: how notices name a lease."""
    if isinstance(lease, Claim):
        return "claim", f"claim {lease.pk}"
    return "lock", f"lock on {lease.pk}"


def _lease_notice(lease: Claim | Lock, body: str, metadata: dict[str, Any]) -> None:
    """Tell a lease's holder directly what became of it (a ``notice`` from the hub, in its thread)."""
    messages.message_post(
        from_agent=messages.SYSTEM_AGENT,
        to_agent=lease.holder,
        kind=Message.Kind.NOTICE,
        body=body,
        thread_id=getattr(lease, "thread_id", None),
        metadata=metadata,
        touch=False,
    )


def _lease_acquire(
    model: type[Claim] | type[Lock], key: str, owner: str, ttl_sec: int, values: dict[str, Any]
) -> tuple[Any, bool]:
    """The claim/lock state machine of Arc (acquire, same-owner refresh, deny, take over).

    Three conditional statements, each decided by the database: take over a released
    or expired row; else extend our own live row; else insert a new row, where the
    primary key lets exactly one concurrent inserter win. Anything else is a denial.
    """
    _ttl_check(ttl_sec)
    now = timezone.now()
    expires_at = now + timedelta(seconds=ttl_sec)
    with transaction.atomic():
        rows = model.objects.filter(pk=key)
        action: str | None = None
        holding = {model.HOLDER_FIELD: owner, model.STARTED_FIELD: now}
        _lease_tell_expired(model, key, now, taker=owner)  # the holder hears first
        if rows.free(now).update(
            **holding,
            expires_at=expires_at,
            released_at=None,
            expiry_noticed_at=None,
            **values,
        ):
            action = "acquired"  # took over a released or expired lease
        elif rows.active(now).held_by(owner).update(expires_at=expires_at):
            action = "refreshed"
        else:
            try:
                with transaction.atomic():
                    model.objects.create(pk=key, **holding, expires_at=expires_at, **values)
                action = "acquired"
            except IntegrityError:
                action = None  # someone else holds it (or just won it)
        lease = model.objects.get(pk=key)
        if action is not None:
            _lease_event(lease, action)
        acquired = action is not None
        return lease, acquired


def _lease_refresh(model: type[Claim] | type[Lock], key: str, owner: str, ttl_sec: int) -> Any:
    _ttl_check(ttl_sec)
    now = timezone.now()
    with transaction.atomic():
        updated = (
            model.objects.filter(pk=key).active(now).held_by(owner).update(expires_at=now + timedelta(seconds=ttl_sec))
        )
        if not updated:
            return None
        lease = model.objects.get(pk=key)
        _lease_event(lease, "refreshed")
        return lease


def _lease_release(model: type[Claim] | type[Lock], key: str, owner: str) -> Any:
    """Release a held lease. Releasing an already released lease returns it unchanged (Arc)."""
    with transaction.atomic():
        mine = model.objects.filter(pk=key).held_by(owner)
        released = mine.unreleased().update(released_at=timezone.now())
        lease = mine.first()
        if released and lease is not None:
            _lease_event(lease, "released")
        return lease


def leases_recover(*, agent_id: str) -> None:
    """Release the claims and locks of an agent whose session expired, with a recovery ``notice`` for each (Arc)."""
    now = timezone.now()
    for claim in Claim.objects.active(now).held_by(agent_id):
        if Claim.objects.filter(pk=claim.pk).held_by(agent_id).unreleased().update(released_at=now):
            claim.released_at = now
            _lease_event(claim, "recovered", stale_agent_id=agent_id)
            messages.message_post(
                from_agent=messages.SYSTEM_AGENT,
                channel=rooms.thread_room(claim.thread_id),
                kind="notice",
                body=f"Recovered stale claim {claim.claim_key} from {agent_id}. Work is available for pickup.",
                reply_to=claim.task_message_id,
                thread_id=claim.thread_id,
                metadata={
                    "recovery": True,
                    "stale_agent_id": agent_id,
                    "claim_key": claim.claim_key,
                    "task_message_id": claim.task_message_id,
                },
                touch=False,
            )
    for lock in Lock.objects.active(now).held_by(agent_id):
        if Lock.objects.filter(pk=lock.pk).held_by(agent_id).unreleased().update(released_at=now):
            lock.released_at = now
            _lease_event(lock, "recovered", stale_agent_id=agent_id)
            thread_id = lock.metadata.get("thread_id") if isinstance(lock.metadata, dict) else None
            thread_id = None if thread_id is None else str(thread_id)
            fallback = lock.metadata.get("channel") if isinstance(lock.metadata, dict) else None
            messages.message_post(
                from_agent=messages.SYSTEM_AGENT,
                channel=rooms.thread_room(thread_id, fallback=str(fallback) if fallback else "general"),
                kind="notice",
                body=f"Recovered stale lock on {lock.file_path} from {agent_id}. The file is available for pickup.",
                thread_id=thread_id,
                metadata={"recovery": True, "stale_agent_id": agent_id, "file_path": lock.file_path},
                touch=False,
            )


def leases_tell_expired() -> int:
    """Tell each holder whose claim or lock ran out (a direct ``notice`` and an ``expired``
    event), once. Run by the sweeper; a taker tells the holder itself before taking over
    (``_lease_acquire``), so the holder always hears before anyone else wins it."""
    now = timezone.now()
    told = 0
    for model in (Claim, Lock):
        lapsed = model.objects.lapsed(now).filter(expiry_noticed_at__isnull=True)
        for key in list(lapsed.values_list("pk", flat=True)):
            with transaction.atomic():
                told += _lease_tell_expired(model, key, now)
    return told


def _lease_tell_expired(model: type[Claim] | type[Lock], key: str, now: datetime, *, taker: str | None = None) -> bool:
    """If the lease ``key`` ran out and its holder was not told yet, tell it (a conditional
    update marks it told, so concurrent sweepers and takers tell once). A holder taking
    back its own lapsed lease needs no notice."""
    lapsed = model.objects.filter(pk=key).lapsed(now).filter(expiry_noticed_at__isnull=True)
    lease = lapsed.first()
    if lease is None or lease.holder == taker:
        return False
    if not lapsed.held_by(lease.holder).update(expiry_noticed_at=now):
        return False
    noun, what = _lease_names(lease)
    expired_at = lease.as_wire()["expires_at"]
    _lease_event(lease, "expired")
    _lease_notice(
        lease,
        f"Your {what} expired at {expired_at} and others may take it now; acquire it again if you still need it.",
        {f"{noun}_expired": key, "expired_at": expired_at},
    )
    return True


def _lease_event(lease: Claim | Lock, action: str, **extra: Any) -> None:
    """Publish a ``claim`` or ``lock`` event (after commit) for a lease's state change."""
    name = "claim" if isinstance(lease, Claim) else "lock"
    events.publish(name, {"action": action, name: lease.as_wire(), **extra})


def _ttl_check(ttl_sec: int) -> None:
    if ttl_sec < MIN_TTL_SEC:
        raise Invalid(f"ttl_sec must be at least {MIN_TTL_SEC}")
