"""A Python client for an Arc hub, on ``requests``.

The same API as ``ArcClient`` in Arc's reference ``arc.py``, so code written for
Arc runs unchanged, with two fixes:

- ``call()`` (agent-to-agent RPC) waits on the ``/v1/events`` long-poll, so it
  returns as soon as the result is posted, and it sees the result whether the
  worker posted it to the channel or sent it as a direct message to the caller
  (Arc's scans only the channel, once a second);
- ``poll()``'s HTTP timeout covers the long-poll it asks for (Arc's gives up
  after 15 s on a 30 s long-poll).

This module imports nothing from Django: an agent can copy this one file next
to its code and ``pip install requests``. Example::

    alice = ArcClient.quickstart("alice", "http://127.0.0.1:6969")
    alice.post("general", "hello")
    for message in alice.poll(timeout=30):
        print(message["from_agent"], message["body"])
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

import requests

DEFAULT_BASE_URL = "http://127.0.0.1:6969"
# Arc clamps long-polls to 60 s; asking for more just returns at 60.
MAX_LONG_POLL_SEC = 60.0
# ``ArcError.status`` when no HTTP response came back at all (refused, unreachable, timed out),
# the code Arc's relay uses for the same case.
TRANSPORT_ERROR_STATUS = 599


def _present(**fields: Any) -> dict[str, Any]:
    """The fields that were given (Arc treats an absent field and ``null`` alike; we send neither)."""
    return {name: value for name, value in fields.items() if value is not None}


class ArcError(Exception):
    """The hub answered ``{"ok": false, "error": ...}``, or could not be reached.

    ``status`` is the HTTP status of the error envelope, ``TRANSPORT_ERROR_STATUS``
    (599) when no response came back, and 408 when ``call()`` times out.
    """

    def __init__(self, error: str, status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


class ArcClient:
    """One agent's connection to the hub. Tracks ``since_id`` so repeated ``poll()`` calls return only new messages.

    Construct once per agent process; it keeps one HTTP session (connection reuse),
    so give each thread that talks to the hub its own client.
    ``poll()`` excludes the agent's own posts by default (``exclude_self=True``), as in Arc.
    Pass ``key`` when the hub requires agent keys; it is sent as ``Authorization: Bearer <key>``.
    """

    def __init__(
        self,
        agent_id: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 15.0,
        *,
        key: str | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._since_id = 0
        self._session = requests.Session()
        if key:
            self._session.headers["Authorization"] = f"Bearer {key}"

    @property
    def since_id(self) -> int:
        """Id of the newest message ``poll()`` has returned; the next poll returns newer ones only."""
        return self._since_id

    @since_id.setter
    def since_id(self, value: int) -> None:
        self._since_id = int(value)

    # ── plumbing ──────────────────────────────────────────────────────────

    def close(self) -> None:
        """Close the HTTP session's pooled connections."""
        self._session.close()

    def __enter__(self) -> ArcClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        params: dict[str, Any] | None = None,
        wait: float = 0.0,
    ) -> Any:
        """Send one request and return the envelope's ``result``.

        ``wait`` is how long the hub may hold the request (a long-poll); the HTTP
        timeout is that plus the client's own ``timeout``.
        """
        url = self.base_url + path
        try:
            response = self._session.request(method, url, json=payload, params=params, timeout=self.timeout + wait)
        except requests.Timeout as exc:
            raise ArcError(
                f"connection error: no answer from the hub at {self.base_url} within {self.timeout + wait:g}s ({exc})",
                TRANSPORT_ERROR_STATUS,
            ) from exc
        except requests.RequestException as exc:
            raise ArcError(
                f"connection error: cannot reach the hub at {self.base_url} (is it running?): {exc}",
                TRANSPORT_ERROR_STATUS,
            ) from exc
        try:
            envelope = response.json()
        except ValueError:
            snippet = response.text[:200].strip()
            raise ArcError(
                f"{method} {path}: the server at {self.base_url} did not answer with JSON "
                f"(HTTP {response.status_code}): {snippet!r}",
                response.status_code,
            ) from None
        if not isinstance(envelope, dict) or not envelope.get("ok"):
            error = envelope.get("error") if isinstance(envelope, dict) else None
            status = response.status_code if response.status_code >= 400 else 400
            raise ArcError(str(error or f"unexpected response from {method} {path}: {envelope!r}"), status)
        return envelope.get("result")

    # ── Arc's ArcClient API ───────────────────────────────────────────────

    def register(
        self,
        *,
        display_name: str | None = None,
        replace: bool = True,
        capabilities: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Open a session for this agent (``replace=True`` closes its older sessions). Returns the session."""
        body: dict[str, Any] = {"agent_id": self.agent_id, "replace": bool(replace)}
        body.update(_present(display_name=display_name, capabilities=capabilities, metadata=metadata))
        result: dict[str, Any] = self._call("POST", "/v1/sessions", body)
        return result

    def post(
        self,
        channel: str,
        body: str,
        *,
        kind: str = "chat",
        thread_id: str | None = None,
        to_agent: str | None = None,
        attachments: list[Any] | None = None,
        metadata: dict[str, Any] | None = None,
        reply_to: int | None = None,
        parent_task_id: int | None = None,
    ) -> dict[str, Any]:
        """Post a message to ``channel`` (a direct message when ``to_agent`` is set). Returns the stored message."""
        payload: dict[str, Any] = {"from_agent": self.agent_id, "channel": channel, "kind": kind, "body": body}
        payload.update(
            _present(
                thread_id=thread_id,
                to_agent=to_agent,
                attachments=attachments,
                metadata=metadata,
                reply_to=reply_to,
                parent_task_id=parent_task_id,
            )
        )
        result: dict[str, Any] = self._call("POST", "/v1/messages", payload)
        return result

    def dm(self, to_agent: str, body: str, **kw: Any) -> dict[str, Any]:
        """Send a direct message (in the ``direct`` channel unless ``channel=`` is given)."""
        kw.setdefault("channel", "direct")
        return self.post(body=body, to_agent=to_agent, **kw)

    def poll(
        self,
        *,
        exclude_self: bool = True,
        timeout: float = 30.0,
        channel: str | None = None,
        thread_id: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Long-poll ``/v1/events`` for messages newer than the last ones returned; ``[]`` after ``timeout`` s.

        Sees broadcasts and direct messages to this agent. Advances the client's
        ``since_id``, so each message is returned once.
        """
        params: dict[str, Any] = {
            "agent_id": self.agent_id,
            "since_id": self._since_id,
            "timeout": timeout,
            "limit": limit,
        }
        if exclude_self:
            params["exclude_self"] = 1
        params.update(_present(channel=channel, thread_id=thread_id))
        messages: list[dict[str, Any]] = self._call(
            "GET", "/v1/events", params=params, wait=min(max(timeout, 0.0), MAX_LONG_POLL_SEC)
        )
        if messages:
            self._since_id = max(self._since_id, *(int(m["id"]) for m in messages))
        return messages

    def bootstrap(self) -> dict[str, Any]:
        """This agent's starting view of the hub; moves ``since_id`` to the latest visible message."""
        result: dict[str, Any] = self._call("GET", "/v1/bootstrap", params={"agent_id": self.agent_id})
        self._since_id = max(self._since_id, int(result.get("latest_visible_id") or 0))
        return result

    def whoami(self) -> dict[str, Any]:
        """Same as ``bootstrap()``."""
        return self.bootstrap()

    def claim(
        self,
        claim_key: str,
        *,
        thread_id: str | None = None,
        task_message_id: int | None = None,
        ttl_sec: int = 300,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Try to claim ``claim_key``. Returns the claim; ``owner_agent_id`` says who holds it (maybe someone else)."""
        payload: dict[str, Any] = {"owner_agent_id": self.agent_id, "claim_key": claim_key, "ttl_sec": ttl_sec}
        payload.update(_present(thread_id=thread_id, task_message_id=task_message_id, metadata=metadata))
        result: dict[str, Any] = self._call("POST", "/v1/claims", payload)
        return result

    def refresh_claim(self, claim_key: str, ttl_sec: int = 300) -> dict[str, Any]:
        """Extend a claim this agent holds to ``ttl_sec`` from now."""
        payload = {"claim_key": claim_key, "owner_agent_id": self.agent_id, "ttl_sec": ttl_sec}
        result: dict[str, Any] = self._call("POST", "/v1/claims/refresh", payload)
        return result

    def release(self, claim_key: str) -> dict[str, Any]:
        """Release a claim this agent holds."""
        result: dict[str, Any] = self._call(
            "POST", "/v1/claims/release", {"claim_key": claim_key, "agent_id": self.agent_id}
        )
        return result

    def lock(self, file_path: str, ttl_sec: int = 300, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Try to lock ``file_path``. Returns the lock; ``agent_id`` says who holds it (maybe someone else)."""
        payload: dict[str, Any] = {"agent_id": self.agent_id, "file_path": file_path, "ttl_sec": ttl_sec}
        payload.update(_present(metadata=metadata))
        result: dict[str, Any] = self._call("POST", "/v1/locks", payload)
        return result

    def unlock(self, file_path: str) -> dict[str, Any]:
        """Release this agent's lock on ``file_path``."""
        result: dict[str, Any] = self._call(
            "POST", "/v1/locks/release", {"agent_id": self.agent_id, "file_path": file_path}
        )
        return result

    def complete_task(self, task_id: int) -> dict[str, Any]:
        """Mark task ``task_id`` (the id of its ``task``/``task_request`` message) done."""
        result: dict[str, Any] = self._call("POST", f"/v1/tasks/{int(task_id)}/complete", {})
        return result

    @classmethod
    def quickstart(
        cls,
        agent_id: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        display_name: str | None = None,
        capabilities: list[str] | None = None,
        timeout: float = 15.0,
        key: str | None = None,
    ) -> ArcClient:
        """Construct, register (``replace=True``) and return a ready-to-use client."""
        client = cls(agent_id, base_url=base_url, timeout=timeout, key=key)
        client.register(display_name=display_name or agent_id, replace=True, capabilities=capabilities)
        return client

    def call(
        self,
        to_agent: str,
        body: str,
        *,
        channel: str = "direct",
        timeout: float = 30.0,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Agent-to-agent RPC: post a ``task_request`` to ``to_agent`` and return its ``task_result`` message.

        The result is the first ``task_result`` whose ``reply_to`` is the request's
        id, posted to any channel or sent directly to this agent. Waits on the
        ``/v1/events`` long-poll, so it returns as soon as the result is stored.
        Does not move ``poll()``'s position. Raises ``ArcError`` (status 408) after
        ``timeout`` seconds without a result.
        """
        request = self.post(channel, body, kind="task_request", to_agent=to_agent, metadata=metadata)
        request_id = int(request["id"])
        since_id = request_id
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ArcError(f"RPC to {to_agent} timed out after {timeout:g}s (request {request_id})", status=408)
            wait = min(remaining, MAX_LONG_POLL_SEC)
            # Own messages included: an agent may call itself, and the result is then its own post.
            params = {"agent_id": self.agent_id, "since_id": since_id, "timeout": f"{wait:.3f}", "limit": 500}
            messages: list[dict[str, Any]] = self._call("GET", "/v1/events", params=params, wait=wait)
            for message in messages:
                if message.get("kind") == "task_result" and message.get("reply_to") == request_id:
                    return message
            if messages:
                since_id = max(since_id, *(int(m["id"]) for m in messages))
