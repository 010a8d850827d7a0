"""Jobs done in one place at a time across the hub's processes: the sweeper, each relay spool.

A duty is a row (``Duty``) held by one process until its lease runs out. ``duty_hold``
takes or renews it by a conditional ``UPDATE`` (the holder itself, or anyone once it has
expired); a missing row is created, and a unique key decides two creators. A process that
dies simply stops renewing: after ``ttl_sec`` another takes over.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from coordination.core.models import Duty


def duty_hold(name: str, holder: str, *, ttl_sec: float, is_gone: Callable[[str], bool] | None = None) -> bool:
    """Take or renew duty ``name`` for ``holder`` for ``ttl_sec``; ``False`` while another holds it.

    ``is_gone(other_holder)``: whether the current holder is known to be dead (a process of
    this machine that no longer exists); its duty is then taken at once, not after its lease.
    """
    now = timezone.now()
    expires = now + timedelta(seconds=ttl_sec)
    if Duty.objects.filter(name=name, holder=holder).update(expires_at=expires):
        return True  # renewed (the usual case: one statement)
    if Duty.objects.filter(name=name, expires_at__lt=now).update(holder=holder, since=now, expires_at=expires):
        return True  # taken over from a holder that stopped renewing
    current = Duty.objects.filter(name=name).values_list("holder", flat=True).first()
    if current is not None:
        if is_gone is None or not is_gone(current):
            return False
        taken = Duty.objects.filter(name=name, holder=current).update(holder=holder, since=now, expires_at=expires)
        return bool(taken)
    try:
        with transaction.atomic():
            Duty.objects.create(name=name, holder=holder, since=now, expires_at=expires)
    except IntegrityError:
        return False  # another process created it first: theirs
    return True


def duty_release(name: str, holder: str) -> None:
    """Give duty ``name`` up (a process stopping cleanly): the next one takes it at once."""
    Duty.objects.filter(name=name, holder=holder).delete()


def duty_holder(name: str) -> str | None:
    """Who holds duty ``name`` now (``None``: nobody, or its lease ran out)."""
    duty = Duty.objects.filter(name=name, expires_at__gte=timezone.now()).first()
    return duty.holder if duty is not None else None
