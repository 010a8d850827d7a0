"""``manage.py smoke``: Arc's three smoke roles against a running hub, over HTTP and the file-spool relay.

Each role does what the same role of ``arc.py smoke-agent`` does, step by step, with
the same channel, message kinds and bodies, so our roles and Arc's meet on one thread:

- smoke-a opens a session, creates the channel, posts a ``task``, waits for smoke-b's
  ``artifact`` and smoke-c's ``notice`` containing "verified", then posts a final ``notice``;
- smoke-b waits for smoke-a's task, claims the claim key (it must win), posts an
  ``artifact``, releases the claim, waits for smoke-c's verification and posts a ``notice``;
- smoke-c waits for smoke-a's task and smoke-b's artifact, reads the thread's active
  claims and posts the ``notice`` "smoke-c verified shared visibility ...".

They wait on the ``/v1/events`` long-poll of their thread (Arc re-reads the thread every
second), so a run on a healthy hub takes well under a second. One run of all three
uses a thread id (and claim key) of its own, so it never mistakes an earlier run's
messages for this one's; a single role uses Arc's fixed ones, so it meets the roles
``arc.py smoke-agent`` runs with its defaults.
"""

from __future__ import annotations

import math
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from coordination.client import ArcClient, ArcError
from coordination.process.cli import add_location_arguments, default_url

ROLES = ("smoke-a", "smoke-b", "smoke-c")
TRANSPORTS = ("http", "relay")
# Arc's smoke-agent defaults; single roles use them so that they meet arc.py's roles.
ARC_CHANNEL = "smoke-room"
ARC_THREAD_ID = "smoke-relay-001"
ARC_CLAIM_KEY = "smoke-claim-001"
# Who uses which transport unless --transport says otherwise: the sandboxed worker over the relay.
DEFAULT_TRANSPORT = {"smoke-a": "http", "smoke-b": "relay", "smoke-c": "http"}
# A single role may wait for roles started by hand elsewhere (Arc's default); all three start together.
SINGLE_ROLE_TIMEOUT_SEC = 120.0
ALL_ROLES_TIMEOUT_SEC = 30.0
# The longest single long-poll: how soon a waiting role notices its deadline or another role's failure.
WAIT_CHUNK_SEC = 2.0
# After a role fails, how long the others get to notice and stop before they are reported as stopped.
ABORT_GRACE_SEC = 3.0

T = TypeVar("T")
Wanted = tuple[str, str, str | None]  # (from_agent, kind, text the body must contain)


class SmokeFailed(Exception):
    """A role could not complete ``step``; ``stopped`` when it gave up because another role failed."""

    def __init__(self, step: str, error: str, *, stopped: bool = False) -> None:
        super().__init__(error)
        self.step = step
        self.error = error
        self.stopped = stopped


@dataclass(frozen=True)
class Scene:
    """What the roles of one run share: where they meet, their time limit, and the flag that stops them."""

    channel: str
    thread_id: str
    claim_key: str
    timeout: float
    abort: threading.Event = field(default_factory=threading.Event)


@dataclass
class Outcome:
    role: str
    transport: str
    ok: bool
    seconds: float
    step: str = ""
    error: str = ""
    stopped: bool = False

    def line(self) -> str:
        head = f"{self.role}  {self.transport:<5}"
        if self.ok:
            return f"{head}  ok       {self.seconds:.2f}s"
        status = "stopped" if self.stopped else "FAILED "
        return f'{head}  {status}  {self.seconds:.2f}s  at "{self.step}": {self.error}'


class SmokeAgent:
    """One role's agent: its client (used from one thread only), the thread's messages seen, its current step."""

    def __init__(self, role: str, transport: str, client: ArcClient, scene: Scene) -> None:
        self.role = role
        self.transport = transport
        self.client = client
        self.scene = scene
        self.step = "start"
        self.seen: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.deadline = self.started + scene.timeout

    def do(self, step: str, action: Callable[[], T]) -> T:
        self.step = step
        self._check_abort()
        try:
            return action()
        except ArcError as exc:
            raise SmokeFailed(step, exc.error) from None

    def post(self, step: str, kind: str, body: str) -> None:
        scene = self.scene
        self.do(step, lambda: self.client.post(scene.channel, body, kind=kind, thread_id=scene.thread_id))

    def wait_for(self, step: str, *wanted: Wanted) -> None:
        """Read the thread's messages in the channel until they hold every one in ``wanted``.

        Long-polls ``/v1/events`` for at most ``WAIT_CHUNK_SEC`` at a time, so it returns
        as soon as the last wanted message is stored and still notices the deadline or an abort.
        """
        self.step = step
        scene = self.scene
        while missing := [w for w in wanted if not _contains_from(self.seen, *w)]:
            self._check_abort()
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise SmokeFailed(
                    step,
                    f"timed out after {scene.timeout:g}s on thread {scene.thread_id} in {scene.channel}; "
                    f"still missing {', '.join(_describe(w) for w in missing)}",
                )
            try:
                # By thread only, the channel checked here: asking for a channel that smoke-a has not
                # created yet is a 404, and Arc's roles may start in any order.
                messages = self.client.poll(
                    thread_id=scene.thread_id,
                    exclude_self=False,
                    timeout=round(min(remaining, WAIT_CHUNK_SEC), 3),
                    limit=500,
                )
            except ArcError as exc:
                raise SmokeFailed(step, exc.error) from None
            self.seen += [m for m in messages if m.get("channel") == scene.channel]

    def _check_abort(self) -> None:
        if self.scene.abort.is_set():
            raise SmokeFailed(self.step, "stopped because another role failed", stopped=True)

    def run(self) -> Outcome:
        try:
            SCRIPTS[self.role](self)
        except SmokeFailed as exc:
            return self.outcome(False, exc.step, exc.error, stopped=exc.stopped)
        except Exception as exc:  # noqa: BLE001 - a crash is this role's failure, reported, never lost in a thread
            return self.outcome(False, self.step, f"{type(exc).__name__}: {exc}")
        return self.outcome(True)

    def outcome(self, ok: bool, step: str = "", error: str = "", *, stopped: bool = False) -> Outcome:
        seconds = time.monotonic() - self.started
        return Outcome(self.role, self.transport, ok, seconds, step, error, stopped)


def _contains_from(messages: list[dict[str, Any]], agent_id: str, kind: str, body_contains: str | None) -> bool:
    return any(
        m.get("from_agent") == agent_id
        and m.get("kind") == kind
        and (body_contains is None or body_contains in str(m.get("body", "")))
        for m in messages
    )


def _describe(wanted: Wanted) -> str:
    agent_id, kind, text = wanted
    return f"{agent_id}'s {kind}" + (f' containing "{text}"' if text else "")


# ── the three roles, step for step as arc.py's run_smoke_agent ──────────────────


def _open_session(agent: SmokeAgent) -> None:
    agent.do("open session", lambda: agent.client.register(display_name=agent.role, replace=True))


def smoke_a(agent: SmokeAgent) -> None:
    scene = agent.scene
    _open_session(agent)
    # ArcClient (like Arc's) has no method for this endpoint; _call is its one request path, on either transport.
    agent.do(
        "create channel",
        lambda: agent.client.call_hub("POST", "/v1/channels", {"name": scene.channel, "created_by": agent.role}),
    )
    agent.post("post task", "task", "smoke task from smoke-a")
    agent.wait_for(
        "wait for smoke-b's artifact and smoke-c's verification",
        ("smoke-b", "artifact", None),
        ("smoke-c", "notice", "verified"),
    )
    agent.post("post final notice", "notice", "smoke-a saw both agents and the smoke test passed from the host side")


def smoke_b(agent: SmokeAgent) -> None:
    scene = agent.scene
    _open_session(agent)
    agent.wait_for("wait for smoke-a's task", ("smoke-a", "task", None))
    claim = agent.do("acquire claim", lambda: agent.client.claim(scene.claim_key, thread_id=scene.thread_id))
    if claim.get("owner_agent_id") != agent.role:
        raise SmokeFailed("acquire claim", f"claim {scene.claim_key} denied: held by {claim.get('owner_agent_id')}")
    agent.post("post artifact", "artifact", "smoke-b reached the hub through relay mode")
    agent.do("release claim", lambda: agent.client.release(scene.claim_key))
    agent.wait_for("wait for smoke-c's verification", ("smoke-c", "notice", "verified"))
    agent.post("post confirmation notice", "notice", "smoke-b confirms relay interop works")


def smoke_c(agent: SmokeAgent) -> None:
    scene = agent.scene
    _open_session(agent)
    agent.wait_for(
        "wait for smoke-a's task and smoke-b's artifact", ("smoke-a", "task", None), ("smoke-b", "artifact", None)
    )
    params = {"thread_id": scene.thread_id, "active_only": "true"}
    claims: list[dict[str, Any]] = agent.do(
        "list claims", lambda: agent.client.call_hub("GET", "/v1/claims", params=params)
    )
    state = next(
        (f"held by {c.get('owner_agent_id')}" for c in claims if c.get("claim_key") == scene.claim_key), "released"
    )
    agent.post(
        "post verifier notice",
        "notice",
        f"smoke-c verified shared visibility across direct HTTP and relay mode ({state})",
    )


SCRIPTS: dict[str, Callable[[SmokeAgent], None]] = {"smoke-a": smoke_a, "smoke-b": smoke_b, "smoke-c": smoke_c}


def run_roles(agents: list[SmokeAgent], scene: Scene) -> list[Outcome]:
    """Run every agent in a thread of its own; the first failure stops the others.

    Returns one outcome per agent, in the order given. A role still running
    ``ABORT_GRACE_SEC`` after its deadline (or after another role failed) is
    reported as failed or stopped at the step it was on, and left behind (its
    thread is a daemon).
    """
    results: queue.Queue[Outcome] = queue.Queue()
    for agent in agents:
        threading.Thread(target=lambda a=agent: results.put(a.run()), name=agent.role, daemon=True).start()
    outcomes: dict[str, Outcome] = {}
    give_up = time.monotonic() + scene.timeout + ABORT_GRACE_SEC
    while len(outcomes) < len(agents):
        try:
            outcome = results.get(timeout=max(give_up - time.monotonic(), 0.0))
        except queue.Empty:
            break
        outcomes[outcome.role] = outcome
        if not outcome.ok and not scene.abort.is_set():
            scene.abort.set()
            give_up = min(give_up, time.monotonic() + ABORT_GRACE_SEC)
    for agent in agents:
        if agent.role not in outcomes:
            stopped = scene.abort.is_set()
            error = "stopped because another role failed" if stopped else f"no answer within {scene.timeout:g}s"
            outcomes[agent.role] = agent.outcome(
                False, agent.step, error + " (a request was still waiting for an answer)", stopped=stopped
            )
    return [outcomes[agent.role] for agent in agents]


class Command(BaseCommand):
    help = (
        "Run Arc's smoke roles (smoke-a, smoke-b, smoke-c, as `arc.py smoke-agent` runs them) against a running "
        "hub and exit 0 if they all complete. Without --role all three run at once, smoke-a and smoke-c over HTTP "
        "and smoke-b over the file-spool relay, on a thread id of their own (smoke-relay-<random>), and a line per "
        "role and a summary are printed; the first failure stops the others and the command exits 1 naming the "
        "role and step. With --role one role runs, on Arc's thread smoke-relay-001 and claim key smoke-claim-001, "
        "so it interoperates with arc.py's roles started elsewhere."
    )
    requires_system_checks: list[str] = []  # a hub client: it never opens the database itself

    def add_arguments(self, parser: CommandParser) -> None:
        add_location_arguments(parser)
        parser.add_argument("--role", choices=ROLES, help="run this role only (default: all three at once)")
        parser.add_argument(
            "--transport",
            choices=TRANSPORTS,
            help="transport for every role run (default: http for smoke-a and smoke-c, relay for smoke-b)",
        )
        parser.add_argument(
            "--url",
            "--base-url",
            dest="url",
            metavar="URL",
            help="hub URL for HTTP roles (default: the running hub found through .arc.pid, else "
            "http://ARC_HOST:ARC_PORT); relay roles use --spool-dir (default ARC_SPOOL_DIR, the hub's own)",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            metavar="S",
            help=f"seconds each role may take in all (default {ALL_ROLES_TIMEOUT_SEC:g} for all three, "
            f"{SINGLE_ROLE_TIMEOUT_SEC:g} for a single role, as arc.py)",
        )
        parser.add_argument(
            "--key",
            action="append",
            metavar="KEY",
            help="agent key for a hub with ARC_AUTH=required (sent as a Bearer header, or in the relay "
            "envelope): KEY with --role, else ROLE=KEY once per role (a key acts as one agent)",
        )
        parser.add_argument("--channel", default=ARC_CHANNEL, help=f"channel (default {ARC_CHANNEL}, as arc.py)")
        parser.add_argument(
            "--thread-id",
            metavar="ID",
            help=f"thread (default {ARC_THREAD_ID} with --role, as arc.py; a fresh smoke-relay-<random> otherwise)",
        )
        parser.add_argument(
            "--claim-key",
            metavar="KEY",
            help=f"claim key (default {ARC_CLAIM_KEY} with --role, as arc.py; smoke-claim-<random> otherwise)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        roles = [options["role"]] if options["role"] else list(ROLES)
        single = len(roles) == 1
        timeout = (
            options["timeout"]
            if options["timeout"] is not None
            else (SINGLE_ROLE_TIMEOUT_SEC if single else ALL_ROLES_TIMEOUT_SEC)
        )
        if not (0 < timeout < math.inf):
            raise CommandError("--timeout must be a positive number of seconds")
        keys = _keys(options["key"], roles)
        run_id = uuid.uuid4().hex[:8]
        scene = Scene(
            channel=options["channel"],
            thread_id=options["thread_id"] or (ARC_THREAD_ID if single else f"smoke-relay-{run_id}"),
            claim_key=options["claim_key"] or (ARC_CLAIM_KEY if single else f"smoke-claim-{run_id}"),
            timeout=timeout,
        )
        transports = {role: options["transport"] or DEFAULT_TRANSPORT[role] for role in roles}
        url = (options["url"] or default_url()) if "http" in transports.values() else None
        spool = Path(options["spool_dir"]).absolute() if options["spool_dir"] else Path(settings.ARC_SPOOL_DIR)
        # Arc gives each request max(5, min(timeout, 30)) s; here no single request may take longer than
        # the role's whole time limit (a long-poll adds its wait, which is cut to the time left).
        request_timeout = min(timeout, 30.0)
        agents = []
        for role in roles:
            if transports[role] == "relay":
                client = ArcClient.over_relay(role, str(spool), timeout=request_timeout, key=keys.get(role))
            else:
                client = ArcClient(role, base_url=url or "", timeout=request_timeout, key=keys.get(role))
            agents.append(SmokeAgent(role, transports[role], client, scene))
        try:
            outcomes = run_roles(agents, scene)
        finally:
            for agent in agents:
                agent.client.close()
        for outcome in outcomes:
            self.stdout.write(outcome.line())
        where = ", ".join(
            filter(
                None, [f"hub {url}" if url else "", f"relay spool {spool}" if "relay" in transports.values() else ""]
            )
        )
        # Name a role that failed on its own, not one stopped because of it (in role order, for a stable message).
        failed = [o for o in outcomes if not o.ok and not o.stopped] or [o for o in outcomes if not o.ok]
        if failed:
            first = failed[0]
            raise CommandError(
                f'smoke failed: {first.role} ({first.transport}) at step "{first.step}": {first.error} '
                f"[thread {scene.thread_id} in {scene.channel}; {where}]"
            )
        names = ", ".join(f"{o.role} ({o.transport})" for o in outcomes)
        self.stdout.write(
            f"smoke passed: {names} in {max(o.seconds for o in outcomes):.2f}s "
            f"on thread {scene.thread_id} in {scene.channel}; {where}"
        )


def _keys(raw: list[str] | None, roles: list[str]) -> dict[str, str]:
    """``--key`` values by role: ``KEY`` for the one role run, or ``ROLE=KEY`` for each."""
    keys: dict[str, str] = {}
    for item in raw or []:
        role, sep, key = item.partition("=")
        if sep and role in ROLES:
            keys[role] = key
        elif len(roles) == 1:
            keys[roles[0]] = item
        else:
            raise CommandError(
                "--key KEY needs --role: an agent key acts as one agent; for all three roles give "
                "--key smoke-a=KEY --key smoke-b=KEY --key smoke-c=KEY"
            )
    return keys
