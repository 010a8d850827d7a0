"""Hub-wide state shared by every worker: the one state row and the remote-access toggle."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import IntegrityError, transaction

from coordination.core.models import HubState


def hub_state() -> HubState:
    """The hub's one state row, created on first use."""
    state = HubState.objects.filter(pk=1).first()
    if state is not None:
        return state
    try:
        with transaction.atomic():
            return HubState.objects.create(pk=1, birth_marker=uuid.uuid4().hex, allow_remote=settings.ARC_ALLOW_REMOTE)
    except IntegrityError:
        return HubState.objects.get(pk=1)


def network_set(*, allow_remote: bool) -> HubState:
    hub_state()
    HubState.objects.filter(pk=1).update(allow_remote=allow_remote, allow_remote_set=True)
    return HubState.objects.get(pk=1)


def remote_allowed() -> bool:
    """Remote access: the network toggle once used, else ``ARC_ALLOW_REMOTE``."""
    state = hub_state()
    return state.allow_remote if state.allow_remote_set else bool(settings.ARC_ALLOW_REMOTE)
