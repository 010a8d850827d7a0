"""Calling A2A agents elsewhere with the official SDK's client (docs/a2a.md, outbound).

``target_check`` is the guard every outbound URL passes first (a card's, and each interface a card
names): http or https, no credentials in it, and a host whose every address is on the public
internet, unless the operator allowed its network (``ARC_A2A_ALLOW_NETWORKS``): no loopback,
private or link-local target otherwise (so a card URL cannot make the hub read its own admin
API or a cloud's metadata service). ``card_fetch`` reads a card (capped, no redirects);
``send`` delivers one task and follows it to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings

CARD_PATH = "/.well-known/agent-card.json"
MAX_CARD_BYTES = 256 * 1024
MAX_URL_CHARS = 2000
FETCH_TIMEOUT_SEC = 10.0
POLL_FIRST_SEC, POLL_MAX_SEC = 0.5, 5.0  # following a remote task that is still working: its GetTask, backing off
CAPABILITY = re.compile(r"[^A-Za-z0-9._:/-]+")


class Unreachable(Exception):
    """The remote agent could not be reached (a connection, a timeout, its 5xx): worth another attempt."""


class Refused(Exception):
    """The remote agent (or the guard) refused: a protocol error, a bad card, a target not allowed. Final."""


def target_check(url: str, *, resolve: Callable[[str], list[str]] | None = None) -> str:
    """``url`` if the hub may send to it, else ``Refused`` saying why (see the module's docstring)."""
    if not isinstance(url, str) or not url.strip() or len(url) > MAX_URL_CHARS:
        raise Refused(f"a URL of 1 to {MAX_URL_CHARS} characters is needed")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise Refused(f"only http and https URLs are followed, not {parts.scheme or 'a URL without a scheme'}")
    if parts.username is not None or parts.password is not None:
        raise Refused("a URL carrying a user name or password is refused: give the credential separately")
    host = parts.hostname
    if not host:
        raise Refused("the URL names no host")
    try:
        addresses = (resolve or _resolve)(host)
    except OSError as exc:
        raise Unreachable(f"{host} does not resolve: {exc}") from None
    allowed = [ipaddress.ip_network(n) for n in settings.ARC_A2A_ALLOW_NETWORKS]
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if address.is_global or any(address in network for network in allowed):
            continue
        raise Refused(
            f"{host} is at {address}, a loopback, private or link-local address: the hub sends nowhere but the public "
            "internet unless the operator allows that network (ARC_A2A_ALLOW_NETWORKS)"
        )
    return url.strip()


def _resolve(host: str) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)})


def card_url_of(url: str) -> str:
    """An agent's card URL: the URL given when it names a ``.json`` document, else its well-known card."""
    return url if urlsplit(url).path.endswith(".json") else url.rstrip("/") + CARD_PATH


def headers(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"} if credential else {}


async def card_fetch(url: str, credential: str = "") -> tuple[Any, dict[str, Any]]:
    """The remote agent's card (the SDK's ``AgentCard``, and as JSON), checked: every URL it names may be sent to."""
    from google.protobuf.json_format import MessageToDict

    url = target_check(card_url_of(target_check(url)))
    try:
        async with (
            httpx.AsyncClient(timeout=FETCH_TIMEOUT_SEC, follow_redirects=False, headers=headers(credential)) as http,
            http.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code >= 500:
                raise Unreachable(f"its card at {url} answered HTTP {response.status_code}")
            if response.status_code != 200:
                raise Refused(f"its card at {url} answered HTTP {response.status_code}, not the card")
            data = b""
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > MAX_CARD_BYTES:
                    raise Refused(f"its card at {url} is larger than {MAX_CARD_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise Unreachable(f"its card at {url} could not be read: {type(exc).__name__}: {exc}") from None
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise Refused(f"what {url} answered is not an Agent Card: {str(exc)[:300]}") from None
    card = _checked(raw, f"what {url} answered")
    return card, MessageToDict(card)


def capabilities_of(card: Any) -> list[str]:
    """A card's skills as the hub's capabilities: each skill's id, then its tags (cleaned, once each)."""
    seen: dict[str, None] = {}
    for skill in card.skills:
        for name in [skill.id, *skill.tags]:
            cleaned = CAPABILITY.sub("-", str(name)).strip("-")[:200]
            if cleaned:
                seen.setdefault(cleaned, None)
    return list(seen)


@dataclass
class Outcome:
    ok: bool
    body: str


BINDINGS = ["JSONRPC", "HTTP+JSON"]  # what the hub's client speaks, in the order it prefers when a card names both


def card_of(data: dict[str, Any]) -> Any:
    """The SDK's ``AgentCard`` from a card as the hub keeps it, its interfaces checked again (addresses may change)."""
    return _checked(dict(data), "the card kept for the A2A agent")


def _checked(raw: Any, what: str) -> Any:
    """``raw`` parsed by the SDK as an Agent Card that names an interface, every one of them allowed (``Refused``)."""
    from a2a.client.card_resolver import parse_agent_card
    from google.protobuf.json_format import ParseError

    try:
        card = parse_agent_card(raw)
    except (ValueError, TypeError, AttributeError, ParseError) as exc:
        raise Refused(f"{what} is not an Agent Card: {str(exc)[:300]}") from None
    if not card.supported_interfaces:
        raise Refused(f"{what} names no interface to send to")
    for interface in card.supported_interfaces:
        target_check(interface.url)
    return card


@contextlib.asynccontextmanager
async def _client(card: Any, credential: str, timeout: Any) -> AsyncIterator[Any]:
    """The SDK's client for ``card``, over an httpx client that follows no redirect and sends the credential."""
    from a2a.client import ClientConfig, create_client

    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, headers=headers(credential)) as http:
        config = ClientConfig(streaming=True, httpx_client=http, supported_protocol_bindings=BINDINGS)
        client = await create_client(card, client_config=config)
        try:
            yield client
        finally:
            await client.close()


class _Seen:
    """A remote task as its events tell it: its id, state, status message and artifacts' texts."""

    def __init__(self) -> None:
        self.task: Any = None
        self.artifacts: dict[str, str] = {}

    def take(self, event: Any) -> Outcome | None:
        """Fold in one ``StreamResponse``; the outcome once it says the task ended (or answered with a message)."""
        kind = event.WhichOneof("payload")
        if kind == "message":
            return Outcome(True, _text(event.message.parts) or "done")
        if kind == "task":
            self.task = event.task
            self.artifacts = {a.artifact_id: _text(a.parts) for a in event.task.artifacts}
        elif kind == "status_update" and self.task is not None:
            self.task.status.CopyFrom(event.status_update.status)
        elif kind == "artifact_update":
            artifact = event.artifact_update.artifact
            before = self.artifacts.get(artifact.artifact_id, "") if event.artifact_update.append else ""
            self.artifacts[artifact.artifact_id] = before + _text(artifact.parts)
        return self.outcome()

    def outcome(self) -> Outcome | None:
        return None if self.task is None else _ended(self.task, list(self.artifacts.values()))


async def send(
    card: Any,
    *,
    credential: str,
    message_id: str,
    body: str,
    context_id: str,
    remote_task_id: str,
    deadline: float,
    on_sent: Callable[[str], Awaitable[None]],
) -> Outcome:
    """Send a hub task, as the A2A message ``message_id`` with the text ``body``, to the agent of ``card`` (or,
    with ``remote_task_id``, follow the task it already is there) until it ends or ``deadline``
    (``time.monotonic()``) passes; what the hub's task becomes.

    An agent that streams is followed by its stream (its events as they come); one that does not answers the
    blocking send, and a task it leaves unfinished is asked after (GetTask, backing off). ``on_sent`` is told
    the remote task's id as soon as it is known. The caller gives the same ``message_id`` on every attempt,
    so a remote agent that keeps message ids sees a repeat, not a second task.
    ``Unreachable`` for what another attempt may mend; ``Refused`` for what it will not."""
    from a2a.client.errors import A2AClientError, A2AClientTimeoutError
    from a2a.types import (
        CancelTaskRequest,
        GetTaskRequest,
        Message,
        Part,
        Role,
        SendMessageRequest,
        SubscribeToTaskRequest,
    )
    from a2a.utils.errors import A2AError

    left = deadline - time.monotonic()
    if left <= 0:
        return Outcome(False, "timed out before the A2A agent answered")
    seen = _Seen()
    timeout = httpx.Timeout(FETCH_TIMEOUT_SEC, read=None)  # the deadline bounds the whole call, not each read
    async with _client(card, credential, timeout) as client:
        streams = bool(card.capabilities.streaming)
        try:
            async with asyncio.timeout(left):
                if remote_task_id:  # sent before: how it is now, then (if it goes on and the agent streams) its stream
                    if outcome := seen.take(_as_event(await client.get_task(GetTaskRequest(id=remote_task_id)))):
                        return outcome
                    if streams:
                        with contextlib.suppress(A2AError, A2AClientError):  # (ended between the two: asked below)
                            async for event in client.subscribe(SubscribeToTaskRequest(id=remote_task_id)):
                                if (outcome := seen.take(event)) is not None:
                                    return outcome
                else:
                    message = Message(
                        role=Role.ROLE_USER,
                        message_id=message_id,
                        context_id=context_id,
                        parts=[Part(text=body)],
                    )
                    async for event in client.send_message(SendMessageRequest(message=message)):
                        known = seen.task.id if seen.task is not None else ""
                        if (outcome := seen.take(event)) is not None:
                            return outcome
                        if seen.task is not None and seen.task.id != known:
                            await on_sent(seen.task.id)
                if seen.task is None:
                    raise Refused("the A2A agent answered neither a task nor a message")
                pause = POLL_FIRST_SEC
                while (outcome := seen.outcome()) is None:
                    await asyncio.sleep(pause)  # the remote task is its own: the hub asks after it, backing off
                    pause = min(pause * 2, POLL_MAX_SEC)
                    seen.take(_as_event(await client.get_task(GetTaskRequest(id=seen.task.id))))
                return outcome
        except (TimeoutError, httpx.TimeoutException, A2AClientTimeoutError):
            if seen.task is None:
                return Outcome(False, "timed out waiting for the A2A agent")
            with contextlib.suppress(Exception):  # best effort: the hub's task ends here either way
                async with asyncio.timeout(FETCH_TIMEOUT_SEC):
                    await client.cancel_task(CancelTaskRequest(id=seen.task.id))
            return Outcome(
                False, f"timed out waiting for the A2A agent: its task {seen.task.id} was still {_state(seen.task)}"
            )
        except (httpx.TransportError, OSError) as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from None
        except A2AClientError as exc:
            text = str(exc)
            if text.startswith("Network communication error") or re.match(r"HTTP Error 5\d\d", text):
                raise Unreachable(text[:500]) from None
            raise Refused(f"the A2A agent answered with an error: {text[:500]}") from None
        except (A2AError, ValueError) as exc:
            raise Refused(f"the A2A agent answered with an error: {str(exc)[:500]}") from None


async def cancel(card: Any, *, credential: str, remote_task_id: str) -> None:
    """Ask the remote agent to cancel its task (the hub's task ended first); best effort, a few seconds at most."""
    from a2a.types import CancelTaskRequest

    async with _client(card, credential, FETCH_TIMEOUT_SEC) as client, asyncio.timeout(FETCH_TIMEOUT_SEC):
        await client.cancel_task(CancelTaskRequest(id=remote_task_id))


def _as_event(task: Any) -> Any:
    from a2a.types import StreamResponse

    event = StreamResponse()
    event.task.CopyFrom(task)
    return event


def _state(task: Any) -> str:
    from a2a.types import TaskState

    return str(TaskState.Name(task.status.state)).removeprefix("TASK_STATE_").lower().replace("_", "-")


def _ended(task: Any, texts: list[str]) -> Outcome | None:
    """What a remote task's state means for the hub's task (``texts``: its artifacts'): ``None`` while it goes on."""
    from a2a.types import TaskState

    state = task.status.state
    said = _text(task.status.message.parts) if task.status.HasField("message") else ""
    if state == TaskState.TASK_STATE_COMPLETED:
        return Outcome(True, "\n\n".join(t for t in texts if t) or said or "done")
    if state in (TaskState.TASK_STATE_FAILED, TaskState.TASK_STATE_REJECTED, TaskState.TASK_STATE_CANCELED):
        return Outcome(False, f"the A2A agent's task ended {_state(task)}" + (f": {said}" if said else ""))
    if state in (TaskState.TASK_STATE_INPUT_REQUIRED, TaskState.TASK_STATE_AUTH_REQUIRED):
        # (the hub does not yet carry a remote agent's question back to the requester)
        return Outcome(
            False,
            f"the A2A agent asks for {_state(task)}, which the hub cannot give it" + (f": {said}" if said else ""),
        )
    return None


def _text(parts: Any) -> str:
    out = []
    for part in parts:
        kind = part.WhichOneof("content")
        if kind == "text":
            out.append(part.text)
        elif kind == "data":
            from google.protobuf.json_format import MessageToDict

            out.append(json.dumps(MessageToDict(part.data)))
        elif kind:
            out.append(f"[{kind} part: {part.media_type or 'no media type'}]")
    return "\n".join(out)
