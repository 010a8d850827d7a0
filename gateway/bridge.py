"""The bridge: the hub's tasks for A2A agents elsewhere, sent with the SDK's client and answered as theirs
(docs/a2a.md, outbound).

One process runs it at a time (``manage.py up`` holds the duty ``a2a-outbound``; another worker takes it
over when that process stops). Woken by the task events of the agents it stands for, it takes each open
task given to one (``services.remote_call_begin``: open → in_progress, once), sends it
(``outbound.send``), and answers it as that agent (``services.remote_answer``): done with the remote
task's artifacts, or failed with the reason. A network failure is tried again, at most
``ARC_A2A_ATTEMPTS`` times in all (1, 2, 4 … s apart); a refusal or a timeout is not. A task canceled on
the hub is canceled there too. Every few seconds it also keeps the agents' sessions live and, every
``ARC_A2A_CARD_REFRESH_SEC``, fetches their cards again.

After a restart it follows the tasks it had sent (their remote ids are kept) instead of sending them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from coordination.core import events, hub, selectors, services
from coordination.core.models import RemoteAgent
from coordination.core.models import Task as HubTask
from coordination.core.selectors import RemoteWork
from gateway import outbound

log = logging.getLogger(__name__)

MAX_IN_HAND = 32  # tasks sent (or being sent) at once; more wait open until one ends
IDLE_SEC = 5.0  # the longest the bridge sleeps without an event (keeping sessions live, a deadline)
FIRST_RETRY_SEC = 1.0


def message_id_of(task_id: int) -> str:
    """The A2A message id a hub task is sent as: the hub's and the task's, so the same on every attempt and
    after a restart, and never another hub's."""
    return f"arc-{hub.instance_id()}-task-{task_id}"


class CalledOff(Exception):
    """The hub's task finished (canceled, timed out) while the bridge was still sending it."""


class Bridge:
    """``run()`` until ``stop()`` (a ``coordination.process.server.Background``)."""

    def __init__(self) -> None:
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._names: set[str] = set()
        self._jobs: dict[int, asyncio.Task[None]] = {}
        self._sent: dict[int, str] = {}  # task id → its remote task's id, once known
        self._answering: set[int] = set()  # tasks whose outcome is in: their own finishing is no cancellation
        self._cards: dict[str, RemoteAgent] = {}
        self._cancels: set[asyncio.Future[None]] = set()  # remote cancellations under way
        self._called_off: set[int] = set()  # finished on the hub before their id there was known

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        await events.dispatcher.add(self._heard, events.Route(kinds=frozenset({"task", "presence"})))
        next_live = next_cards = 0.0
        try:
            while not self._stop.is_set():
                self._wake.clear()
                now = time.monotonic()
                try:
                    if now >= next_cards:
                        await self._cards_check()
                        next_cards = now + settings.ARC_A2A_CARD_REFRESH_SEC
                    if now >= next_live:
                        await sync_to_async(services.remotes_keep_live)()
                        next_live = now + max(1.0, settings.ARC_PRESENCE_TTL_SEC / 3)
                    remotes = await sync_to_async(selectors.remote_agents)()  # (one registered since is seen at once)
                    self._cards = {r.agent_id: r for r in remotes if not r.problem}
                    self._names = set(self._cards)
                    await self._dispatch()
                except Exception:
                    log.exception("the A2A bridge could not look at its work; trying again")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_SEC)
        finally:
            events.dispatcher.remove(self._heard)
            jobs = list(self._jobs.values())
            for job in jobs:
                job.cancel()  # their remote tasks go on; the next bridge follows them
            await asyncio.gather(*jobs, return_exceptions=True)

    def _heard(self, event: dict[str, Any]) -> None:
        if event.get("event") == "presence":
            session = event.get("session")
            metadata = session.get("metadata") if isinstance(session, dict) else None
            if event.get("agent_id") in self._names or (
                isinstance(metadata, dict) and services.REMOTE_KIND in metadata
            ):
                self._wake.set()  # an A2A agent elsewhere registered, or went: look at the register again
            return
        task = event.get("task") if event.get("event") == "task" else None
        if not isinstance(task, dict):
            return
        task_id = task.get("task_id")
        finished = task.get("status") not in HubTask.UNFINISHED
        if task_id in self._jobs and task_id not in self._answering and finished:
            # Finished on the hub (canceled, timed out): called off there too, now or once its id there is known.
            remote_task_id = self._sent.pop(task_id, "")
            remote = self._cards.get(str(task.get("assignee")))
            if not remote_task_id:
                self._called_off.add(task_id)
            else:
                self._jobs.pop(task_id).cancel()
                if remote is not None:
                    self._cancel_there(remote, remote_task_id)
        elif event.get("action") == "created" and task.get("assignee") in self._names:
            self._wake.set()

    async def _cards_check(self) -> None:
        for remote in await sync_to_async(selectors.remote_agents)():
            try:
                card, data = await outbound.card_fetch(remote.card_url, remote.credential)
            except (outbound.Unreachable, outbound.Refused) as exc:
                await sync_to_async(services.remote_checked)(
                    agent_id=remote.agent_id, card=None, capabilities=[], problem=str(exc)
                )
                continue
            await sync_to_async(services.remote_checked)(
                agent_id=remote.agent_id, card=data, capabilities=outbound.capabilities_of(card), problem=""
            )

    async def _dispatch(self) -> None:
        room = MAX_IN_HAND - len(self._jobs)
        if room <= 0 or not self._names:
            return
        work = await sync_to_async(selectors.remote_work)(self._names, exclude=list(self._jobs), limit=room)
        for item in work:
            if item.agent_id not in self._cards:
                continue
            begin = sync_to_async(services.remote_call_begin)
            if item.status == HubTask.Status.OPEN and await begin(task_id=item.task_id, agent_id=item.agent_id) is None:
                continue  # not open any more: canceled, or taken meanwhile
            self._jobs[item.task_id] = asyncio.ensure_future(self._carry(item, self._cards[item.agent_id]))

    async def _carry(self, item: RemoteWork, remote: RemoteAgent) -> None:
        """Send one task (or follow it there) to its end, and answer it on the hub."""
        try:
            outcome = await self._attempts(item, remote)
            self._answering.add(item.task_id)
            await sync_to_async(services.remote_answer)(
                task_id=item.task_id, agent_id=item.agent_id, ok=outcome.ok, body=outcome.body
            )
        except CalledOff:
            pass  # finished on the hub meanwhile (and canceled there)
        except asyncio.CancelledError:
            raise  # (finished on the hub, or the bridge stops: the next one follows it)
        except Exception:
            self._answering.add(item.task_id)
            log.exception("the A2A bridge could not carry task %s to %s", item.task_id, item.agent_id)
            with contextlib.suppress(Exception):
                await sync_to_async(services.remote_answer)(
                    task_id=item.task_id,
                    agent_id=item.agent_id,
                    ok=False,
                    body="the hub could not send it (see its log)",
                )
        finally:
            if self._jobs.get(item.task_id) is asyncio.current_task():
                del self._jobs[item.task_id]
            self._sent.pop(item.task_id, None)
            self._answering.discard(item.task_id)
            self._called_off.discard(item.task_id)

    async def _attempts(self, item: RemoteWork, remote: RemoteAgent) -> outbound.Outcome:
        deadline = time.monotonic() + settings.ARC_A2A_TIMEOUT_SEC
        if item.deadline is not None:
            deadline = min(deadline, time.monotonic() + (item.deadline - timezone.now()).total_seconds())
        attempts, pause, remote_task_id = item.attempts, FIRST_RETRY_SEC, item.remote_task_id
        message_id = await sync_to_async(message_id_of)(item.task_id)

        async def sent(task_id: str) -> None:
            if item.task_id in self._called_off:
                self._cancel_there(remote, task_id)
                raise CalledOff
            self._sent[item.task_id] = task_id
            await sync_to_async(services.remote_call_sent)(
                task_id=item.task_id, remote_task_id=task_id, attempts=attempts
            )

        while True:
            attempts += 1
            try:
                card = await asyncio.to_thread(outbound.card_of, remote.card)  # (its URLs resolved again)
                return await outbound.send(
                    card,
                    credential=remote.credential,
                    message_id=message_id,
                    body=item.body,
                    context_id=item.context_id,
                    remote_task_id=remote_task_id,
                    deadline=deadline,
                    on_sent=sent,
                )
            except outbound.Refused as exc:
                return outbound.Outcome(False, str(exc))
            except outbound.Unreachable as exc:
                said = f"the A2A agent could not be reached ({attempts} attempt{'s' if attempts > 1 else ''}): {exc}"
                if attempts >= settings.ARC_A2A_ATTEMPTS or time.monotonic() + pause >= deadline:
                    return outbound.Outcome(False, said)
                log.info("%s; trying again in %.0f s", said, pause)
                await sync_to_async(services.remote_call_sent)(
                    task_id=item.task_id, remote_task_id=self._sent.get(item.task_id, remote_task_id), attempts=attempts
                )
                await asyncio.sleep(pause)
                pause *= 2
                remote_task_id = self._sent.get(item.task_id, remote_task_id)

    def _cancel_there(self, remote: RemoteAgent, remote_task_id: str) -> None:
        cancel = asyncio.ensure_future(self._cancelled_there(remote, remote_task_id))
        self._cancels.add(cancel)
        cancel.add_done_callback(self._cancels.discard)

    @staticmethod
    async def _cancelled_there(remote: RemoteAgent, remote_task_id: str) -> None:
        try:
            card = await asyncio.to_thread(outbound.card_of, remote.card)
            await outbound.cancel(card, credential=remote.credential, remote_task_id=remote_task_id)
        except Exception as exc:  # noqa: BLE001 - best effort: the hub's task is finished either way
            log.info("could not cancel task %s at the A2A agent %s: %s", remote_task_id, remote.agent_id, exc)
