"""A Python client for an Arc hub, on ``requests``.

The same API as ``ArcClient`` in Arc's reference ``arc.py``, so code written for
Arc runs unchanged, with two fixes:

- ``call()`` (agent-to-agent RPC) waits on the ``/v1/events`` long-poll, so it
  returns as soon as the result is posted, and it sees the result whether the
  worker posted it to the channel or sent it as a direct message to the caller
  (Arc's scans only the channel, once a second);
- ``poll()``'s HTTP timeout covers the long-poll it asks for (Arc's gives up
  after 15 s on a 30 s long-poll).

It adds this hub's extensions: ``stream()`` (the ``/v1/stream`` Server-Sent
Events feed, resumed after a dropped connection or a hub restart without gaps
or duplicates), the post's delivery receipt (``last_receipt``),
``message_status()`` and ``wait_for()``.

This module imports nothing from Django nor from the hub: an agent can copy this
one file next to its code and ``pip install requests`` (an import contract checks it). Example::

    alice = ArcClient.quickstart("alice", "http://127.0.0.1:6969")
    alice.post("general", "hello")
    for message in alice.poll(timeout=30):
        print(message["from_agent"], message["body"])
    for message in alice.stream():  # until the caller breaks out, or close()
        print(message["from_agent"], message["body"])

A sandboxed agent that cannot reach the hub's port but shares a directory with
it uses ``ArcClient.over_relay(agent_id, spool_dir)``: the same API, each call a
request file in the hub's relay spool (Arc's layout) and its answer a response
file; ``stream()`` then long-polls instead of holding an SSE connection::

    bob = ArcClient.over_relay("bob", "/shared/.arc-relay", key=BOB_KEY)
    bob.register()
    for message in bob.stream():  # messages only over the relay
        print(message["from_agent"], message["body"])
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import os
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import requests
import urllib3

DEFAULT_BASE_URL = "http://127.0.0.1:6969"
# Arc clamps long-polls to 60 s; asking for more just returns at 60.
MAX_LONG_POLL_SEC = 60.0
# ``ArcError.status`` when no HTTP response came back at all (refused, unreachable, timed out),
# the code Arc's relay uses for the same case.
TRANSPORT_ERROR_STATUS = 599
# The hub sends a keep-alive comment on an idle stream at least every 15 s; a stream
# silent for three times that is dead (a half-open connection), and is reconnected.
STREAM_READ_TIMEOUT_SEC = 45.0
# Reconnect delays: full jitter, uniform in [0, min(max_backoff, BASE * 2**attempt)].
STREAM_BACKOFF_BASE_SEC = 0.1
# What a post's envelope carries besides ``result`` (delivery truth), kept on ``last_receipt``.
RECEIPT_FIELDS = ("recipients", "warning", "delivery")
# The file-spool relay (``over_relay``): Arc's default spool, and the statuses Arc's relay client
# uses when the request cannot be written (597) or no response file comes in time (598).
DEFAULT_SPOOL_DIR = ".arc-relay"
RELAY_WRITE_ERROR_STATUS = 597
RELAY_TIMEOUT_STATUS = 598
# Waiting for a response file: look again after 2 ms, backing off to 50 ms, so a quick answer is
# picked up at once and a long-poll held by the hub costs a few stat() calls a second.
RELAY_POLL_FIRST_SEC = 0.002
RELAY_POLL_MAX_SEC = 0.05
# stream() over the relay long-polls /v1/events this long per request; under Arc's relay's 30 s
# forwarding timeout, so the same client works against both relays.
RELAY_STREAM_POLL_SEC = 25.0
# A state change that got no answer (the connection failed or timed out, or a 5xx) is sent again,
# with the same idempotency key, after these pauses. (Over the relay a request left unanswered stays
# in the spool for a relay to come: resending it would only add time.)
RETRY_PAUSES_SEC = (0.2, 1.0)
RETRIED_STATUSES = frozenset({500, 502, 503, 504, TRANSPORT_ERROR_STATUS})
# POSTs that are not a single state change to replay: an ask waits for replies after posting.
UNKEYED_PATHS = frozenset({"/v1/ask"})

log = logging.getLogger("arc.client")
# Seams for tests: the jitter source, and the pause between reconnects.
_random = random.Random()


def _backoff_sleep(delay: float, stop: threading.Event) -> None:
    """Wait ``delay`` s before reconnecting; returns early when the stream is stopped."""
    stop.wait(delay)


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
        # Who the last post() reached: the envelope's ``recipients``, ``warning`` and (DMs) ``delivery``.
        self.last_receipt: dict[str, Any] | None = None
        self._streams: set[_StreamHandle] = set()
        self._streams_lock = threading.Lock()
        # Set by over_relay(): every request then goes through this file spool instead of HTTP.
        self._spool: _Spool | None = None
        self._given_key: str | None = None

    @property
    def since_id(self) -> int:
        """Id of the newest message ``poll()`` has returned; the next poll returns newer ones only."""
        return self._since_id

    @since_id.setter
    def since_id(self, value: int) -> None:
        self._since_id = int(value)

    # ── plumbing ──────────────────────────────────────────────────────────

    def close(self) -> None:
        """Stop this client's open ``stream()`` iterators (from any thread) and close pooled connections.

        The client stays usable: later calls open new connections.
        """
        with self._streams_lock:
            responses = []
            for handle in self._streams:
                handle.stop.set()
                responses.append(handle.response)
        for response in responses:
            _interrupt(response)
        self._session.close()

    def __enter__(self) -> ArcClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def idempotency_key(self, key: str) -> Iterator[None]:
        """State changes inside the block carry ``key`` instead of a fresh one: a caller's own retry of
        one logical call (an MCP tool called again with its ``idempotency_key``) gets the first answer."""
        self._given_key = key
        try:
            yield
        finally:
            self._given_key = None

    def call_hub(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        params: dict[str, Any] | None = None,
        wait: float = 0.0,
    ) -> Any:
        """Send one request to any endpoint (over HTTP or the relay) and return the envelope's ``result``.

        ``ArcError`` for an error envelope. ``wait`` is how long the hub may hold the request (a long-poll); the HTTP
        timeout is that plus the client's own ``timeout``.
        """
        return self._envelope(method, path, payload, params=params, wait=wait).get("result")

    def _envelope(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        params: dict[str, Any] | None = None,
        wait: float = 0.0,
    ) -> dict[str, Any]:
        """Send one request and return the whole success envelope (``result`` plus top-level extras).

        The one transport seam: over HTTP by default, through the file spool after ``over_relay()``.
        """
        # A state change carries a key of its own, reused on this call's retries: a retry after a lost
        # answer gets the first answer again instead of doing the work twice (docs/protocol.md, "Retries").
        key = None
        if method == "POST" and path not in UNKEYED_PATHS:
            key = self._given_key or uuid.uuid4().hex
        pauses = RETRY_PAUSES_SEC if key is not None else ()
        for attempt in range(len(pauses) + 1):
            try:
                return self._send(method, path, payload, params=params, wait=wait, key=key)
            except ArcError as exc:
                if attempt == len(pauses) or exc.status not in RETRIED_STATUSES:
                    raise
                log.info("%s %s: %s; retrying with the same idempotency key", method, path, exc.error)
                time.sleep(pauses[attempt])
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _send(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        *,
        params: dict[str, Any] | None,
        wait: float,
        key: str | None,
    ) -> dict[str, Any]:
        """One attempt of ``_envelope``: over HTTP, or through the spool after ``over_relay()``."""
        if self._spool is not None:
            return self._relay_envelope(method, path, payload, params=params, wait=wait, key=key)
        url = self.base_url + path
        headers = {"Idempotency-Key": key} if key is not None else None
        try:
            response = self._session.request(
                method, url, json=payload, params=params, timeout=self.timeout + wait, headers=headers
            )
        except requests.Timeout as exc:
            raise ArcError(
                f"connection error: no answer from the hub at {self.base_url} within {self.timeout + wait:g}s ({exc})",
                TRANSPORT_ERROR_STATUS,
            ) from exc
        except requests.RequestException as exc:
            raise self._unreachable(exc) from exc
        return self._parse_envelope(response, method, path)

    def _relay_envelope(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        params: dict[str, Any] | None = None,
        wait: float = 0.0,
        stop: threading.Event | None = None,
        key: str | None = None,
    ) -> dict[str, Any]:
        """``_envelope`` through the spool: the hub's envelope, unwrapped from the relay's response file.

        Waits ``timeout + wait`` s for the answer; raises ``_RelayStopped`` if ``stop`` is set first.
        """
        assert self._spool is not None
        target = _with_query(path, params)
        answer = self._spool.exchange(method, target, payload, within=self.timeout + wait, stop=stop, key=key)
        body, status = answer.get("body"), answer.get("status")
        status = status if isinstance(status, int) else 500
        if isinstance(body, dict):
            if body.get("ok"):
                return body
            error = body.get("error") or answer.get("error")
            raise ArcError(
                str(error or f"unexpected response from {method} {target}: {body!r}"), status if status >= 400 else 400
            )
        if body is None and answer.get("error"):  # the relay's own failure (Arc's writes no body then)
            raise ArcError(str(answer["error"]), status if status >= 400 else 400)
        raise ArcError(
            f"{method} {target}: the hub did not answer with JSON through the relay in {self._spool.root} "
            f"(HTTP {status}): {str(body)[:200]!r}",
            status,
        )

    def _unreachable(self, exc: Exception) -> ArcError:
        return ArcError(
            f"connection error: cannot reach the hub at {self.base_url} (is it running?): {exc}",
            TRANSPORT_ERROR_STATUS,
        )

    def _parse_envelope(self, response: requests.Response, method: str, path: str) -> dict[str, Any]:
        """The success envelope of ``response``; ``ArcError`` for an error envelope or a non-JSON answer."""
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
        return envelope

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
        result: dict[str, Any] = self.call_hub("POST", "/v1/sessions", body)
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
        priority: str | None = None,
        ttl_sec: int | None = None,
        expects_reply: str | None = None,
        max_attempts: int | None = None,
    ) -> dict[str, Any]:
        """Post a message to ``channel`` (a direct message when ``to_agent`` is set). Returns the stored message.

        This hub's extensions: ``priority`` (``low``/``normal``/``high``/``critical``,
        the lease order of direct messages), ``ttl_sec`` (expiry), ``expects_reply``
        (``anyone`` or an agent id) and ``max_attempts`` (a direct message's retries
        before it becomes a dead letter).

        Who it reached is kept on ``last_receipt`` (``recipients``: how many live
        agents can see it; for a DM ``delivery``: ``{recipient: state}``; and a
        ``warning`` when it reached nobody live, also logged on ``arc.client``).
        """
        payload: dict[str, Any] = {"from_agent": self.agent_id, "channel": channel, "kind": kind, "body": body}
        payload.update(
            _present(
                thread_id=thread_id,
                to_agent=to_agent,
                attachments=attachments,
                metadata=metadata,
                reply_to=reply_to,
                parent_task_id=parent_task_id,
                priority=priority,
                ttl_sec=ttl_sec,
                expects_reply=expects_reply,
                max_attempts=max_attempts,
            )
        )
        return self._post_payload(payload)

    def _post_payload(self, payload: dict[str, Any], path: str = "/v1/messages") -> dict[str, Any]:
        channel = payload.get("channel")
        envelope = self._envelope("POST", path, payload)
        self.last_receipt = {name: envelope[name] for name in RECEIPT_FIELDS if name in envelope}
        result: dict[str, Any] = envelope["result"]
        warning = envelope.get("warning")
        if warning:
            log.warning("message %s from %s in %s: %s", result.get("id"), self.agent_id, channel, warning)
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
        resume: bool = False,
    ) -> list[dict[str, Any]]:
        """Long-poll ``/v1/events`` for messages newer than the last ones returned; ``[]`` after ``timeout`` s.

        Sees broadcasts and direct messages to this agent. Advances the client's
        ``since_id``, so each message is returned once. ``resume``: skip what any reader
        already handed this agent too (a stream, another poll, a hook: the hub's cursor).
        """
        params: dict[str, Any] = {
            "agent_id": self.agent_id,
            "since_id": self._since_id,
            "timeout": timeout,
            "limit": limit,
        }
        if exclude_self:
            params["exclude_self"] = 1
        if resume:
            params["resume"] = 1
        params.update(_present(channel=channel, thread_id=thread_id))
        messages: list[dict[str, Any]] = self.call_hub(
            "GET", "/v1/events", params=params, wait=min(max(timeout, 0.0), MAX_LONG_POLL_SEC)
        )
        if messages:
            self._since_id = max(self._since_id, *(int(m["id"]) for m in messages))
        return messages

    def stream(
        self,
        *,
        channels: str | Iterable[str] | None = None,
        types: str | Iterable[str] | None = None,
        exclude_self: bool = True,
        since_id: int | None = None,
        reconnect: bool = True,
        max_backoff: float = 30.0,
    ) -> Generator[dict[str, Any], None, None]:
        """Iterate over ``/v1/stream`` (Server-Sent Events): messages as they are posted, newest last.

        Yields each message visible to this agent (broadcasts and its DMs) as the
        message dict, starting after ``since_id`` (default: the client's cursor,
        which ``bootstrap()`` moves to the latest message), and advances the
        client's ``since_id`` as ``poll()`` does, so the two share one cursor.
        ``channels`` narrows the rooms; ``types`` names the events wanted
        (``"message"``, ``"claim"``, ``"lock"``, ``"task"``, ``"presence"``,
        ``"delivery"``, ``"room"``; default messages only). Named events come as
        ``{"event": "claim", **data}``; leave ``"message"`` out of ``types`` to get
        only those.

        When the connection drops or the hub restarts, it reconnects after a
        delay with full jitter (0.1 s doubling per failed attempt, at most
        ``max_backoff``; back to 0.1 s after a successful connect) and resumes
        after the last message it yielded (``Last-Event-ID``): no gap, no
        duplicate. With ``reconnect=False`` a lost connection raises
        ``ArcError`` (status 599) instead, and the iteration ends when the hub
        ends the stream. An error answer (bad ``types``, unknown agent key)
        raises ``ArcError`` either way. A stream of one room (``channels="ops"``)
        ends when an admin closes that room (with ``"room"`` in ``types``, after
        yielding ``{"event": "room", "action": "closed", ...}``).

        It runs until the caller breaks out of the loop, calls ``close()`` on
        the iterator, or calls the client's ``close()`` (from any thread); each
        closes the HTTP response.

        Over the relay (``over_relay()``) Server-Sent Events cannot pass through
        files: the same iterator long-polls ``/v1/events`` instead, with the same
        cursor, ``channels`` and ``exclude_self``, and retries a relay that does
        not answer (598/599) unless ``reconnect=False``. It yields messages only:
        named event ``types`` raise ``ArcError`` (they need HTTP).
        """
        if self._spool is not None:
            yield from self._relay_stream(
                channels=channels,
                types=types,
                exclude_self=exclude_self,
                since_id=since_id,
                reconnect=reconnect,
                max_backoff=max_backoff,
            )
            return
        params: dict[str, Any] = {"agent_id": self.agent_id}
        if exclude_self:
            params["exclude_self"] = 1
        params.update(_present(channels=_csv(channels), types=_csv(types)))
        # The hub sends room events unasked; yielded only when asked for. Closing the one room
        # followed ends the stream (the hub ends it, and reconnecting would find it closed).
        wanted = set((_csv(types) or "message").split(","))
        only = params["channels"] if "," not in params.get("channels", ",") else None
        cursor = self._since_id if since_id is None else int(since_id)
        handle = _StreamHandle()
        with self._streams_lock:
            self._streams.add(handle)
        attempt = 0
        try:
            while not handle.stop.is_set():
                response = self._stream_connect(handle, params, cursor, reconnect=reconnect)
                if response is not None:
                    attempt = 0
                    try:
                        for event in self._stream_read(response, handle):
                            item = _stream_item(event)
                            if event.event == "message":
                                cursor = max(cursor, int(item["id"]))
                                self._since_id = max(self._since_id, cursor)
                            if event.event != "room" or "room" in wanted:
                                yield item
                            if event.event == "room" and item.get("action") == "closed" and item["channel"] == only:
                                return  # the one room followed is closed: the hub ended the stream for good
                        if not reconnect:
                            return  # the hub ended the stream
                    except _StreamLost as lost:
                        if not reconnect:
                            raise ArcError(
                                f"connection error: lost the stream from {self.base_url}: {lost.__cause__}",
                                TRANSPORT_ERROR_STATUS,
                            ) from lost.__cause__
                    finally:
                        response.close()
                if handle.stop.is_set():
                    return
                delay = _random.uniform(0.0, min(max_backoff, STREAM_BACKOFF_BASE_SEC * 2**attempt))
                attempt += 1
                _backoff_sleep(delay, handle.stop)
        finally:
            with self._streams_lock:
                self._streams.discard(handle)

    def _stream_connect(
        self, handle: _StreamHandle, params: dict[str, Any], cursor: int, *, reconnect: bool
    ) -> requests.Response | None:
        """Open the stream after ``cursor``; ``None`` when the hub cannot be reached (or was stopped) and we retry."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if cursor:
            headers["Last-Event-ID"] = str(cursor)
        try:
            response = self._session.get(
                self.base_url + "/v1/stream",
                params={**params, "since_id": cursor},
                headers=headers,
                stream=True,
                timeout=(self.timeout, STREAM_READ_TIMEOUT_SEC),
            )
        except requests.RequestException as exc:
            if not reconnect:
                raise self._unreachable(exc) from exc
            log.debug("stream: cannot reach %s (%s); retrying", self.base_url, exc)
            return None
        if response.status_code != 200:
            try:
                # A hub restarting behind a proxy answers 502/503 for a moment: retry those.
                if reconnect and (response.status_code >= 500 or response.status_code == 429):
                    log.debug("stream: HTTP %s from %s; retrying", response.status_code, self.base_url)
                    return None
                self._parse_envelope(response, "GET", "/v1/stream")
                raise ArcError(f"GET /v1/stream: unexpected HTTP {response.status_code}", response.status_code)
            finally:
                response.close()
        with self._streams_lock:
            handle.response = response
            stopped = handle.stop.is_set()
        if stopped:  # close() ran while we were connecting
            response.close()
            return None
        return response

    def _stream_read(self, response: requests.Response, handle: _StreamHandle) -> Iterator[SSEEvent]:
        """The events of one connection; raises ``_StreamLost`` when the connection fails (not when stopped)."""
        parser = _SSEParser()
        chunks = response.iter_content(chunk_size=None)
        while True:
            try:
                chunk = next(chunks, None)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                if handle.stop.is_set():
                    return
                raise _StreamLost from exc
            except Exception:
                if handle.stop.is_set():
                    return  # close() pulled the connection from under the read
                raise
            if chunk is None:
                return
            yield from parser.feed(chunk)

    def _relay_stream(
        self,
        *,
        channels: str | Iterable[str] | None,
        types: str | Iterable[str] | None,
        exclude_self: bool,
        since_id: int | None,
        reconnect: bool,
        max_backoff: float,
    ) -> Generator[dict[str, Any], None, None]:
        """``stream()`` over the relay: ``/v1/events`` long-polls in a loop, yielding what the SSE feed would.

        ``channels`` narrows broadcasts here, as the hub does for the stream (direct
        messages always pass): ``/v1/events`` takes one ``channel``, which would drop
        them. Following exactly one room, the iteration ends after that room's
        closing notice, or, when it was closed already, once the backlog is read.
        """
        named = set((_csv(types) or "message").split(",")) - {"message"}
        if named:
            raise ArcError(
                f"stream(types=...): {', '.join(sorted(named))} events come only over HTTP (GET /v1/stream); "
                "over the relay stream() yields messages (leave types out, or use an HTTP client)",
                400,
            )
        rooms = set((_csv(channels) or "").split(",")) - {""}
        only = next(iter(rooms)) if len(rooms) == 1 else None
        closed: bool | None = None if only else False  # known after the first look at the room
        cursor = self._since_id if since_id is None else int(since_id)
        params: dict[str, Any] = {"agent_id": self.agent_id, "limit": 500}
        if exclude_self:
            params["exclude_self"] = 1
        handle = _StreamHandle()
        with self._streams_lock:
            self._streams.add(handle)
        attempt = 0
        try:
            while not handle.stop.is_set():
                try:
                    if closed is None:
                        closed = self._relay_room_closed(str(only), handle.stop)
                    wait = 0.0 if closed else RELAY_STREAM_POLL_SEC
                    envelope = self._relay_envelope(
                        "GET",
                        "/v1/events",
                        params={**params, "since_id": cursor, "timeout": f"{wait:g}"},
                        wait=wait,
                        stop=handle.stop,
                    )
                except _RelayStopped:
                    return
                except ArcError as exc:
                    retry = exc.status in (RELAY_TIMEOUT_STATUS, TRANSPORT_ERROR_STATUS, 429) or (
                        500 <= exc.status < RELAY_WRITE_ERROR_STATUS
                    )
                    if not (reconnect and retry):
                        raise
                    log.debug("stream over the relay: %s; retrying", exc)
                    _backoff_sleep(
                        _random.uniform(0.0, min(max_backoff, STREAM_BACKOFF_BASE_SEC * 2**attempt)), handle.stop
                    )
                    attempt += 1
                    continue
                attempt = 0
                messages: list[dict[str, Any]] = envelope["result"]
                for message in messages:
                    cursor = max(cursor, int(message["id"]))
                    if rooms and message.get("to_agent") is None and message.get("channel") not in rooms:
                        continue
                    self._since_id = max(self._since_id, int(message["id"]))
                    yield message
                    if only is not None and _closes_room(message, only):
                        return  # as the hub ends an SSE stream of one room when it closes
                if closed and not messages:
                    return  # the room was closed before we came, and its backlog is read
        finally:
            with self._streams_lock:
                self._streams.discard(handle)

    def _relay_room_closed(self, name: str, stop: threading.Event) -> bool:
        """Is room ``name`` closed now? (``False`` for a room this client cannot see, or that does not exist.)"""
        rooms: list[dict[str, Any]] = self._relay_envelope("GET", "/v1/channels", stop=stop)["result"]
        return any(room.get("name") == name and room.get("closed") for room in rooms)

    def bootstrap(self) -> dict[str, Any]:
        """This agent's starting view of the hub; moves ``since_id`` to the latest visible message."""
        result: dict[str, Any] = self.call_hub("GET", "/v1/bootstrap", params={"agent_id": self.agent_id})
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
        result: dict[str, Any] = self.call_hub("POST", "/v1/claims", payload)
        return result

    def refresh_claim(self, claim_key: str, ttl_sec: int = 300) -> dict[str, Any]:
        """Extend a claim this agent holds to ``ttl_sec`` from now."""
        payload = {"claim_key": claim_key, "owner_agent_id": self.agent_id, "ttl_sec": ttl_sec}
        result: dict[str, Any] = self.call_hub("POST", "/v1/claims/refresh", payload)
        return result

    def release(self, claim_key: str) -> dict[str, Any]:
        """Release a claim this agent holds."""
        result: dict[str, Any] = self.call_hub(
            "POST", "/v1/claims/release", {"claim_key": claim_key, "agent_id": self.agent_id}
        )
        return result

    def lock(self, file_path: str, ttl_sec: int = 300, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Try to lock ``file_path``. Returns the lock; ``agent_id`` says who holds it (maybe someone else)."""
        payload: dict[str, Any] = {"agent_id": self.agent_id, "file_path": file_path, "ttl_sec": ttl_sec}
        payload.update(_present(metadata=metadata))
        result: dict[str, Any] = self.call_hub("POST", "/v1/locks", payload)
        return result

    def unlock(self, file_path: str) -> dict[str, Any]:
        """Release this agent's lock on ``file_path``."""
        result: dict[str, Any] = self.call_hub(
            "POST", "/v1/locks/release", {"agent_id": self.agent_id, "file_path": file_path}
        )
        return result

    def complete_task(self, task_id: int) -> dict[str, Any]:
        """Mark task ``task_id`` (the id of its ``task``/``task_request`` message) done."""
        result: dict[str, Any] = self.call_hub("POST", f"/v1/tasks/{int(task_id)}/complete", {})
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

    @classmethod
    def over_relay(
        cls,
        agent_id: str,
        spool_dir: str | os.PathLike[str] = DEFAULT_SPOOL_DIR,
        *,
        timeout: float = 30.0,
        key: str | None = None,
    ) -> ArcClient:
        """A client that talks to the hub through its file-spool relay instead of HTTP (Arc's ``over_relay``).

        For sandboxed agents that cannot reach the hub's port but share a directory with
        it: each call writes ``<spool_dir>/requests/<agent>/<id>.json`` and waits for
        ``<spool_dir>/responses/<agent>/<id>.json`` (``timeout`` s plus any long-poll).
        The same API as over HTTP; ``stream()`` long-polls ``/v1/events`` (messages only).
        ``key`` travels in each request envelope. Errors: the hub's as ``ArcError`` with
        its status; 597 when the request cannot be written (or a spool directory is a
        symlink); 598 when no answer comes in time (is the hub's relay running?).
        Nothing is deleted from the spool, as in Arc.
        """
        client = cls(agent_id, timeout=timeout)
        client._spool = _Spool(agent_id, spool_dir, key=key)
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
        return self.await_result(int(request["id"]), timeout=timeout)

    def await_result(self, task_id: int, *, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for the ``task_result`` answering task ``task_id`` (sent to any channel or to this agent).

        Raises ``ArcError`` (status 408) after ``timeout`` seconds without one.
        """
        request_id = int(task_id)
        since_id = request_id
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ArcError(f"no result for task {request_id} after {timeout:g}s", status=408)
            wait = min(remaining, MAX_LONG_POLL_SEC)
            # Own messages included: an agent may call itself, and the result is then its own post.
            params = {"agent_id": self.agent_id, "since_id": since_id, "timeout": f"{wait:.3f}", "limit": 500}
            messages: list[dict[str, Any]] = self.call_hub("GET", "/v1/events", params=params, wait=wait)
            for message in messages:
                if message.get("kind") == "task_result" and message.get("reply_to") == request_id:
                    return message
            if messages:
                since_id = max(since_id, *(int(m["id"]) for m in messages))

    # ── this hub's extensions ─────────────────────────────────────────────

    def message_status(self, message_id: int) -> dict[str, Any]:
        """How far message ``message_id`` got: ``recipients`` is a list of ``{"agent_id", "state", ...}``.

        ``state`` is ``queued``, ``delivered`` (handed to a poll, stream or socket),
        ``leased``, ``acked``, ``failed`` or ``expired``. The hub records deliveries
        in batches, a fraction of a second after they happen.
        """
        result: dict[str, Any] = self.call_hub("GET", f"/v1/messages/{int(message_id)}/status")
        return result

    def close_room(self, name: str) -> dict[str, Any]:
        """Close room ``name`` (needs an admin key): posts to it get 409 and its waiting readers are told.

        Returns the room (``closed: true``); closing a closed room changes nothing.
        """
        result: dict[str, Any] = self.call_hub("POST", f"/v1/channels/{quote(name, safe='')}/close", {})
        return result

    def reopen_room(self, name: str) -> dict[str, Any]:
        """Reopen room ``name`` (needs an admin key): it takes posts again. Returns the room."""
        result: dict[str, Any] = self.call_hub("POST", f"/v1/channels/{quote(name, safe='')}/reopen", {})
        return result

    def search(
        self, q: str, *, channel: str | None = None, from_agent: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Messages whose bodies hold every word of ``q`` (the last word also as a prefix), best match first.

        ``channel`` and ``from_agent`` narrow the results. The hub shows what this client
        may read: with a key, its rooms' broadcasts and its own direct messages. Raises
        ``ArcError`` (400) when ``q`` holds no letter or digit to search for.
        """
        params = {"q": q, "limit": int(limit), **_present(channel=channel, from_agent=from_agent)}
        results: list[dict[str, Any]] = self.call_hub("GET", "/v1/search", params=params)
        return results

    def wait_for(self, n: int, *, timeout: float = 30.0, capability: str | None = None) -> list[dict[str, Any]]:
        """Wait until at least ``n`` agents are live (with ``capability``, if given); returns the roster.

        The hub answers as soon as the n-th agent registers. Raises ``ArcError``
        (status 408) when fewer than ``n`` are live after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            wait = min(max(deadline - time.monotonic(), 0.0), MAX_LONG_POLL_SEC)
            params = {"wait_for": int(n), "timeout": f"{wait:.3f}", **_present(capability=capability)}
            envelope = self._envelope("GET", "/v1/agents", params=params, wait=wait)
            roster: list[dict[str, Any]] = envelope["result"]
            if envelope.get("ready", len(roster) >= n):
                return roster
            if time.monotonic() >= deadline:
                who = f" with capability {capability!r}" if capability else ""
                raise ArcError(
                    f"only {len(roster)} of {n} agents{who} live after {timeout:g}s "
                    f"({', '.join(a['agent_id'] for a in roster) or 'none'})",
                    status=408,
                )
            if "ready" not in envelope:  # a hub without wait_for (Arc) answers at once: ask again in a second
                time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))

    # ── work queue: reliable direct delivery ──────────────────────────────

    def lease(self, max: int = 10, *, lease_sec: int = 60) -> list[dict[str, Any]]:
        """Lease up to ``max`` of this agent's pending direct messages for ``lease_sec`` seconds.

        Highest priority first, then oldest; each message carries its ``delivery``
        (``attempts``, ``max_attempts``, ``leased_until``). ``ack()`` what you handled,
        ``nack()`` what you could not; an unacked lease runs out, the hub tells this
        agent (a ``notice``) and queues the message again, until ``max_attempts`` make
        it a dead letter. Two consumers of one inbox never lease the same message.
        """
        payload = {"max": int(max), "lease_sec": int(lease_sec)}
        leased: list[dict[str, Any]] = self.call_hub(
            "POST", f"/v1/inbox/{quote(self.agent_id, safe='')}/lease", payload
        )
        return leased

    def ack(self, message_ids: int | Iterable[int]) -> int:
        """Mark direct messages handled (their deliveries become ``acked``); returns how many moved."""
        ids = [int(message_ids)] if isinstance(message_ids, int) else [int(i) for i in message_ids]
        result: dict[str, Any] = self.call_hub(
            "POST", "/v1/deliveries/ack", {"agent_id": self.agent_id, "message_ids": ids}
        )
        return int(result["acked"])

    def nack(self, message_id: int, *, reason: str = "", delay_sec: int = 0) -> dict[str, Any]:
        """Give a leased message back: queued again after ``delay_sec``, or failed once its attempts are used up."""
        payload = {"agent_id": self.agent_id, "message_id": int(message_id), "reason": reason, "delay_sec": delay_sec}
        result: dict[str, Any] = self.call_hub("POST", "/v1/deliveries/nack", payload)
        return result

    def deliveries(self, *, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """This agent's delivery records (``state="failed"``: its dead letters), newest first."""
        params = {"agent_id": self.agent_id, "limit": int(limit), **_present(state=state)}
        rows: list[dict[str, Any]] = self.call_hub("GET", "/v1/deliveries", params=params)
        return rows

    # ── delegation and asking ─────────────────────────────────────────────

    def delegate(
        self,
        body: str,
        *,
        to_agent: str | None = None,
        to_capability: str | None = None,
        payload: Any = None,
        ttl_sec: int | None = None,
        thread_id: str | None = None,
        wait: float | None = None,
    ) -> dict[str, Any]:
        """Hand a task to ``to_agent``, or to the least-loaded live agent with ``to_capability``.

        Returns the ``task_request`` message (its ``id`` is the task id, ``to_agent`` the
        assignee), or with ``wait=S`` the ``task_result`` that answers it within S seconds.
        ``ttl_sec`` is the deadline: an unfinished task then times out and this agent is told.
        Raises ``ArcError`` (409) when no live agent has the capability.
        """
        task: dict[str, Any] = {"from_agent": self.agent_id, "body": body}
        task.update(
            _present(
                to_agent=to_agent, to_capability=to_capability, ttl_sec=ttl_sec, thread_id=thread_id, payload=payload
            )
        )
        request = self._post_payload(task, "/v1/tasks")
        if wait is None:
            return request
        return self.await_result(int(request["id"]), timeout=wait)

    def answer(self, task_id: int, body: str = "", *, success: bool = True, payload: Any = None) -> dict[str, Any]:
        """Answer a task you hold: a ``task_result`` to its requester that finishes it (fails it unless ``success``)."""
        result = {"from_agent": self.agent_id, "body": body, "success": success}
        result.update(_present(payload=payload))
        return self._post_payload(result, f"/v1/tasks/{int(task_id)}/result")

    def ask(
        self,
        body: str,
        *,
        channel: str | None = None,
        to_capability: str | None = None,
        max_replies: int = 5,
        timeout: float = 30.0,
        thread_id: str | None = None,
    ) -> dict[str, Any]:
        """Ask a room (default ``general``) or every live agent with ``to_capability``, and gather replies.

        The hub answers when ``max_replies`` replies (messages with ``reply_to`` the
        question) have arrived or ``timeout`` seconds (up to 300) have passed:
        ``{"question", "question_ids", "asked", "replies", "complete"}``.
        """
        payload = {"from_agent": self.agent_id, "body": body, "max_replies": int(max_replies), "timeout": timeout}
        payload.update(_present(channel=channel, to_capability=to_capability, thread_id=thread_id))
        result: dict[str, Any] = self.call_hub("POST", "/v1/ask", payload, wait=timeout)
        return result

    def gather(self, message_id: int, *, max_replies: int = 5, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Replies to message ``message_id``, waiting up to ``timeout`` s until ``max_replies`` have arrived."""
        deadline = time.monotonic() + timeout
        while True:
            wait = min(max(deadline - time.monotonic(), 0.0), MAX_LONG_POLL_SEC)
            params = {"max": int(max_replies), "timeout": f"{wait:.3f}"}
            result: dict[str, Any] = self.call_hub(
                "GET", f"/v1/messages/{int(message_id)}/replies", params=params, wait=wait
            )
            replies: list[dict[str, Any]] = result["replies"]
            if result["complete"] or time.monotonic() >= deadline:
                return replies


def _csv(value: str | Iterable[str] | None) -> str | None:
    """``"a,b"`` from a string or a list of names; ``None`` when there are none."""
    if value is None:
        return None
    names = [value] if isinstance(value, str) else list(value)
    return ",".join(name for name in names if name) or None


def _closes_room(message: dict[str, Any], room: str) -> bool:
    """Is ``message`` the hub's notice that ``room`` was closed (posted in it as the close happens)?"""
    metadata = message.get("metadata")
    return (
        message.get("kind") == "notice"
        and message.get("from_agent") == "system"
        and message.get("channel") == room
        and isinstance(metadata, dict)
        and metadata.get("room_action") == "closed"
    )


def _with_query(path: str, params: dict[str, Any] | None) -> str:
    """``path?query`` as ``requests`` would encode ``params`` (``None`` values left out)."""
    query = urlencode({k: v for k, v in (params or {}).items() if v is not None}, doseq=True)
    return f"{path}?{query}" if query else path


# Arc's spool names: runs of anything outside [A-Za-z0-9._-] become one "_" (arc.py's _safe_agent_id).
_SPOOL_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Where the platform has it, files in the spool are never opened through a symlink.
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def spool_name(agent_id: str) -> str:
    """The spool directory name of ``agent_id``, as Arc derives it (``"agent"`` when nothing is left)."""
    return _SPOOL_UNSAFE.sub("_", str(agent_id or "").strip()) or "agent"


def relay_request(
    agent_id: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    *,
    key: str | None = None,
    request_id: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """A relay request envelope, as Arc's ``FileRelayClient`` writes it (docs/relay.md).

    ``key`` (the agent key) and ``idempotency_key`` (a retry's key) when given.
    """
    envelope: dict[str, Any] = {
        "request_id": request_id or uuid.uuid4().hex,
        "agent_id": agent_id,
        "method": method.upper(),
        "path": path,
        "body": body,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if key:
        envelope["key"] = key
    if idempotency_key:
        envelope["idempotency_key"] = idempotency_key
    return envelope


class _RelayStopped(Exception):
    """``close()`` stopped a stream while it waited for a response file."""


class _Spool:
    """This client's end of Arc's file-spool relay: one request file in, one response file out per call.

    Layout and envelopes as Arc's ``FileRelayClient``. The spool is append-only:
    nothing here deletes a file (some sandbox mounts refuse deletes).
    """

    def __init__(self, agent_id: str, spool_dir: str | os.PathLike[str], *, key: str | None) -> None:
        root = Path(spool_dir).expanduser()
        # Lexical, as Arc: resolve() can turn a sandbox's odd mount path into an unusable one.
        self.root = root if root.is_absolute() else Path.cwd() / root
        self.agent_id = agent_id
        self.key = key
        self.name = spool_name(agent_id)
        if self.name in (".", ".."):  # Arc keeps these, and they would name the spool itself
            raise ArcError(f"agent id {agent_id!r} cannot name a spool directory", 400)

    def exchange(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        within: float,
        stop: threading.Event | None,
        key: str | None = None,
    ) -> dict[str, Any]:
        """Write one request and return the relay's response envelope, waiting up to ``within`` s."""
        envelope = relay_request(self.agent_id, method, path, body, key=self.key, idempotency_key=key)
        request_id = envelope["request_id"]
        requests_dir, responses_dir = self._agent_dirs()
        try:
            spool_write(requests_dir / f"{request_id}.json", json.dumps(envelope).encode())
        except OSError as exc:
            raise ArcError(
                f"relay: cannot write the request into {requests_dir}: {exc}", RELAY_WRITE_ERROR_STATUS
            ) from exc
        return self._await(responses_dir / f"{request_id}.json", f"{method} {path}", within, stop)

    def _agent_dirs(self) -> tuple[Path, Path]:
        """``requests/<agent>`` and ``responses/<agent>``, created if missing; refused if either is a symlink.

        Checked on every call (a link put there later is refused too), before anything is created.
        """
        dirs = (self.root / "requests" / self.name, self.root / "responses" / self.name)
        for part in (dirs[0].parent, dirs[0], dirs[1].parent, dirs[1]):
            if part.is_symlink():
                raise ArcError(
                    f"relay: {part} is a symbolic link; the spool never follows one (make it a real directory)",
                    RELAY_WRITE_ERROR_STATUS,
                )
        for path in dirs:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ArcError(f"relay: cannot create {path}: {exc}", RELAY_WRITE_ERROR_STATUS) from exc
        return dirs

    def _await(self, path: Path, what: str, within: float, stop: threading.Event | None) -> dict[str, Any]:
        deadline = time.monotonic() + within
        pause = RELAY_POLL_FIRST_SEC
        unreadable_since: float | None = None
        while True:
            try:
                fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW)
            except FileNotFoundError:
                pass
            except OSError as exc:  # a symlink planted where the answer belongs (ELOOP), or unreadable
                raise ArcError(f"relay: cannot read the response {path}: {exc}", RELAY_WRITE_ERROR_STATUS) from exc
            else:
                with os.fdopen(fd, "rb") as handle:
                    raw = handle.read()
                try:
                    answer = json.loads(raw)
                except ValueError as exc:
                    # A relay writing in place rather than renaming: give it a moment to finish.
                    unreadable_since = unreadable_since or time.monotonic()
                    if time.monotonic() - unreadable_since > 1.0:
                        raise ArcError(f"relay: the response {path} is not valid JSON: {exc}", 502) from exc
                else:
                    if isinstance(answer, dict):
                        return answer
                    raise ArcError(f"relay: the response {path} is not a JSON object: {raw[:200]!r}", 502)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ArcError(
                    f"relay: no response in {self.root} within {within:g}s to {what}; is the hub running with "
                    f"its relay on this spool dir? (`manage.py up --spool-dir {self.root}`, or `manage.py relay`)",
                    RELAY_TIMEOUT_STATUS,
                )
            if stop is None:
                time.sleep(min(pause, left))
            elif stop.wait(min(pause, left)):
                raise _RelayStopped
            pause = min(pause * 1.5, RELAY_POLL_MAX_SEC)


def spool_write(path: Path, data: bytes) -> None:
    """Write ``path`` atomically, as Arc does: a dot-named temporary file beside it, then a rename.

    The relay never sees half a request; the temporary file is created exclusively,
    never through a symlink.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o666)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


class _StreamHandle:
    """One running ``stream()``: the flag ``close()`` sets, and the response it must interrupt."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.response: requests.Response | None = None


class _StreamLost(Exception):
    """The stream's connection failed (the cause says how); the stream reconnects or gives up."""


def _interrupt(response: requests.Response | None) -> None:
    """Wake a thread blocked reading ``response`` and close it.

    Closing a socket does not wake a ``recv()`` blocked on it in another thread;
    shutting it down does, so the reader sees the end at once instead of at the
    next keep-alive.
    """
    if response is None:
        return
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)
    response.close()


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched Server-Sent Event: its type (``message`` unless named), data, and last event id."""

    event: str
    data: str
    id: str | None


_LINE_END = re.compile(r"\r\n|\r|\n")


class _SSEParser:
    """Incremental Server-Sent Events parser, as the HTML standard's event-stream interpretation.

    Feed it the body in chunks of any size; it returns the events each chunk
    completes. Lines end in CRLF, LF or CR (even split across chunks); ``:``
    lines are comments; ``data`` lines accumulate, joined with newlines; an
    empty line dispatches; ``id`` persists until changed; ``retry`` is ignored
    (the client has its own backoff); an event cut off by the end is dropped.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False
        self._skip_lf = False  # the last chunk ended in CR: a LF starting the next one is the same line end
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = text.endswith("\r")
        if not self._started:
            text = text.removeprefix("\ufeff")
            self._started = True
        lines = _LINE_END.split(self._buffer + text)
        self._buffer = lines.pop()
        events = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        return None

    def _dispatch(self) -> SSEEvent | None:
        data, event = self._data, self._event or "message"
        self._data, self._event = [], ""
        if not data:
            return None
        return SSEEvent(event=event, data="\n".join(data), id=self._last_id)


def _stream_item(event: SSEEvent) -> dict[str, Any]:
    """What ``stream()`` yields for ``event``: the message dict, or ``{"event": name, **data}``."""
    try:
        data = json.loads(event.data)
    except ValueError as exc:
        raise ArcError(
            f"GET /v1/stream: event {event.event!r} carries invalid JSON: {event.data[:200]!r}", 502
        ) from exc
    if event.event != "message":
        return {"event": event.event, **data} if isinstance(data, dict) else {"event": event.event, "data": data}
    if not isinstance(data, dict):
        raise ArcError(f"GET /v1/stream: a message event carries {type(data).__name__}, not an object", 502)
    if "id" not in data and event.id is not None and event.id.isdigit():
        data["id"] = int(event.id)
    if "id" not in data:
        raise ArcError("GET /v1/stream: a message event has no id", 502)
    return data
