"""The hub's doors, each as a test client of one live hub, speaking the same small set of verbs.

Every verb returns an ``Outcome``: the class of the answer (``created``, ``ok``, or the
error status as text: ``400``, ``401``, ``403``, ``404``, ``409``, ``413``, ``429``) and
the message that came with it. A door that cannot express a verb raises ``Inexpressible``
(the parity table lists which doors each case runs through).

Doors: ``rest`` (HTTP), ``longpoll`` and ``sse`` (reads), ``ws`` (WebSocket frames),
``mcp_http`` (``/mcp``) and ``mcp_stdio`` (``manage.py mcp``) with the MCP SDK's own
client, ``relay`` (request files in the hub's spool), ``dashboard`` (a signed-in
browser's forms), ``hooks`` (a coding agent client's HTTP hooks) and ``a2a`` (A2A JSON-RPC).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx2
import requests
import websockets.sync.client
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from coordination.client import relay_request, spool_name, spool_write
from tests.hubproc import ROOT, Hub, manage, sign_in

WAIT_SEC = 60.0  # the longest any one answer may take on a busy machine: generous, never a schedule


@dataclass(frozen=True)
class Outcome:
    cls: str  # "created", "ok", or an error status ("403")
    message: str = ""

    def __str__(self) -> str:
        return self.cls if not self.message else f"{self.cls} ({self.message[:90]})"


class Inexpressible(Exception):
    """This door has no way to make this request."""


@dataclass(frozen=True)
class Persona:
    agent: str
    key: str | None


def of_status(status: int, body: Any, *, created: bool) -> Outcome:
    message = body.get("error", "") if isinstance(body, dict) else str(body)[:200]
    if 200 <= status < 300:
        return Outcome("created" if created else "ok")
    return Outcome(str(status), message or "")


def _split_key(body: Any) -> tuple[Any, str | None]:
    """A request's fields without ``idempotency_key``, and the key (a header over HTTP, a field elsewhere)."""
    if isinstance(body, dict) and "idempotency_key" in body:
        rest = {k: v for k, v in body.items() if k != "idempotency_key"}
        return rest, str(body["idempotency_key"])
    return body, None


def _status_in(text: str) -> str:
    """The HTTP status a tool error names (``... (HTTP 403)``), as the MCP tools report the hub's refusals."""
    found = re.findall(r"\(HTTP (\d{3})\)", text)
    return found[-1] if found else "error"


class Door:
    name = "door"

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def close(self) -> None:
        """Nothing held by default."""

    def post(self, who: Persona, fields: dict[str, Any]) -> Outcome:
        raise Inexpressible

    def read(self, who: Persona, room: str) -> Outcome:
        raise Inexpressible

    def delegate(self, who: Persona, fields: dict[str, Any]) -> Outcome:
        raise Inexpressible

    def answer(self, who: Persona, task_id: int, body: str) -> Outcome:
        raise Inexpressible

    def complete(self, who: Persona, task_id: int) -> Outcome:
        raise Inexpressible

    def start(self, who: Persona, task_id: int) -> Outcome:
        raise Inexpressible

    def claim_task(self, who: Persona, task_id: int) -> Outcome:
        raise Inexpressible

    def act_as(self, who: Persona, other: str) -> Outcome:
        """Act as agent ``other`` with ``who``'s credentials (a post naming it, or a session opened as it)."""
        raise Inexpressible

    def raw(self, who: Persona, data: bytes) -> Outcome:
        """Send ``data`` where a post's JSON goes (a request body, a frame, a request file)."""
        raise Inexpressible


# ── REST (and the reads of long-poll and SSE) ──────────────────────────────


class Rest(Door):
    name = "rest"

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def call(
        self,
        who: Persona,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        created: bool = False,
    ) -> Outcome:
        headers = {"Content-Type": "application/json"}
        if who.key:
            headers["Authorization"] = f"Bearer {who.key}"
        body, retry_key = _split_key(body)
        if retry_key is not None:
            headers["Idempotency-Key"] = retry_key
        raw = data if data is not None else (json.dumps(body).encode() if body is not None else None)
        response = self.session.request(method, self.hub.url + path, data=raw, headers=headers, timeout=WAIT_SEC)
        try:
            envelope = response.json()
        except ValueError:
            envelope = response.text
        return of_status(response.status_code, envelope, created=created)

    def post(self, who: Persona, fields: dict[str, Any]) -> Outcome:
        return self.call(who, "POST", "/v1/messages", fields, created=True)

    def read(self, who: Persona, room: str) -> Outcome:
        return self.call(who, "GET", f"/v1/messages?channel={room}&since_id=0")

    def delegate(self, who: Persona, fields: dict[str, Any]) -> Outcome:
        return self.call(who, "POST", "/v1/tasks", fields, created=True)

    def answer(self, who: Persona, task_id: int, body: str) -> Outcome:
        return self.call(who, "POST", f"/v1/tasks/{task_id}/result", {"body": body}, created=True)

    def complete(self, who: Persona, task_id: int) -> Outcome:
        return self.call(who, "POST", f"/v1/tasks/{task_id}/complete", {})

    def start(self, who: Persona, task_id: int) -> Outcome:
        return self.call(who, "POST", f"/v1/tasks/{task_id}/start", {})

    def claim_task(self, who: Persona, task_id: int) -> Outcome:
        outcome = self.call(who, "POST", "/v1/claims", {"task_message_id": task_id}, created=True)
        return outcome

    def act_as(self, who: Persona, other: str) -> Outcome:
        return self.post(who, {"from_agent": other, "body": "as someone else"})

    def raw(self, who: Persona, data: bytes) -> Outcome:
        return self.call(who, "POST", "/v1/messages", data=data, created=True)


class LongPoll(Rest):
    """``GET /v1/events`` (the agent's feed, narrowed to one room) with a timeout: it reads and waits."""

    name = "longpoll"

    def read(self, who: Persona, room: str) -> Outcome:
        return self.call(who, "GET", f"/v1/events?agent_id={who.agent}&channel={room}&timeout=0.01")

    def post(self, *args: Any, **kwargs: Any) -> Outcome:
        raise Inexpressible

    delegate = answer = complete = start = claim_task = act_as = raw = post


class Sse(Rest):
    """``GET /v1/stream``: opened, its status read, closed."""

    name = "sse"

    def read(self, who: Persona, room: str) -> Outcome:
        headers = {"Authorization": f"Bearer {who.key}"} if who.key else {}
        url = f"{self.hub.url}/v1/stream?agent_id={who.agent}&channels={room}"
        with self.session.get(url, headers=headers, stream=True, timeout=WAIT_SEC) as response:
            if response.status_code == 200:
                return Outcome("ok")
            return of_status(response.status_code, response.json(), created=False)

    def post(self, *args: Any, **kwargs: Any) -> Outcome:
        raise Inexpressible

    delegate = answer = complete = start = claim_task = act_as = raw = post


# ── WebSocket ──────────────────────────────────────────────────────────────

ERROR_CODES = {
    "invalid": "400",
    "unknown_type": "400",
    "unauthorized": "401",
    "forbidden": "403",
    "not_registered": "403",
    "not_found": "404",
    "conflict": "409",
    "too_large": "413",
    "rate_limited": "429",
    "internal": "500",
}


class Socket:
    """One client socket: ``call`` sends a frame and returns the answer with its correlation id."""

    def __init__(self, url: str, key: str | None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._connection = websockets.sync.client.connect(
            url.replace("http://", "ws://") + "/v1/ws",
            additional_headers=headers,
            max_size=None,
            open_timeout=WAIT_SEC,
            origin=Origin(url),
            legacy=False,
        )
        self.ws = self._connection.__enter__()
        self.pending: list[dict[str, Any]] = []

    def send_text(self, text: str) -> dict[str, Any]:
        return self._send(text, None)

    def call(self, frame_type: str, /, **fields: Any) -> dict[str, Any]:
        frame_id = uuid.uuid4().hex
        return self._send(json.dumps({"type": frame_type, "id": frame_id, **fields}), frame_id)

    def _send(self, text: str, frame_id: str | None) -> dict[str, Any]:
        with contextlib.suppress(ConnectionClosed):  # refused already: the frames it sent first are still to read
            self.ws.send(text)
        return self.answer(frame_id)

    def answer(self, frame_id: str | None) -> dict[str, Any]:
        """The frame answering ``frame_id``, or an error the hub sent unasked (``id`` null) before closing.

        Pushed frames (no ``id``) are skipped.
        """
        deadline = time.monotonic() + WAIT_SEC
        while time.monotonic() < deadline:
            try:
                frame = json.loads(self.ws.recv(timeout=deadline - time.monotonic()))
            except ConnectionClosed as exc:
                return {"type": "closed", "code": exc.rcvd.code if exc.rcvd else None}
            if "id" not in frame:
                continue  # pushed by the hub on its own (a message, a ping)
            if frame.get("id") == frame_id or (frame.get("id") is None and frame.get("type") == "error"):
                return frame
        raise AssertionError(f"no answer to frame {frame_id} in {WAIT_SEC}s")

    def close(self) -> None:
        self._connection.__exit__(None, None, None)


def of_frame(frame: dict[str, Any], *, created: bool) -> Outcome:
    if frame.get("type") == "error":
        return Outcome(ERROR_CODES.get(str(frame.get("code")), "error"), str(frame.get("message", "")))
    if frame.get("type") == "closed":
        return Outcome("closed", str(frame.get("code")))
    return Outcome("created" if created else "ok")


class WebSocketDoor(Door):
    name = "ws"

    @contextmanager
    def registered(self, who: Persona) -> Iterator[tuple[Socket, Outcome | None]]:
        """A socket registered as ``who`` (its key on the upgrade), or the refusal of that."""
        sock = Socket(self.hub.url, who.key)
        try:
            answer = sock.call("register", **({} if who.key else {"agent_id": who.agent}))
            yield sock, None if answer.get("type") == "registered" else of_frame(answer, created=False)
        finally:
            sock.close()

    def _frame(self, who: Persona, frame_type: str, fields: dict[str, Any], *, created: bool) -> Outcome:
        with self.registered(who) as (sock, refused):
            return refused or of_frame(sock.call(frame_type, **fields), created=created)

    def post(self, who: Persona, fields: dict[str, Any]) -> Outcome:
        return self._frame(who, "post", fields, created=True)

    def read(self, who: Persona, room: str) -> Outcome:
        return self._frame(who, "subscribe", {"channels": [room]}, created=False)

    def delegate(self, who: Persona, fields: dict[str, Any]) -> Outcome:
        return self._frame(who, "delegate", fields, created=True)

    def answer(self, who: Persona, task_id: int, body: str) -> Outcome:
        return self._frame(who, "result", {"task_id": task_id, "body": body}, created=True)

    def start(self, who: Persona, task_id: int) -> Outcome:
        raise Inexpressible  # no frame starts a task (``status`` reads one)

    def act_as(self, who: Persona, other: str) -> Outcome:
        return self.post(who, {"from_agent": other, "body": "as someone else"})

    def raw(self, who: Persona, data: bytes) -> Outcome:
        with self.registered(who) as (sock, refused):
            if refused is not None:
                return refused
            return of_frame(sock.send_text(data.decode("utf-8", "surrogatepass")), created=True)

    def rate(self, who: Persona, fields: dict[str, Any], times: int) -> list[Outcome]:
        with self.registered(who) as (sock, refused):
            if refused is not None:
                return [refused]
            return [of_frame(sock.call("post", **fields), created=True) for _ in range(times)]


# ── MCP, over /mcp and over stdio ──────────────────────────────────────────


class McpDoor(Door):
    """The hub's MCP tools through the SDK's client, one session per persona, on a loop of its own."""

    name = "mcp"

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self._stack = ExitStack()
        self.portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal())
        self.sessions: dict[Persona, Client] = {}

    def close(self) -> None:
        self._stack.close()

    def client(self, who: Persona) -> Any:
        raise NotImplementedError

    def refusal(self, who: Persona, agent: str) -> Outcome | None:
        """Whether the door refuses a session as ``agent`` with ``who``'s key, before any tool runs."""
        raise NotImplementedError

    def refusal_before_session(self, who: Persona) -> Outcome | None:
        """Asked before ``who``'s session opens: would the door refuse it?"""
        return self.refusal(who, who.agent)

    def tool(self, who: Persona, name: str, *, created: bool = False, **arguments: Any) -> Outcome:
        if who not in self.sessions:
            refused = self.refusal_before_session(who)
            if refused is not None:
                return refused
            try:
                session = self._stack.enter_context(self.portal.wrap_async_context_manager(self.client(who)))
            except Exception:
                refused = self.refusal(who, who.agent)  # the session did not start: the door says why
                if refused is None:
                    raise
                return refused
            self.sessions[who] = session
        result = self.portal.call(self.sessions[who].call_tool, name, arguments)
        if result.is_error:
            text = " ".join(getattr(part, "text", "") for part in result.content)
            return Outcome(_status_in(text), text)
        return Outcome("created" if created else "ok")

    def post(self, who: Persona, fields: dict[str, Any]) -> Outcome:
        if "from_agent" in fields:
            raise Inexpressible  # the tools act as the session's agent
        allowed = {"channel", "body", "kind", "thread_id", "to_agent", "reply_to", "expects_reply", "idempotency_key"}
        if set(fields) - allowed:
            raise Inexpressible
        return self.tool(who, "arc_post_message", created=True, **{"channel": "general", **fields})

    def read(self, who: Persona, room: str) -> Outcome:
        return self.tool(who, "arc_poll_messages", timeout=0, channel=room)

    def delegate(self, who: Persona, fields: dict[str, Any]) -> Outcome:
        if set(fields) - {"body", "to_agent", "to_capability", "payload", "ttl_sec", "thread_id"}:
            raise Inexpressible
        return self.tool(who, "arc_delegate", created=True, **fields)

    def answer(self, who: Persona, task_id: int, body: str) -> Outcome:
        return self.tool(who, "arc_complete_task", created=True, task_id=task_id, result=body)

    def complete(self, who: Persona, task_id: int) -> Outcome:
        return self.tool(who, "arc_complete_task", task_id=task_id)

    def start(self, who: Persona, task_id: int) -> Outcome:
        return self.tool(who, "arc_start_task", task_id=task_id)

    def claim_task(self, who: Persona, task_id: int) -> Outcome:
        return self.tool(who, "arc_claim", created=True, claim_key=f"task-{task_id}", task_message_id=task_id)

    def act_as(self, who: Persona, other: str) -> Outcome:
        return self.refusal(who, other) or Outcome("created")


class McpHttp(McpDoor):
    name = "mcp_http"

    def client(self, who: Persona) -> Any:
        headers = {"Authorization": f"Bearer {who.key}"} if who.key else {}
        http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(WAIT_SEC, read=WAIT_SEC * 2))
        return Client(streamable_http_client(f"{self.hub.url}/mcp?agent={who.agent}", http_client=http))

    def refusal(self, who: Persona, agent: str) -> Outcome | None:
        initialize = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "p", "version": "0"},
            },
        }
        return self.raw_http(who, json.dumps(initialize).encode(), agent=agent)

    def raw_http(self, who: Persona, data: bytes, *, agent: str | None = None) -> Outcome | None:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if who.key:
            headers["Authorization"] = f"Bearer {who.key}"
        response = requests.post(
            f"{self.hub.url}/mcp?agent={agent or who.agent}", data=data, headers=headers, timeout=WAIT_SEC
        )
        if response.status_code == 200:
            return None
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        message = body.get("error") or json.dumps(body.get("error", body)) if isinstance(body, dict) else str(body)
        return Outcome(str(response.status_code), str(message))

    def raw(self, who: Persona, data: bytes) -> Outcome:
        return self.raw_http(who, data) or Outcome("ok")


class McpStdio(McpDoor):
    name = "mcp_stdio"

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self._started: dict[tuple[Persona, str], Outcome | None] = {}

    def env(self, who: Persona) -> dict[str, str]:
        env = dict(self.hub.env)
        if who.key:
            env["ARC_AGENT_KEY"] = who.key
        return env

    def args(self, agent: str) -> list[str]:
        return [str(ROOT / "manage.py"), "mcp", "--agent", agent, "--url", self.hub.url]

    def client(self, who: Persona) -> Any:
        params = StdioServerParameters(
            command=sys.executable, args=self.args(who.agent), env=self.env(who), cwd=str(self.hub.home)
        )
        return Client(params)

    def refusal_before_session(self, who: Persona) -> Outcome | None:
        """Nothing to ask first: a refused session does not start, and then ``refusal`` says why."""
        return None

    def refusal(self, who: Persona, agent: str) -> Outcome | None:
        """Start ``manage.py mcp`` with no client on stdin: it registers first, then serves until EOF.

        A refused start exits 1 naming the hub's answer; an accepted one exits 0 at the EOF.
        """
        if (who, agent) not in self._started:
            done = subprocess.run(
                [sys.executable, *self.args(agent)],
                env=self.env(who),
                cwd=str(self.hub.home),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=WAIT_SEC,
                check=False,
            )
            refused = None if done.returncode == 0 else Outcome(_status_in(done.stderr), done.stderr.strip()[-300:])
            self._started[(who, agent)] = refused
        return self._started[(who, agent)]


# ── The relay's spool ──────────────────────────────────────────────────────


class Relay(Rest):
    """The REST requests, as request files written into the live hub's spool (``ARC_HOME``'s ``.arc-relay``)."""

    name = "relay"

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.spool = Path(hub.home) / ".arc-relay"

    def call(
        self,
        who: Persona,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        created: bool = False,
    ) -> Outcome:
        body, retry_key = _split_key(body)
        envelope = relay_request(who.agent, method, path, body, key=who.key, idempotency_key=retry_key)
        folder = spool_name(who.agent)
        requests_dir = self.spool / "requests" / folder
        requests_dir.mkdir(parents=True, exist_ok=True)
        raw = data if data is not None else json.dumps(envelope).encode()
        spool_write(requests_dir / f"{envelope['request_id']}.json", raw)
        answer = self.spool / "responses" / folder / f"{envelope['request_id']}.json"
        deadline = time.monotonic() + WAIT_SEC
        while not answer.exists():
            assert time.monotonic() < deadline, f"the relay left {path} unanswered for {WAIT_SEC}s"
            time.sleep(0.005)
        response = json.loads(answer.read_text(encoding="utf-8"))
        status = int(response["status"])
        return of_status(status, response.get("body") or {"error": response.get("error", "")}, created=created)

    def raw(self, who: Persona, data: bytes) -> Outcome:
        """``data`` as the whole request file (the relay parses it as the hub parses a body)."""
        return self.call(who, "POST", "/v1/messages", data=data, created=True)


# ── The dashboard ──────────────────────────────────────────────────────────


class Dashboard(Door):
    """A browser signed in as a staff user (the hub's ``operator``), posting the dashboard's forms.

    An action answers with a redirect to the page it came from, which shows the outcome
    as a flash; a refused one carries its status as a ``status-NNN`` class.
    """

    name = "dashboard"

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.session = requests.Session()
        link = manage(hub, "login", "--url", hub.url, "--user", "parity")
        assert sign_in(self.session, link, timeout=WAIT_SEC).status_code == 200

    def close(self) -> None:
        self.session.close()

    def act(self, path: str, form: dict[str, str], *, created: bool) -> Outcome:
        token = self.session.cookies["csrftoken"]
        response = self.session.post(
            self.hub.url + path,
            data={**form, "csrfmiddlewaretoken": token, "next": "/stats"},
            timeout=WAIT_SEC,
            allow_redirects=False,
        )
        if response.status_code != 302:
            return of_status(response.status_code, _json_or_text(response), created=created)
        page = self.session.get(self.hub.url + response.headers["Location"], timeout=WAIT_SEC).text
        flash = re.search(r'<p class="flash ([^"]*)" role="status">(.*?)</p>', page, re.S)
        assert flash, "an action always flashes its outcome"
        tags, text = flash.group(1).split(), _unescape(flash.group(2))
        if "success" in tags:
            return Outcome("created" if created else "ok")
        status = next((t.removeprefix("status-") for t in tags if t.startswith("status-")), "error")
        return Outcome(status, text)

    def post(self, who: Persona, fields: dict[str, Any]) -> Outcome:
        if set(fields) - {"channel", "body"}:
            raise Inexpressible  # the human posts into a room as the operator, nothing else
        return self.act(f"/act/rooms/{fields.get('channel', 'general')}/post", {"body": fields["body"]}, created=True)

    def start(self, who: Persona, task_id: int) -> Outcome:
        return self.act(f"/tasks/{task_id}/start", {}, created=False)

    def start_text(self, task_id: str) -> Outcome:
        """A task action for an id as typed into an address (the dashboard's forms carry ids as text)."""
        return self.act(f"/tasks/{task_id}/start", {}, created=False)


def _json_or_text(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _unescape(html: str) -> str:
    import html as html_module

    return html_module.unescape(html).strip()


class Hooks(Rest):
    """``POST /v1/hooks/claude-code``: a Claude Code HTTP hook's input, as the client sends it (docs/agents.md).

    A hook reads the agent's whole feed within its key's rooms (no room of its own choosing), so it
    takes part in the cases that do not depend on the room read; it posts nothing.
    """

    name = "hooks"

    def hook(self, who: Persona, payload: Any, *, agent: str | None = None, data: bytes | None = None) -> Outcome:
        query = f"?agent_id={agent}" if agent else ""
        return self.call(who, "POST", f"/v1/hooks/claude-code{query}", payload, data=data)

    def read(self, who: Persona, room: str) -> Outcome:
        return self.hook(who, {"session_id": "parity", "hook_event_name": "UserPromptSubmit", "prompt": room})

    def act_as(self, who: Persona, other: str) -> Outcome:
        return self.hook(who, {"session_id": "parity", "hook_event_name": "SessionStart"}, agent=other)

    def raw(self, who: Persona, data: bytes) -> Outcome:
        return self.hook(who, None, data=data)

    def post(self, *args: Any, **kwargs: Any) -> Outcome:
        raise Inexpressible

    delegate = answer = complete = start = claim_task = post


class A2A(Rest):
    """``POST /a2a``: A2A JSON-RPC requests, as an A2A client sends them (docs/a2a.md).

    A2A sends tasks to a named agent (its tenant), never posts to a room, so it takes part in
    the cases of the edge (keys, sizes, JSON) and not in those of posting.
    """

    name = "a2a"

    def rpc(self, who: Persona, method: str, params: dict[str, Any]) -> Outcome:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        return self.call(who, "POST", "/a2a", data=json.dumps(body).encode())

    def read(self, who: Persona, room: str) -> Outcome:
        return self.rpc(who, "ListTasks", {"tenant": who.agent})

    def raw(self, who: Persona, data: bytes) -> Outcome:
        return self.call(who, "POST", "/a2a", data=data)

    def post(self, *args: Any, **kwargs: Any) -> Outcome:
        raise Inexpressible

    delegate = answer = complete = start = claim_task = act_as = post


DOORS: dict[str, Callable[[Hub], Door]] = {
    "rest": Rest,
    "longpoll": LongPoll,
    "sse": Sse,
    "ws": WebSocketDoor,
    "mcp_http": McpHttp,
    "mcp_stdio": McpStdio,
    "relay": Relay,
    "dashboard": Dashboard,
    "hooks": Hooks,
    "a2a": A2A,
}
