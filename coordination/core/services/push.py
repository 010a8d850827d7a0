"""A2A push notifications: the webhooks A2A clients set for their tasks (docs/a2a.md, push notifications).

The gateway's pusher (``gateway.push``) delivers each change of a task's A2A state to them and records
what it delivered here (``push_sent``); the URL guard is the gateway's, applied before these are called.
"""

from __future__ import annotations

import secrets

from django.db import IntegrityError, transaction
from django.utils import timezone

from coordination.core.errors import Conflict, NotFound
from coordination.core.models import PushConfig

MAX_PER_TASK = 10


def push_config_set(
    *,
    task_id: int,
    config_id: str,
    owner: str,
    key_id: str | None,
    rooms: list[str],
    url: str,
    token: str,
    auth_scheme: str,
    auth_credentials: str,
) -> PushConfig:
    """Set (or replace) the webhook ``config_id`` of a task for ``owner``; a token is made when none is given
    (every delivery is signed with it). At most ``MAX_PER_TASK`` per task (``Conflict``)."""
    config_id = config_id or secrets.token_hex(8)
    with transaction.atomic():
        config = PushConfig.objects.select_for_update().filter(task_id=task_id, config_id=config_id).first()
        if config is not None and config.owner != owner:
            raise Conflict(f"task {task_id} already has a push config {config_id}, set by another client")
        if config is None and PushConfig.objects.filter(task_id=task_id).count() >= MAX_PER_TASK:
            raise Conflict(f"task {task_id} has {MAX_PER_TASK} push configs already: delete one first")
        config = config or PushConfig(task_id=task_id, config_id=config_id, owner=owner)
        config.key_id, config.rooms, config.url = key_id, rooms, url
        config.token = token or secrets.token_urlsafe(24)
        config.auth_scheme, config.auth_credentials = auth_scheme, auth_credentials
        config.sent_state, config.attempts, config.last_error, config.done = "", 0, "", False  # (told afresh)
        try:
            config.save()
        except IntegrityError:
            raise Conflict(f"task {task_id} got a push config {config_id} at the same moment: try again") from None
    return config


def push_config_delete(*, task_id: int, config_id: str, owner: str) -> None:
    deleted, _ = PushConfig.objects.filter(task_id=task_id, config_id=config_id, owner=owner).delete()
    if not deleted:
        raise NotFound(f"task {task_id} has no push config {config_id} of yours")


def push_sent(*, pk: int, state: str, final: bool, attempts: int, error: str = "") -> None:
    """What a delivery came to: ``state`` told (or given up on, with ``error``); ``final``: nothing more to tell."""
    PushConfig.objects.filter(pk=pk).update(
        sent_state=state, sent_at=timezone.now(), attempts=attempts, last_error=error[:2000], done=final
    )


def push_forget(*, pk: int, why: str) -> None:
    """Stop telling a webhook (its client's key was revoked, or its task is gone): kept, marked done."""
    PushConfig.objects.filter(pk=pk).update(done=True, last_error=why[:2000])
