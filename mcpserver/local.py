"""``Backend`` in process: the hub's services and selectors, behind the REST views' access checks.

Used by ``/mcp`` inside the hub and by ``manage.py mcp --local``. Each method is what
the matching REST view does — parse with the view's serializer, bind the acting
fields to the identity (``Identity.bind``/``act_as``), the identity's room and post
checks, one service or selector call — so an MCP agent meets exactly the rules a
REST client does. Waiting (poll, RPC) uses the same push-woken feeds as the
long-polls (``coordination.feeds``), never a timer over the database.

The poll cursor of an agent is the hub's own ``FeedCursor`` (how far the agent's
whole feed has been handed out), which every poll without a room or thread filter
raises after it answers; this process also remembers the last position it handed
out. So a model sees each message once across calls, reconnects and hub workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

from coordination import access, search, selectors, services
from coordination.access import Identity
from coordination.api import serializers as s
from coordination.api.streams import _long_poll  # the long-poll the /v1/events view answers with
from coordination.errors import ArcError
from coordination.feeds import DeliveryMarker, FeedFilter, MessageFeed
from mcpserver.backend import POLL_LIMIT, hub_error

T = TypeVar("T")

# Per agent: the feed position this process last handed out (the FeedCursor row may lag it by a flush).
_cursors: dict[str, int] = {}


async def _db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run hub code that touches the database off the loop; domain errors become tool errors."""
    try:
        return await sync_to_async(fn)(*args, **kwargs)
    except ArcError as exc:
        raise hub_error(exc.message, exc.status) from None


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ArcError as exc:
        raise hub_error(exc.message, exc.status) from None


class LocalBackend:
    def __init__(self, agent_id: str, identity: Identity, *, capabilities: list[str] | None = None) -> None:
        self.identity = identity
        self.agent_id = str(_guard(lambda: identity.act_as(agent_id, "agent")))
        self.capabilities = capabilities or []

    async def start(self) -> dict[str, Any]:
        """Keep the agent live: open its session if it has no live one, else refresh its presence."""
        return await _db(_session_ensure, self.agent_id, self.capabilities)

    # ── Backend ───────────────────────────────────────────────────────────

    async def whoami(self) -> dict[str, Any]:
        info = await _db(selectors.bootstrap, agent_id=self.agent_id)
        who = self.identity
        return {
            **info,
            "transport": "in process",
            "keyed": who.key_id is not None,
            "key_rooms": sorted(who.rooms),
            "admin": who.admin,
            "cursor": await _db(selectors.feed_cursor, self.agent_id),
        }

    async def post(
        self,
        *,
        channel: str | None,
        body: str,
        kind: str = "chat",
        thread_id: str | None = None,
        to_agent: str | None = None,
        reply_to: int | None = None,
        expects_reply: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        raw = {
            "from_agent": self.agent_id,
            "channel": channel,
            "body": body,
            "kind": kind,
            "thread_id": thread_id,
            "to_agent": to_agent,
            "reply_to": reply_to,
            "expects_reply": expects_reply,
            "metadata": metadata,
        }
        return await self._post({k: v for k, v in raw.items() if v is not None})

    async def _post(self, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        who = self.identity
        data = _guard(lambda: s.MessagePost.parse(who.bind(raw, "from_agent")))
        _guard(
            lambda: who.check_post(
                to_agent=data.get("to_agent") or data.get("to_capability"), channel=data.get("channel")
            )
        )
        return await _db(_message_post, data)

    async def poll(self, *, timeout: float, channel: str | None, thread_id: str | None) -> list[dict[str, Any]]:
        who = self.identity
        _guard(lambda: who.require_room(channel))
        flt = FeedFilter(
            agent_id=self.agent_id,
            channel=channel,
            thread_id=thread_id,
            rooms=who.visible_rooms(),
            exclude_self=True,
        )
        since = max(_cursors.get(self.agent_id, 0), await _db(selectors.feed_cursor, self.agent_id))
        marker = DeliveryMarker(flt)
        try:
            rows, _closed = await _long_poll(flt, since, POLL_LIMIT, timeout, marker, room=channel)
        except ArcError as exc:
            raise hub_error(exc.message, exc.status) from None
        if rows:
            newest = max(int(m["id"]) for m in rows)
            _cursors[self.agent_id] = max(_cursors.get(self.agent_id, 0), newest)
            if marker.whole_feed:
                await marker.flush(force=True)  # the persisted cursor, before the model sees the answer
        return rows

    async def agents(self, *, capability: str | None) -> list[dict[str, Any]]:
        return await _db(services.sessions_roster, capability=capability)

    async def create_channel(self, *, name: str) -> dict[str, Any]:
        data = _guard(
            lambda: s.ChannelCreate.parse(self.identity.bind({"name": name, "created_by": self.agent_id}, "created_by"))
        )
        room, _created = await _db(services.room_create, name=data["name"], created_by=data.get("created_by"))
        return room.as_wire()

    async def rpc_call(self, *, to_agent: str, body: str, timeout: float) -> dict[str, Any]:
        request, _ = await self.post(channel="direct", body=body, kind="task_request", to_agent=to_agent)
        return await self.await_result(task_id=int(request["id"]), timeout=timeout)

    async def claim(
        self, *, claim_key: str, thread_id: str | None, task_message_id: int | None, ttl_sec: int
    ) -> tuple[dict[str, Any], bool]:
        raw = {
            "owner_agent_id": self.agent_id,
            "claim_key": claim_key,
            "thread_id": thread_id,
            "task_message_id": task_message_id,
            "ttl_sec": ttl_sec,
        }
        data = _guard(lambda: s.ClaimAcquire.parse(self.identity.bind(_present(raw), "owner_agent_id")))
        claim, acquired = await _db(services.claim_acquire, **data)
        return claim.as_wire(), acquired

    async def release_claim(self, *, claim_key: str) -> dict[str, Any]:
        data = _guard(
            lambda: s.ClaimRelease.parse(
                self.identity.bind({"claim_key": claim_key, "agent_id": self.agent_id}, "agent_id")
            )
        )
        return (await _db(services.claim_release, **data)).as_wire()

    async def lock(self, *, file_path: str, ttl_sec: int) -> tuple[dict[str, Any], bool]:
        raw = {"agent_id": self.agent_id, "file_path": file_path, "ttl_sec": ttl_sec}
        data = _guard(lambda: s.LockAcquire.parse(self.identity.bind(raw, "agent_id")))
        lock, acquired = await _db(services.lock_acquire, **data)
        return lock.as_wire(), acquired

    async def unlock(self, *, file_path: str) -> dict[str, Any]:
        data = _guard(
            lambda: s.LockRelease.parse(
                self.identity.bind({"file_path": file_path, "agent_id": self.agent_id}, "agent_id")
            )
        )
        return (await _db(services.lock_release, **data)).as_wire()

    async def tasks(
        self, *, status: str | None, assignee: str | None, channel: str | None, thread_id: str | None
    ) -> list[dict[str, Any]]:
        rows = await _db(selectors.tasks_list, status=status, assignee=assignee, channel=channel, thread_id=thread_id)
        return [wire for wire in (t.as_wire() for t in rows) if self.identity.may_see_task(wire)]

    async def start_task(self, *, task_id: int) -> dict[str, Any]:
        return (await _db(services.task_start, task_id=task_id, actor=self.identity.agent_id)).as_wire()

    async def complete_task(self, *, task_id: int) -> dict[str, Any]:
        task, parent_completed = await _db(services.task_complete, task_id=task_id, actor=self.identity.agent_id)
        return {**task.as_wire(), **({"parent_completed": True} if parent_completed else {})}

    async def answer_task(self, *, task_id: int, body: str, success: bool) -> dict[str, Any]:
        # As the WebSocket ``result`` frame: services.task_result addresses the requester.
        _guard(lambda: self.identity.check_post(to_agent="(the requester)", channel=None))
        message = await _db(services.task_result, from_agent=self.agent_id, task_id=task_id, success=success, body=body)
        return message.as_wire()

    async def fail_task(self, *, task_id: int, reason: str) -> dict[str, Any]:
        data = _guard(lambda: s.TaskFail.parse({"reason": reason}))
        task = await _db(
            services.task_fail, task_id=task_id, reason=data.get("reason") or "failed", actor=self.identity.agent_id
        )
        return task.as_wire()

    async def delegate(
        self,
        *,
        body: str,
        to_agent: str | None,
        to_capability: str | None,
        payload: Any,
        ttl_sec: int | None,
        thread_id: str | None,
    ) -> dict[str, Any]:
        raw = {
            "from_agent": self.agent_id,
            "kind": "task_request",
            "body": body,
            "to_agent": to_agent,
            "to_capability": to_capability,
            "ttl_sec": ttl_sec,
            "thread_id": thread_id,
            "metadata": {"payload": payload} if payload is not None else None,
        }
        message, _receipt = await self._post(_present(raw))
        return message

    async def await_result(self, *, task_id: int, timeout: float) -> dict[str, Any]:
        """The first ``task_result`` replying to ``task_id`` that this agent can see (its DMs or its rooms)."""
        flt = FeedFilter(agent_id=self.agent_id, rooms=self.identity.visible_rooms())
        deadline = time.monotonic() + timeout
        async with MessageFeed(flt, cursor=int(task_id), limit=500) as feed:
            rows = await feed.backlog()
            while True:
                for m in rows:
                    if m.get("kind") == "task_result" and m.get("reply_to") == int(task_id):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise hub_error(f"no result for task {task_id} after {timeout:g}s", 408)
                rows, _others = await feed.next(left)

    async def lease(self, *, max_messages: int, lease_sec: int) -> list[dict[str, Any]]:
        data = _guard(lambda: s.InboxLease.parse({"max": max_messages, "lease_sec": lease_sec}))
        return await _db(_inbox_lease, self.agent_id, data)

    async def ack(self, *, message_ids: list[int]) -> int:
        raw = {"agent_id": self.agent_id, "message_ids": message_ids}
        data = _guard(lambda: s.DeliveryAck.parse(self.identity.bind(raw, "agent_id")))
        return await _db(services.delivery_ack, agent_id=data["agent_id"], message_ids=data["message_ids"])

    async def nack(self, *, message_id: int, reason: str, delay_sec: int) -> dict[str, Any]:
        raw = {"agent_id": self.agent_id, "message_id": message_id, "reason": reason or None, "delay_sec": delay_sec}
        data = _guard(lambda: s.DeliveryNack.parse(self.identity.bind(_present(raw), "agent_id")))
        delivery = await _db(
            services.delivery_nack,
            agent_id=data["agent_id"],
            message_id=data["message_id"],
            reason=data.get("reason", ""),
            delay_sec=data.get("delay_sec", 0),
        )
        return delivery.as_wire()

    async def thread(self, *, thread_id: str) -> dict[str, Any]:
        who = self.identity
        detail = await _db(selectors.thread_detail, thread_id=thread_id)
        _guard(lambda: who.require_room(detail["thread"]["channel"]))
        detail["messages"] = [m for m in detail["messages"] if who.may_read(m)]
        return detail

    async def search(self, *, q: str, channel: str | None, from_agent: str | None, limit: int) -> list[dict[str, Any]]:
        return await _db(
            search.messages_search, q=q, reader=self.identity, channel=channel, from_agent=from_agent, limit=limit
        )


def _present(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if v is not None}


def _session_ensure(agent_id: str, capabilities: list[str]) -> dict[str, Any]:
    live = selectors.session_live(agent_id)
    if live is None:
        return services.session_create(agent_id=agent_id, capabilities=capabilities, replace=True).as_wire()
    services.session_touch(agent_id=agent_id)
    return live.as_wire()


def _message_post(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    message = services.message_post(**data)
    return message.as_wire(), selectors.post_receipt(message)


def _inbox_lease(agent_id: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    leased = services.inbox_lease(
        agent_id=agent_id, max_messages=data.get("max", 10), lease_sec=data.get("lease_sec", 60)
    )
    return [selectors.leased_wire(d) for d in leased]


def identity_for(authorization: str | None, *, loopback: bool) -> Identity:
    """The REST edge's identity resolution (``access.resolve``), for ``--local`` and ``/mcp``."""
    return access.resolve(authorization=authorization, loopback=loopback)
