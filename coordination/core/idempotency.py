"""Retries that never duplicate: the first answer to a keyed request is kept, and a repeat gets it again.

A client on a flaky link (a sandbox, a laptop, a tunnel) that timed out after the hub stored its
post retries it with the same idempotency key; the hub answers what it answered the first time,
marked ``replayed``, and changes nothing (docs/protocol.md, "Retries"). A key belongs to the agent
acting; the same key with another request is a 409 naming the key.

``once`` runs the operation and stores its answer in one transaction, behind a unique
``(agent, key)`` row inserted first: of concurrent repeats, one inserts and runs; the others wait
on the row (PostgreSQL) or on the single writer (SQLite), then find it and replay. A domain error
is an answer too (a repeat gets the same error), except those that depend on the moment rather
than the request — an expired key (401), the rate limit (429) — which are not kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from coordination.core import errors
from coordination.core.errors import ArcError, Conflict, Invalid
from coordination.core.models import IdempotencyRecord

MAX_KEY_CHARS = 200
# Refusals that say nothing about the request itself: a retry may well be accepted.
NOT_KEPT = frozenset({401, 429})
ERRORS_BY_STATUS: dict[int, type[ArcError]] = {
    400: errors.Invalid,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
}

T = TypeVar("T")


def key_check(key: Any) -> str:
    """An idempotency key as sent: 1 to 200 printable characters."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS or not key.isprintable():
        raise Invalid(f"an idempotency key must be 1 to {MAX_KEY_CHARS} printable characters")
    return key


def fingerprint(operation: str, args: Any) -> str:
    """The request's identity: its operation and its input, as canonical JSON."""
    canonical = json.dumps([operation, args], sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def once(
    *,
    agent: str,
    key: str,
    operation: str,
    args: Any,
    run: Callable[[], T],
    dump: Callable[[T], Any],
    load: Callable[[Any], T],
) -> T:
    """``run()``'s answer, run at most once per ``(agent, key)``; a repeat gets ``load(stored)`` back.

    ``dump`` turns the answer into JSON to keep; ``load`` turns it back, marked as replayed.
    """
    key = key_check(key)
    digest = fingerprint(operation, args)
    now = timezone.now()
    refusal: ArcError | None = None
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    agent_id=agent,
                    key=key,
                    fingerprint=digest,
                    answer={},
                    created_at=now,
                    expires_at=now + timedelta(seconds=settings.ARC_IDEMPOTENCY_TTL_SEC),
                )
        except IntegrityError:
            return _replay(agent, key, digest, load)
        try:
            with transaction.atomic():  # the operation's effects: rolled back alone if it refuses
                answer = run()
        except ArcError as exc:
            if exc.status in NOT_KEPT:
                raise  # and the record goes with the transaction: the key is free for the retry
            record.answer = {"error": exc.message, "status": exc.status}
            refusal = exc
        else:
            record.answer = {"answer": dump(answer)}
        record.save(update_fields=["answer"])
    if refusal is not None:
        raise refusal  # after the commit that keeps it
    return answer


def _replay(agent: str, key: str, digest: str, load: Callable[[Any], T]) -> T:
    record = IdempotencyRecord.objects.filter(agent_id=agent, key=key).first()
    if record is None:  # expired and swept between the insert and this read: rare, and the retry works
        raise Conflict(f"idempotency key {key} is being reused as it expires; retry with it")
    if record.fingerprint != digest:
        raise Conflict(f"idempotency key {key} was used for another request; use a new key for a new request")
    stored = record.answer
    if "error" in stored:
        raise ERRORS_BY_STATUS.get(int(stored["status"]), Invalid)(str(stored["error"]))
    return load(stored["answer"])


def records_expire() -> int:
    """Delete the records past their retention (run by the sweeper); how many went."""
    deleted, _ = IdempotencyRecord.objects.filter(expires_at__lt=timezone.now()).delete()
    return deleted
