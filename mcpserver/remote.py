"""``Backend`` over HTTP: every tool is one ``ArcClient`` call to a running hub (``manage.py mcp``).

``ArcClient`` is synchronous (``requests``) and keeps one HTTP session, which is not
shared between threads, so each worker thread gets its own client; calls run in
worker threads so a long-poll never blocks the MCP server's loop.

The poll cursor is this process's ``since_id``, saved after each poll to
``<state_dir>/<agent>@<hub instance>.cursor`` so a restarted server (the MCP client
reconnecting) goes on where the last one stopped. The hub's instance id names its
database, so a reset hub starts a fresh cursor instead of skipping its new messages.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import anyio.to_thread

from coordination.client import ArcClient, ArcError
from mcpserver.backend import POLL_LIMIT, hub_error, retry_key

T = TypeVar("T")


class ClientBackend:
    def __init__(
        self,
        agent_id: str,
        base_url: str,
        *,
        key: str | None = None,
        capabilities: list[str] | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.base_url = base_url
        self.key = key
        self.capabilities = capabilities or []
        self.state_dir = state_dir
        self.cursor = 0
        self._watched = 0  # the newest message the channel wake has seen (``watch``)
        self._cursor_file: Path | None = None
        self._local = threading.local()
        self._poll_lock = asyncio.Lock()

    # ── plumbing ──────────────────────────────────────────────────────────

    def _client(self) -> ArcClient:
        client: ArcClient | None = getattr(self._local, "client", None)
        if client is None:
            client = ArcClient(self.agent_id, base_url=self.base_url, key=self.key)
            self._local.client = client
        return client

    async def _run(self, call: Callable[[ArcClient], T]) -> T:
        key = retry_key.get()

        def work() -> T:
            client = self._client()
            try:
                if key is None:
                    return call(client)
                with client.idempotency_key(key):
                    return call(client)
            except ArcError as exc:
                raise hub_error(exc.error, exc.status) from None

        return await anyio.to_thread.run_sync(work)

    async def start(self) -> dict[str, Any]:
        """Register the agent (``replace=True``, as Arc's MCP server does) and load its saved cursor."""
        session = await self._run(
            lambda c: c.register(replace=True, capabilities=self.capabilities or None, display_name=self.agent_id)
        )
        if self.state_dir is not None:
            info = await self._run(lambda c: c.call_hub("GET", "/v1/hub-info"))
            instance = re.sub(r"[^A-Za-z0-9._-]", "_", str(info.get("instance_id") or "hub"))
            name = re.sub(r"[^A-Za-z0-9._-]", "_", self.agent_id)
            self._cursor_file = self.state_dir / f"{name}@{instance}.cursor"
            self.cursor = _read_cursor(self._cursor_file)
        return session

    def _save_cursor(self) -> None:
        if self._cursor_file is None:
            return
        self._cursor_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._cursor_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(str(self.cursor))
        tmp.replace(self._cursor_file)

    # ── Backend ───────────────────────────────────────────────────────────

    async def whoami(self) -> dict[str, Any]:
        info = await self._run(lambda c: c.call_hub("GET", "/v1/bootstrap", params={"agent_id": self.agent_id}))
        return {**info, "transport": f"HTTP to {self.base_url}", "keyed": bool(self.key), "cursor": self.cursor}

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
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        def call(c: ArcClient) -> tuple[dict[str, Any], dict[str, Any]]:
            message = c.post(
                channel or ("direct" if to_agent else "general"),
                body,
                kind=kind,
                thread_id=thread_id,
                to_agent=to_agent,
                reply_to=reply_to,
                expects_reply=expects_reply,
            )
            return message, dict(c.last_receipt or {})

        return await self._run(call)

    async def poll(self, *, timeout: float, channel: str | None, thread_id: str | None) -> list[dict[str, Any]]:
        async with self._poll_lock:  # one cursor: concurrent polls would hand out the same messages twice

            def call(c: ArcClient) -> list[dict[str, Any]]:
                c.since_id = self.cursor
                # resume: what a hook already showed this agent is not shown again (docs/agents.md)
                messages = c.poll(timeout=timeout, channel=channel, thread_id=thread_id, limit=POLL_LIMIT, resume=True)
                self.cursor = max(self.cursor, c.since_id)
                return messages

            messages = await self._run(call)
            if messages:
                self._save_cursor()
            return messages

    async def watch(self, *, timeout: float) -> list[dict[str, Any]]:
        """What is new for the agent, without taking it: the next messages after everything it was
        handed and everything this watch saw, waiting up to ``timeout`` s (``peek``: nothing is
        recorded as delivered; the channel wake of ``mcpserver.channel`` reads this)."""
        params = {"agent_id": self.agent_id, "since_id": self._watched, "timeout": timeout, "exclude_self": 1}
        rows: list[dict[str, Any]] = await self._run(
            lambda c: c.call_hub("GET", "/v1/events", params={**params, "resume": 1, "peek": 1}, wait=timeout)
        )
        if rows:
            self._watched = max(self._watched, *(int(m["id"]) for m in rows))
        return rows

    async def delivered(self, message_id: int) -> bool:
        """Has the agent been handed this message (by any reader: a poll, a stream, a hook)?"""
        status: dict[str, Any] = await self._run(lambda c: c.call_hub("GET", f"/v1/messages/{int(message_id)}/status"))
        states = [r.get("state") for r in status.get("recipients", []) if r.get("agent_id") == self.agent_id]
        # No record for this agent (a notice sent without one): nothing to wait for, so count it as handed out.
        return not states or states[0] != "queued"

    async def agents(self, *, capability: str | None) -> list[dict[str, Any]]:
        params = {"capability": capability} if capability else None
        roster: list[dict[str, Any]] = await self._run(lambda c: c.call_hub("GET", "/v1/agents", params=params))
        return roster

    async def create_channel(self, *, name: str) -> dict[str, Any]:
        body = {"name": name, "created_by": self.agent_id}
        room: dict[str, Any] = await self._run(lambda c: c.call_hub("POST", "/v1/channels", body))
        return room

    async def rpc_call(self, *, to_agent: str, body: str, timeout: float) -> dict[str, Any]:
        return await self._run(lambda c: c.call(to_agent, body, timeout=timeout))

    async def claim(
        self, *, claim_key: str, thread_id: str | None, task_message_id: int | None, ttl_sec: int
    ) -> tuple[dict[str, Any], bool]:
        claim = await self._run(
            lambda c: c.claim(claim_key, thread_id=thread_id, task_message_id=task_message_id, ttl_sec=ttl_sec)
        )
        return claim, claim.get("owner_agent_id") == self.agent_id

    async def release_claim(self, *, claim_key: str) -> dict[str, Any]:
        return await self._run(lambda c: c.release(claim_key))

    async def lock(self, *, file_path: str, ttl_sec: int) -> tuple[dict[str, Any], bool]:
        lock = await self._run(lambda c: c.lock(file_path, ttl_sec=ttl_sec))
        return lock, lock.get("agent_id") == self.agent_id

    async def unlock(self, *, file_path: str) -> dict[str, Any]:
        return await self._run(lambda c: c.unlock(file_path))

    async def tasks(
        self, *, status: str | None, assignee: str | None, channel: str | None, thread_id: str | None
    ) -> list[dict[str, Any]]:
        params = {
            k: v
            for k, v in {"status": status, "assignee": assignee, "channel": channel, "thread_id": thread_id}.items()
            if v is not None
        }
        rows: list[dict[str, Any]] = await self._run(lambda c: c.call_hub("GET", "/v1/tasks", params=params))
        return rows

    async def start_task(self, *, task_id: int) -> dict[str, Any]:
        task: dict[str, Any] = await self._run(lambda c: c.call_hub("POST", f"/v1/tasks/{int(task_id)}/start", {}))
        return task

    async def complete_task(self, *, task_id: int) -> dict[str, Any]:
        return await self._run(lambda c: c.complete_task(task_id))

    async def answer_task(self, *, task_id: int, body: str, success: bool) -> dict[str, Any]:
        return await self._run(lambda c: c.answer(int(task_id), body, success=success))

    async def fail_task(self, *, task_id: int, reason: str) -> dict[str, Any]:
        task: dict[str, Any] = await self._run(
            lambda c: c.call_hub("POST", f"/v1/tasks/{int(task_id)}/fail", {"reason": reason})
        )
        return task

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
        return await self._run(
            functools.partial(
                ArcClient.delegate,
                body=body,
                to_agent=to_agent,
                to_capability=to_capability,
                payload=payload,
                ttl_sec=ttl_sec,
                thread_id=thread_id,
            )
        )

    async def await_result(self, *, task_id: int, timeout: float) -> dict[str, Any]:
        return await self._run(lambda c: c.await_result(task_id, timeout=timeout))

    async def lease(self, *, max_messages: int, lease_sec: int) -> list[dict[str, Any]]:
        leased = await self._run(lambda c: c.lease(max_messages, lease_sec=lease_sec))
        return leased

    async def ack(self, *, message_ids: list[int]) -> int:
        return await self._run(lambda c: c.ack(message_ids))

    async def nack(self, *, message_id: int, reason: str, delay_sec: int) -> dict[str, Any]:
        return await self._run(lambda c: c.nack(message_id, reason=reason, delay_sec=delay_sec))

    async def thread(self, *, thread_id: str) -> dict[str, Any]:
        detail: dict[str, Any] = await self._run(
            lambda c: c.call_hub("GET", f"/v1/threads/{quote(thread_id, safe='')}")
        )
        return detail

    async def search(self, *, q: str, channel: str | None, from_agent: str | None, limit: int) -> list[dict[str, Any]]:
        return await self._run(lambda c: c.search(q, channel=channel, from_agent=from_agent, limit=limit))


def _read_cursor(path: Path) -> int:
    try:
        return max(0, int(path.read_text().strip() or 0))
    except (OSError, ValueError):
        return 0
