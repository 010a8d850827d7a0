"""Every state change of the hub, one function each (``<entity>_<verb>``), one module per entity.

REST views, WebSocket frames, MCP tools, the relay, the dashboard, the admin and the
management commands all reach these (most through ``coordination.core.operations``,
which checks who asks first); none of them writes models itself.

Races are decided here, by the database: a conditional ``UPDATE ... WHERE``
whose row count picks the winner, a unique constraint, or a row lock. That
holds on SQLite (one writer at a time, ``BEGIN IMMEDIATE``) and on PostgreSQL
(``READ COMMITTED``, where a blocked ``UPDATE`` re-checks its ``WHERE``).

This package's names are its public API; its modules import each other by module
(``from coordination.core.services import tasks``), so their cycles resolve at call time.
"""

from __future__ import annotations

from coordination.core.services.asking import ask_post
from coordination.core.services.deliveries import (
    MAX_DELIVERY_ATTEMPTS,
    MAX_LEASE_BATCH,
    MAX_LEASE_SEC,
    deliveries_mark_delivered,
    deliveries_mark_delivered_many,
    deliveries_retry,
    deliveries_settle,
    delivery_ack,
    delivery_nack,
    feed_cursor_start,
    inbox_lease,
)
from coordination.core.services.duties import duty_hold, duty_holder, duty_release
from coordination.core.services.keys import (
    key_authenticate,
    key_check,
    key_find,
    key_mint,
    key_revoke,
    keys_revoke_agent,
)
from coordination.core.services.leases import (
    DEFAULT_TTL_SEC,
    MIN_TTL_SEC,
    claim_acquire,
    claim_force_release,
    claim_refresh,
    claim_release,
    leases_tell_expired,
    lock_acquire,
    lock_force_release,
    lock_name,
    lock_refresh,
    lock_release,
)
from coordination.core.services.messages import (
    MAX_TTL_SEC,
    SYSTEM_AGENT,
    MessageDraft,
    check_message_post,
    do_message_post,
    message_post,
    reply_claim,
)
from coordination.core.services.network import hub_state, network_set, remote_allowed
from coordination.core.services.push import push_config_delete, push_config_set, push_forget, push_sent
from coordination.core.services.remotes import KIND as REMOTE_KIND
from coordination.core.services.remotes import (
    remote_answer,
    remote_call_begin,
    remote_call_sent,
    remote_checked,
    remote_register,
    remote_remove,
    remotes_keep_live,
)
from coordination.core.services.rooms import (
    DEFAULT_ROOMS,
    UNCLOSABLE_ROOMS,
    room_close,
    room_create,
    room_reopen,
    rooms_ensure_defaults,
)
from coordination.core.services.sessions import (
    session_close,
    session_create,
    session_touch,
    session_workspace_declare,
    sessions_prune_expired,
    sessions_roster,
)
from coordination.core.services.signin import login_link_mint, login_link_redeem
from coordination.core.services.tasks import (
    CANCELED,
    task_cancel,
    task_complete,
    task_delegate,
    task_fail,
    task_result,
    task_start,
    tasks_time_out,
)
from coordination.core.services.turns import turn_reset, turn_stop_blocked, turn_touched


def caches_clear() -> None:
    """Forget what this process remembers between calls (rooms seen, presence refreshes): for tests."""
    from coordination.core.services import rooms, sessions

    rooms.known_rooms_forget()
    sessions.touches_forget()


__all__ = [
    "CANCELED",
    "DEFAULT_ROOMS",
    "DEFAULT_TTL_SEC",
    "MAX_DELIVERY_ATTEMPTS",
    "MAX_LEASE_BATCH",
    "MAX_LEASE_SEC",
    "MAX_TTL_SEC",
    "MIN_TTL_SEC",
    "REMOTE_KIND",
    "SYSTEM_AGENT",
    "UNCLOSABLE_ROOMS",
    "MessageDraft",
    "ask_post",
    "caches_clear",
    "check_message_post",
    "claim_acquire",
    "claim_force_release",
    "claim_refresh",
    "claim_release",
    "deliveries_mark_delivered",
    "deliveries_mark_delivered_many",
    "deliveries_retry",
    "deliveries_settle",
    "delivery_ack",
    "delivery_nack",
    "do_message_post",
    "duty_hold",
    "duty_holder",
    "duty_release",
    "feed_cursor_start",
    "hub_state",
    "inbox_lease",
    "key_authenticate",
    "key_check",
    "key_find",
    "key_mint",
    "key_revoke",
    "keys_revoke_agent",
    "leases_tell_expired",
    "lock_acquire",
    "lock_force_release",
    "lock_name",
    "lock_refresh",
    "lock_release",
    "login_link_mint",
    "login_link_redeem",
    "message_post",
    "network_set",
    "push_config_delete",
    "push_config_set",
    "push_forget",
    "push_sent",
    "remote_allowed",
    "remote_answer",
    "remote_call_begin",
    "remote_call_sent",
    "remote_checked",
    "remote_register",
    "remote_remove",
    "remotes_keep_live",
    "reply_claim",
    "room_close",
    "room_create",
    "room_reopen",
    "rooms_ensure_defaults",
    "session_close",
    "session_create",
    "session_touch",
    "session_workspace_declare",
    "sessions_prune_expired",
    "sessions_roster",
    "task_cancel",
    "task_complete",
    "task_delegate",
    "task_fail",
    "task_result",
    "task_start",
    "tasks_time_out",
    "turn_reset",
    "turn_stop_blocked",
    "turn_touched",
]
