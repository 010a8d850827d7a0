"""Who is acting, and what they may touch (docs/access.md). One place for every door.

Each request (REST, SSE, WebSocket, MCP, relay envelope, dashboard) resolves to an
``Identity`` through ``resolve``, from its ``Authorization`` and its client address:

- a valid agent key (``Authorization: Bearer arc_...``): acts as that key's agent,
  within the key's rooms (none listed: all rooms), as an admin if the key is one;
- no key, from loopback, under ``ARC_AUTH=loopback-open`` (the default): acts as
  any agent, as Arc does, so Arc's clients keep working — but is not an admin;
- a staff user signed in to the dashboard: the ``operator``, recorded as that human in the
  hub's notices, and an admin if ``staff_admin`` says so (the same rule as the Django admin's).

Anything else is refused: no key where one is needed (401), a bad key (401), a
remote client while remote access is off (403).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from coordination.core import events, selectors, services
from coordination.core.errors import Forbidden, RateLimited, Unauthorized
from coordination.core.models import AgentKey, Message
from coordination.core.services import MessageDraft

OPERATOR = "operator"
# A command run on this machine (``manage.py mcp --local``) acts as a loopback client.
THIS_MACHINE = "127.0.0.1"


def is_loopback(address: str | None) -> bool:
    """Is ``address`` (a client's IP, as the server saw it) on this machine? Unknown is not."""
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def bind_to(agent_id: str | None, claimed: Any, field_name: str) -> Any:
    """The agent a request acts as through ``field_name`` when it must act as ``agent_id``.

    ``agent_id`` set: an absent or empty field is filled with it, another agent's id is
    ``Forbidden``; ``None`` (not bound to one agent): the request acts as whoever it names.
    """
    if agent_id is None:
        return claimed
    if claimed is None or claimed == "":
        return agent_id
    if str(claimed).strip() != agent_id:
        raise Forbidden(f"{field_name} must be {agent_id} (the key's agent) or absent, not {claimed}")
    return agent_id


log = logging.getLogger("arc.access")


@dataclass(frozen=True)
class Identity:
    agent_id: str | None = None  # None: not bound to one agent (loopback-open)
    key_id: str | None = None
    rooms: frozenset[str] = field(default_factory=frozenset)  # empty: every room
    admin: bool = False
    loopback: bool = True
    expires_at: datetime | None = None
    human: str | None = None  # the signed-in user acting as the operator (dashboard, Django admin)

    @property
    def actor(self) -> str:
        """Who an action is recorded as in the hub's notices: the human who acted, else the agent."""
        return self.human or self.agent_id or OPERATOR

    def seconds_left(self) -> float | None:
        """Seconds until the key expires (``None``: it does not)."""
        if self.expires_at is None:
            return None
        return (self.expires_at - timezone.now()).total_seconds()

    def ended_by(self, event: dict[str, Any]) -> bool:
        """Does this ``key`` event end this identity (its key revoked)?"""
        return self.key_id is not None and event.get("event") == "key" and event.get("key_id") == self.key_id

    @property
    def bound(self) -> bool:
        return self.agent_id is not None

    def act_as(self, claimed: Any, field_name: str) -> Any:
        """The agent a request acts as through ``field_name`` (``bind_to`` this identity's agent)."""
        return bind_to(self.agent_id, claimed, field_name)

    def bind(self, data: dict[str, Any], *fields: str) -> dict[str, Any]:
        """``data`` with each acting field checked and filled (see ``act_as``)."""
        out = dict(data)
        for name in fields:
            value = self.act_as(out.get(name), name)
            if value is not None:
                out[name] = value
        return out

    def can_see_room(self, room: str) -> bool:
        return not self.rooms or room in self.rooms

    def require_room(self, room: str | None) -> None:
        if room is not None and not self.can_see_room(room):
            raise Forbidden(f"this key is limited to rooms {', '.join(sorted(self.rooms))}; {room} is not one")

    def visible_rooms(self, requested: Iterable[str] = ()) -> frozenset[str]:
        """The rooms a reader may follow: its key's scope, narrowed by what it asked for."""
        wanted = frozenset(requested)
        for room in wanted:
            self.require_room(room)
        return wanted or self.rooms

    def may_read(self, message: dict[str, Any]) -> bool:
        """A bound reader sees broadcasts in its rooms and direct messages it sent or received; an admin sees all."""
        if not self.bound or self.admin:
            return True
        if self.agent_id in (message.get("from_agent"), message.get("to_agent")):
            return True
        return message.get("to_agent") is None and self.can_see_room(str(message.get("channel")))

    def may_see_task(self, task: dict[str, Any]) -> bool:
        """A bound reader sees tasks in its rooms and the tasks it requested or was assigned (direct ones too)."""
        if self.can_see_room(str(task.get("channel"))):
            return True
        return self.bound and self.agent_id in (task.get("requester"), task.get("assignee"))

    def shows_event(self, event: dict[str, Any], agent_id: str, types: frozenset[str]) -> bool:
        """Does the feed of ``agent_id`` that asked for event ``types`` show this state-change ``event``?

        A ``room`` event always (feeds pass it only for rooms the reader follows: it tells
        the reader to stop waiting there, or to go on). Others when asked for and visible:
        delivery events to their recipient only, task events as ``may_see_task``, the rest
        (claims, locks, presence) are hub-wide state.
        """
        kind = event.get("event")
        if kind == "room":
            return True
        if kind not in types:
            return False
        if kind == "delivery":
            return event.get("agent_id") == agent_id
        task = event.get("task")
        if isinstance(task, dict):
            return self.may_see_task(task)
        return True

    def require_task(self, task: dict[str, Any]) -> None:
        if not self.may_see_task(task):
            raise Forbidden(f"task {task.get('task_id')} is not visible to this key")

    def require_party(self, message: dict[str, Any]) -> None:
        if not self.may_read(message):
            raise Forbidden("this message is not visible to this key")

    def visible_thread(self, detail: dict[str, Any]) -> dict[str, Any]:
        """A thread's detail as this identity may see it: its room must be visible, and only its readable messages."""
        self.require_room(detail["thread"]["channel"])
        return {**detail, "messages": [m for m in detail["messages"] if self.may_read(m)]}

    def check_post(self, draft: MessageDraft) -> None:
        """May this identity post ``draft`` now? ``Forbidden`` or ``RateLimited`` if not (``may_post``)."""
        answers = draft.reply_to if draft.kind == Message.Kind.TASK_RESULT else None
        self.may_post(direct=draft.direct, channel=draft.channel, answers_task=answers)

    def may_post(self, *, direct: bool, channel: str | None, answers_task: int | None = None) -> None:
        """May this identity post now? ``Forbidden`` or ``RateLimited`` if not: the one rule of every post.

        A room post needs its room (``channel``, default ``general``) in the key's scope; a
        direct message (to an agent, or to one picked by capability) is not a room post. An
        answer to a task (``answers_task``) needs that task visible, so a scoped key changes
        no task outside its rooms. Then the rate limit charges the post (a refused post
        costs nothing).
        """
        if not direct:
            self.require_room(channel or "general")
        if answers_task is not None and self.rooms:
            task = selectors.task_find(answers_task)
            if task is not None:
                self.require_task(task.as_wire())
        if self.bound:
            assert self.agent_id is not None
            rate_limiter.charge(self.agent_id)

    def require_admin(self, action: str) -> None:
        if not self.admin:
            raise Forbidden(f"{action} needs an admin key (manage.py invite --admin) or a hub admin's sign-in")


class RateLimiter:
    """Per-agent token buckets for posts (``ARC_RATE_LIMIT``: ``<posts>/<seconds>[,burst]``).

    Applies to key-bound agents: an unkeyed loopback client names any agent it likes,
    so a per-agent limit would not bind it. With Redis (``ARC_REDIS_URL``) the buckets live
    there, one per agent of this hub, so every worker process charges the same bucket (one
    atomic script per post, on Redis's clock); without it, in this process (a hub of one
    process). If Redis cannot be reached a post is let through, and that is logged.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # agent → (tokens, last refill)
        self._redis: Any = None

    def charge(self, agent_id: str) -> None:
        rate, per_sec, burst = settings.ARC_RATE_LIMIT
        if rate <= 0:
            return
        refill = rate / per_sec
        tokens = (
            self._take_shared(agent_id, refill, burst)
            if settings.ARC_REDIS_URL
            else self._take(agent_id, refill, burst)
        )
        if tokens is not None and tokens < 0:
            raise RateLimited(
                f"{agent_id} is posting too fast (limit {rate} per {per_sec:g}s, burst {burst})",
                retry_after=max(1, math.ceil(-tokens / refill)),
            )

    def _take(self, agent_id: str, refill: float, burst: int) -> float:
        """Take a token from this process's bucket: what is left, or how many are missing (negative)."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(agent_id, (float(burst), now))
            tokens = min(float(burst), tokens + (now - last) * refill)
            if tokens < 1.0:
                self._buckets[agent_id] = (tokens, now)
                return tokens - 1.0
            self._buckets[agent_id] = (tokens - 1.0, now)
            return tokens - 1.0

    def _take_shared(self, agent_id: str, refill: float, burst: int) -> float | None:
        """The same, in Redis; ``None`` when Redis did not answer (the post goes through)."""
        import redis

        try:
            if self._redis is None:
                client = redis.Redis.from_url(settings.ARC_REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
                self._redis = client.register_script(_BUCKET_SCRIPT)
            key = f"{settings.ARC_REDIS_PREFIX}:rate:{agent_id}"
            return float(self._redis(keys=[key], args=[refill, burst]))
        except redis.RedisError:
            log.warning("rate limit not applied: Redis at %s did not answer", settings.ARC_REDIS_URL, exc_info=True)
            return None

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()
        if settings.ARC_REDIS_URL and self._redis is not None:
            client = self._redis.registered_client
            for key in client.scan_iter(f"{settings.ARC_REDIS_PREFIX}:rate:*"):
                client.delete(key)


# A token bucket in Redis: refill by Redis's clock, take one token if there is one. Returns what is
# left after taking (>= 0), or minus how much is missing when refused; the key expires once full again.
_BUCKET_SCRIPT = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens = math.min(burst, (tonumber(state[1]) or burst) + (now - (tonumber(state[2]) or now)) * rate)
local left = tokens - 1
if left >= 0 then tokens = left end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'last', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(left)
"""


rate_limiter = RateLimiter()


class RevocationWatch:
    """Tells this process's open keyed connections about keys revoked by another process.

    ``services.key_revoke`` publishes a ``key`` event, which reaches every serving process
    on a shared (Redis) channel layer. On the in-memory layer of the embedded hub it cannot
    reach the hub from another process, such as ``manage.py revoke`` beside it. So while
    keyed streams or sockets are open here, one query every ``POLL_SEC`` finds keys revoked
    since the last look and hands each to the local listeners as the same ``key`` event.
    (Expiry needs no query: each connection knows when its key expires.)
    """

    POLL_SEC = 0.5
    OVERLAP_SEC = 5.0  # look back this far: a revocation may commit a little after its revoked_at

    def __init__(self) -> None:
        self._holders = 0
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def watching(self, identity: Identity) -> AsyncIterator[None]:
        """Watch while the block runs, if ``identity`` holds a key (run on the serving loop)."""
        if identity.key_id is None:
            yield
            return
        self._holders += 1
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run())
        try:
            yield
        finally:
            self._holders -= 1
            if self._holders <= 0 and self._task is not None:
                self._holders = 0
                self._task.cancel()
                self._task = None

    async def _run(self) -> None:
        since = timezone.now() - timedelta(seconds=self.OVERLAP_SEC)
        announced: dict[str, datetime] = {}
        while True:
            await asyncio.sleep(self.POLL_SEC)
            now = timezone.now()
            try:
                revoked = await sync_to_async(_keys_revoked_since)(since)
            except Exception:  # the database may be briefly busy; the next look covers this one
                log.exception("could not look for revoked keys")
                continue
            since = now - timedelta(seconds=self.OVERLAP_SEC)
            for prefix, agent_id, revoked_at in revoked:
                if prefix not in announced:
                    events.dispatcher.deliver(
                        {
                            "type": "arc.event",
                            "event": "key",
                            "action": "revoked",
                            "key_id": prefix,
                            "agent_id": agent_id,
                        }
                    )
                announced[prefix] = revoked_at or now
            announced = {prefix: at for prefix, at in announced.items() if at >= since}


def _keys_revoked_since(since: datetime) -> list[tuple[str, str, datetime | None]]:
    return list(AgentKey.objects.filter(revoked_at__gte=since).values_list("prefix", "agent_id", "revoked_at"))


revocations = RevocationWatch()


def key_usable(identity: Identity) -> bool:
    """Is the key behind ``identity`` (if any) still usable (not revoked, not expired)?"""
    if identity.key_id is None:
        return True
    return AgentKey.objects.usable().filter(prefix=identity.key_id).exists()


def attach(request: Any, identity: Identity) -> None:
    request.arc_identity = identity


def of(request: Any) -> Identity:
    """The identity the edge resolved for ``request``; fails closed when none was resolved."""
    identity = getattr(request, "arc_identity", None)
    if identity is None and hasattr(request, "_request"):  # a DRF Request wraps Django's
        identity = getattr(request._request, "arc_identity", None)
    if not isinstance(identity, Identity):
        raise Unauthorized("the request was not authenticated")
    return identity


ADMIN_PERMISSION = "coordination.operate_hub"


def staff_member(user: Any) -> bool:
    """May ``user`` (a Django user) read the hub in the dashboard and the Django admin? An active staff user."""
    return bool(getattr(user, "is_authenticated", False) and user.is_active and user.is_staff)


def staff_admin(user: Any) -> bool:
    """May ``user`` act on the hub as an admin — mint and revoke keys, close rooms, force-release work,
    retry dead letters, act on any task, toggle the network — in the dashboard and the Django admin alike?

    The one rule for both doors: an active staff user who is a superuser or holds the
    ``operate_hub`` permission (the sign-in links make superusers).
    """
    return staff_member(user) and bool(user.is_superuser or user.has_perm(ADMIN_PERMISSION))


def resolve(*, authorization: str | None, client: str | None, staff: Any = None) -> Identity:
    """The identity of a request, from its ``Authorization`` header and its client's address.

    ``Unauthorized`` for a bad, revoked or expired key, or a missing one where one is needed;
    ``Forbidden`` for a remote client while remote access is off.
    """
    loopback = is_loopback(client)
    if not loopback and not services.remote_allowed():
        raise Forbidden(
            "remote access is off: this hub serves loopback clients only (an admin can turn it on with POST /v1/network)"
        )
    if authorization:
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthorized("Authorization must be 'Bearer <agent key>'")
        return identity_for_key(services.key_authenticate(presented=presented.strip()), loopback=loopback)
    if staff is not None and staff_member(staff):
        return Identity(agent_id=OPERATOR, admin=staff_admin(staff), loopback=loopback, human=staff.get_username())
    if not loopback:
        raise Unauthorized("requests from other machines need an agent key (Authorization: Bearer <key>)")
    if settings.ARC_AUTH == "required":
        raise Unauthorized("this hub requires an agent key (ARC_AUTH=required): send Authorization: Bearer <key>")
    return Identity(loopback=True)


def needs_database(*, authorization: str | None, client: str | None) -> bool:
    """Does ``resolve`` read the database for this request (a key, or a remote client's toggle)?"""
    return bool(authorization) or not is_loopback(client)


def identity_for_key(key: AgentKey, *, loopback: bool) -> Identity:
    return Identity(
        agent_id=key.agent_id,
        key_id=key.prefix,
        rooms=frozenset(key.rooms or []),
        admin=key.is_admin,
        loopback=loopback,
        expires_at=key.expires_at,
    )
