"""The turn-boundary state of coding agents' client sessions (docs/agents.md).

What a hook shows a model is recorded as delivered by ``deliveries_mark_delivered``,
like any other reader's; what is kept here is only how many ``Stop`` hooks in a row
were answered with a block, so that the hub never holds a session in a loop.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from coordination.core.models import TurnState

# A client session's state is forgotten a day after its last hook.
TURN_STATE_KEEP = timedelta(days=1)
TOUCHED_KEPT = 50


def turn_stop_blocked(*, agent_id: str, client_session: str) -> int:
    """Count one more ``Stop`` answered with a block in this client session; returns the count."""
    now = timezone.now()
    with transaction.atomic():
        raised = TurnState.objects.filter(agent_id=agent_id, client_session=client_session).update(
            stop_blocks=F("stop_blocks") + 1, updated_at=now
        )
        if not raised:
            TurnState.objects.bulk_create(
                [TurnState(agent_id=agent_id, client_session=client_session, stop_blocks=1, updated_at=now)],
                ignore_conflicts=True,
            )
        TurnState.objects.filter(updated_at__lt=now - TURN_STATE_KEEP).delete()
    state = TurnState.objects.filter(agent_id=agent_id, client_session=client_session).first()
    return state.stop_blocks if state else 1


def turn_reset(*, agent_id: str, client_session: str) -> None:
    """A new turn began (the user prompted) or a stop went through: no blocks in a row any more."""
    TurnState.objects.filter(agent_id=agent_id, client_session=client_session, stop_blocks__gt=0).update(
        stop_blocks=0, updated_at=timezone.now()
    )


def turn_touched(*, agent_id: str, client_session: str, name: str) -> None:
    """Remember that this client session's edit tool touched the file whose lock name is ``name``."""
    with transaction.atomic():
        state, _ = TurnState.objects.get_or_create(agent_id=agent_id, client_session=client_session)
        kept = [n for n in (state.touched or []) if n != name][-(TOUCHED_KEPT - 1) :]
        now = timezone.now()
        TurnState.objects.filter(pk=state.pk).update(touched=[*kept, name], updated_at=now)
        TurnState.objects.filter(updated_at__lt=now - TURN_STATE_KEEP).delete()
