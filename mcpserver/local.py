"""``Backend`` in process: the hub's operations, as every other door calls them.

Used by ``/mcp`` inside the hub and by ``manage.py mcp --local``. Each method is one
operation of ``coordination.core.operations`` for the backend's identity (the same
input shapes, acting-field binding, room, post and task rules, and service as a REST
request), so an MCP agent meets exactly the rules a REST client does. Waiting (poll,
RPC) uses the core's push-woken feeds (``coordination.core.feeds``), never a timer
over the database.

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

from coordination.core import access, feeds, selectors, services
from coordination.core import operations as ops
from coordination.core.access import Identity
from coordination.core.errors import ArcError
from coordination.core.feeds import DeliveryMarker, FeedFilter, MessageFeed
from mcpserver.backend import POLL_LIMIT, hub_error, retry_key

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


def _present(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if v is not None}


class LocalBackend:
    def __init__(self, agent_id: str, identity: Identity, *, capabilities: list[str] | None = None) -> None:
        self.identity = identity
        self.agent_id = str(_guard(lambda: identity.act_as(agent_id, "agent")))
        self.capabilities = capabilities or []

    async def _op(self, operation: Callable[..., ops.Answer], *args: Any, **kwargs: Any) -> ops.Answer:
        key = retry_key.get()
        if key is not None and operation in ops.KEYABLE:
            kwargs["key"] = key
        return await _db(operation, self.identity, *args, **kwargs)

    async def start(self) -> dict[str, Any]:
        """Keep the agent live: open its session if it has no live one, else refresh its presence."""
        return await _db(_session_ensure, self.identity, self.agent_id, self.capabilities)

    # ── Backend ───────────────────────────────────────────────────────────

    async def whoami(self) -> dict[str, Any]:
        info = (await self._op(ops.bootstrap, self.agent_id)).result
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
        posted = await self._op(ops.message_post, _present(raw))
        return posted.result, posted.extra

    async def poll(self, *, timeout: float, channel: str | None, thread_id: str | None) -> list[dict[str, Any]]:
        flt = _guard(
            lambda: FeedFilter.for_agent(
                self.identity, self.agent_id, channel=channel, thread_id=thread_id, exclude_self=True
            )
        )
        since = max(_cursors.get(self.agent_id, 0), await _db(selectors.feed_cursor, self.agent_id))
        marker = DeliveryMarker(flt)
        try:
            rows, _closed = await feeds.long_poll(flt, since, POLL_LIMIT, timeout, marker, room=channel)
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
        created = await self._op(ops.room_create, {"name": name, "created_by": self.agent_id})
        return dict(created.result)

    async def rpc_call(self, *, to_agent: str, body: str, timeout: float) -> dict[str, Any]:
        request = await self.delegate(
            body=body, to_agent=to_agent, to_capability=None, payload=None, ttl_sec=None, thread_id=None
        )
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
        claimed = await self._op(ops.claim_acquire, _present(raw))
        return claimed.result, bool(claimed.extra["acquired"])

    async def release_claim(self, *, claim_key: str) -> dict[str, Any]:
        return dict((await self._op(ops.claim_release, {"claim_key": claim_key, "agent_id": self.agent_id})).result)

    async def lock(self, *, file_path: str, ttl_sec: int) -> tuple[dict[str, Any], bool]:
        locked = await self._op(
            ops.lock_acquire, {"agent_id": self.agent_id, "file_path": file_path, "ttl_sec": ttl_sec}
        )
        return locked.result, bool(locked.extra["acquired"])

    async def unlock(self, *, file_path: str) -> dict[str, Any]:
        return dict((await self._op(ops.lock_release, {"file_path": file_path, "agent_id": self.agent_id})).result)

    async def tasks(
        self, *, status: str | None, assignee: str | None, channel: str | None, thread_id: str | None
    ) -> list[dict[str, Any]]:
        listed = await self._op(ops.tasks_list, status=status, assignee=assignee, channel=channel, thread_id=thread_id)
        return list(listed.result)

    async def start_task(self, *, task_id: int) -> dict[str, Any]:
        return dict((await self._op(ops.task_start, task_id)).result)

    async def complete_task(self, *, task_id: int) -> dict[str, Any]:
        done = await self._op(ops.task_complete, task_id)
        return {**done.result, **done.extra}

    async def answer_task(self, *, task_id: int, body: str, success: bool) -> dict[str, Any]:
        raw = {"from_agent": self.agent_id, "task_id": task_id, "body": body, "success": success}
        return dict((await self._op(ops.task_result, raw)).result)

    async def fail_task(self, *, task_id: int, reason: str) -> dict[str, Any]:
        return dict((await self._op(ops.task_fail, task_id, {"reason": reason})).result)

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
            "body": body,
            "to_agent": to_agent,
            "to_capability": to_capability,
            "payload": payload,
            "ttl_sec": ttl_sec,
            "thread_id": thread_id,
        }
        return dict((await self._op(ops.task_delegate, _present(raw))).result)

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
                if feed.draining:
                    raise hub_error("the hub is restarting; wait for the result again", 503)
                rows, _others = await feed.next(left)

    async def lease(self, *, max_messages: int, lease_sec: int) -> list[dict[str, Any]]:
        raw = {"agent_id": self.agent_id, "max": max_messages, "lease_sec": lease_sec}
        return list((await self._op(ops.inbox_lease, raw)).result)

    async def ack(self, *, message_ids: list[int]) -> int:
        acked = await self._op(ops.delivery_ack, {"agent_id": self.agent_id, "message_ids": message_ids})
        return int(acked.result["acked"])

    async def nack(self, *, message_id: int, reason: str, delay_sec: int) -> dict[str, Any]:
        raw = {"agent_id": self.agent_id, "message_id": message_id, "reason": reason or None, "delay_sec": delay_sec}
        return dict((await self._op(ops.delivery_nack, _present(raw))).result)

    async def thread(self, *, thread_id: str) -> dict[str, Any]:
        return dict((await self._op(ops.thread_get, thread_id)).result)

    async def search(self, *, q: str, channel: str | None, from_agent: str | None, limit: int) -> list[dict[str, Any]]:
        found = await self._op(ops.search_messages, q=q, channel=channel, from_agent=from_agent, limit=limit)
        return list(found.result)


def _session_ensure(who: Identity, agent_id: str, capabilities: list[str]) -> dict[str, Any]:
    live = selectors.session_live(agent_id)
    if live is None:
        opened = ops.session_open(who, {"agent_id": agent_id, "capabilities": capabilities, "replace": True})
        return dict(opened.result)
    services.session_touch(agent_id=agent_id)
    return live.as_wire()


def identity_for(authorization: str | None) -> Identity:
    """The identity of ``manage.py mcp --local``: a process on this machine, by the hub's one rule."""
    return access.resolve(authorization=authorization, client=access.THIS_MACHINE)
