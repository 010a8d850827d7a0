"""An A2A agent elsewhere, for the outbound tests: the official ``a2a-sdk`` server, in a thread, on loopback.

Its executor reads the request's text: ``fail …`` fails the task with a reason; ``slow …`` works until it is
canceled; ``wait <word>`` until the test calls ``release(word)``; anything else completes with the artifact ``echo: <text>``. It wants ``Authorization: Bearer
<token>`` (401 otherwise) and records what it was sent (message ids, canceled task ids).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from a2a.helpers import new_task
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Part, TaskState
from a2a.utils.constants import PROTOCOL_VERSION_CURRENT
from starlette.applications import Starlette
from starlette.responses import JSONResponse


@dataclass
class Seen:
    message_ids: list[str] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    refused: int = 0  # requests without the token


class Echo(AgentExecutor):
    def __init__(self, seen: Seen) -> None:
        self.seen = seen
        self.released: dict[str, asyncio.Event] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        assert context.task_id is not None
        assert context.context_id is not None
        self.loop = asyncio.get_running_loop()
        self.seen.message_ids.append(context.message.message_id)
        text = context.get_user_input()
        if context.current_task is None:
            task = new_task(
                context.task_id, context.context_id, TaskState.TASK_STATE_SUBMITTED, history=[context.message]
            )
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.start_work()
        if text.startswith("fail"):
            await updater.failed(updater.new_agent_message([Part(text=f"cannot do that: {text}")]))
            return
        if text.startswith("slow"):
            await asyncio.sleep(3600)
        if text.startswith("wait "):
            await self.released.setdefault(text.removeprefix("wait "), asyncio.Event()).wait()
        await updater.add_artifact([Part(text=f"echo: {text}")])
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None
        assert context.context_id is not None
        self.seen.canceled.append(context.task_id)
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


@dataclass
class Remote:
    url: str
    seen: Seen
    server: uvicorn.Server
    thread: threading.Thread
    executor: Echo

    def release(self, word: str) -> None:
        """Let the tasks ``wait <word>`` complete."""
        assert self.executor.loop is not None, "no task is waiting"
        event = self.executor.released.setdefault(word, asyncio.Event())
        self.executor.loop.call_soon_threadsafe(event.set)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def serve(*, token: str, streaming: bool, name: str = "Echo", interface_url: str = "") -> Remote:
    """Start the agent on a free loopback port; its card at ``<url>/.well-known/agent-card.json`` (naming
    ``interface_url`` as its JSON-RPC endpoint when given, else its own)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    card = AgentCard(
        name=name,
        description="Repeats what it is asked, for the hub's tests",
        version="1.0",
        supported_interfaces=[
            AgentInterface(
                url=interface_url or url + "/rpc", protocol_binding="JSONRPC", protocol_version=PROTOCOL_VERSION_CURRENT
            )
        ],
        capabilities=AgentCapabilities(streaming=streaming),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="echo", name="Echo", description="echoes its input", tags=["repeat", "text in"])],
    )
    seen = Seen()
    executor = Echo(seen)
    handler = DefaultRequestHandler(agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card)
    app = Starlette(routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/rpc")])

    async def bearer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/rpc":
            given = dict(scope["headers"]).get(b"authorization", b"").decode()
            if given != f"Bearer {token}":
                seen.refused += 1
                await JSONResponse({"error": "unauthorized"}, status_code=401)(scope, receive, send)
                return
        await app(scope, receive, send)

    server = uvicorn.Server(uvicorn.Config(bearer, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the A2A agent did not start"
    return Remote(url=url, seen=seen, server=server, thread=thread, executor=executor)
