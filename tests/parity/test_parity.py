"""One set of rules at every door: each case of the table runs through every door that can express it,
and must get the same outcome class and leave the same stored effect (docs/architecture.md, "Parity").

One live hub serves the module. Each door gets personas and rooms of its own (``<door>-alice``,
rooms ``<door>-a``/``-b``), so the doors cannot disturb each other's cases:

- ``alice``: a key for every room; she posts and delegates;
- ``scoped``: a key for the room ``<door>-a`` only;
- ``direct``: a key scoped to ``direct`` (direct messages) only;
- ``other``: a key for every room, holding none of the tasks in the cases;
- ``carol``: the assignee of alice's tasks; ``worker``: live, with the capability ``review-<door>``;
- ``revoked``: a key that was revoked; ``rl``: posts until its rate limit stops it.

The hub's rate limit is 30 posts a burst, refilled at one post every two minutes, so the 31st
post of a run is refused however fast or slow the machine is.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from tests.hubproc import Hub, manage, running_hub
from tests.parity.doors import DOORS, WAIT_SEC, Door, Inexpressible, Outcome, Persona

pytestmark = pytest.mark.live

RATE_BURST = 30
MAX_ATTACHMENTS = 1  # the request cap: ARC_MAX_BODY_CHARS + ARC_MAX_ATTACHMENT_CHARS x 1 + 64 KiB
REQUEST_CAP = 128_000 + 256_000 * MAX_ATTACHMENTS + 65_536

MINT = """
import json
from coordination.core import services
out = {}
for door in %(doors)r:
    for suffix in ("a", "b", "closed"):
        services.room_create(name=f"{door}-{suffix}", created_by="setup")
    services.room_close(name=f"{door}-closed", actor="setup")
    for persona, rooms in (("alice", []), ("scoped", [f"{door}-a"]), ("direct", ["direct"]), ("other", []),
                           ("carol", []), ("worker", []), ("revoked", []), ("rl", [])):
        key, secret = services.key_mint(agent_id=f"{door}-{persona}", rooms=rooms, label="parity")
        if persona == "revoked":
            services.key_revoke(key_id=key.prefix)
        out[f"{door}-{persona}"] = secret
print(json.dumps(out))
"""


@dataclass
class World:
    hub: Hub
    door: str
    keys: dict[str, str]
    marks: list[str] = field(default_factory=list)

    def persona(self, name: str) -> Persona:
        agent = f"{self.door}-{name}"
        return Persona(agent=agent, key=self.keys[agent])

    def room(self, suffix: str) -> str:
        return f"{self.door}-{suffix}"

    @property
    def capability(self) -> str:
        return f"review-{self.door}"

    def mark(self) -> str:
        """A word no other message holds, to find what a case stored."""
        word = f"mk{uuid.uuid4().hex[:12]}"
        self.marks.append(word)
        return word

    def admin_call(self, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
        """A request as a loopback client (which reads everything under loopback-open), or as ``key``."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = requests.request(method, self.hub.url + path, json=body, headers=headers, timeout=WAIT_SEC)
        envelope = response.json()
        assert envelope["ok"], (path, envelope)
        return envelope["result"]

    def stored(self, word: str) -> list[dict[str, Any]]:
        return list(self.admin_call("GET", f"/v1/search?q={word}&limit=100"))

    def task_status(self, task_id: int) -> str:
        return next(t["status"] for t in self.admin_call("GET", "/v1/tasks") if t["task_id"] == task_id)

    def task_for_carol(self) -> int:
        """A task alice hands to carol, in alice's room ``a``."""
        alice = self.persona("alice")
        body = {"to_agent": self.persona("carol").agent, "body": "migrate", "channel": self.room("a")}
        return int(self.admin_call("POST", "/v1/tasks", body, key=alice.key)["id"])

    def task_in_room_b(self) -> int:
        """An open request alice posts in room ``b``, assigned to nobody."""
        body = {"kind": "task_request", "channel": self.room("b"), "body": "anyone?"}
        return int(self.admin_call("POST", "/v1/messages", body, key=self.persona("alice").key)["id"])


@dataclass(frozen=True)
class Case:
    """One request, the outcome class every door must give it, and the stored effect it must leave."""

    name: str
    expect: str
    doors: frozenset[str]
    run: Callable[[Door, World], tuple[Outcome, Any]]  # the outcome, and what it stored (read after)
    effect: Any = None
    message: str = ""  # what a refusal must say, at every door that shows its message

    def __str__(self) -> str:
        return self.name


POSTERS = frozenset({"rest", "ws", "relay", "mcp_http", "mcp_stdio"})
READERS = frozenset({"rest", "longpoll", "sse", "ws", "relay", "mcp_http", "mcp_stdio"})
RAW = frozenset({"rest", "ws", "relay", "mcp_http", "hooks", "a2a"})
TASKERS = frozenset({"rest", "relay", "mcp_http", "mcp_stdio"})


def _count(world: World, word: str) -> int:
    return len(world.stored(word))


def acting_as_another_agent(door: Door, world: World) -> tuple[Outcome, Any]:
    return door.act_as(world.persona("alice"), world.persona("carol").agent), None


def empty_acting_field(door: Door, world: World) -> tuple[Outcome, Any]:
    word = world.mark()
    outcome = door.post(world.persona("alice"), {"from_agent": "", "channel": "general", "body": word})
    return outcome, [m["from_agent"] for m in world.stored(word)] == [world.persona("alice").agent]


def absent_acting_field(door: Door, world: World) -> tuple[Outcome, Any]:
    word = world.mark()
    outcome = door.post(world.persona("alice"), {"channel": "general", "body": word})
    return outcome, [m["from_agent"] for m in world.stored(word)] == [world.persona("alice").agent]


def scoped_post(room: str) -> Callable[[Door, World], tuple[Outcome, Any]]:
    def run(door: Door, world: World) -> tuple[Outcome, Any]:
        word = world.mark()
        outcome = door.post(world.persona("scoped"), {"channel": world.room(room), "body": word})
        return outcome, _count(world, word)

    return run


def scoped_read(room: str) -> Callable[[Door, World], tuple[Outcome, Any]]:
    def run(door: Door, world: World) -> tuple[Outcome, Any]:
        return door.read(world.persona("scoped"), world.room(room)), None

    return run


def request_by_capability(persona: str) -> Callable[[Door, World], tuple[Outcome, Any]]:
    """``persona`` posts a ``task_request`` naming a capability: a direct message to the agent picked."""

    def run(door: Door, world: World) -> tuple[Outcome, Any]:
        word = world.mark()
        fields = {"kind": "task_request", "to_capability": world.capability, "body": word}
        outcome = door.post(world.persona(persona), fields)
        return outcome, [m["to_agent"] for m in world.stored(word)] == [world.persona("worker").agent]

    return run


def delegation_by_capability(persona: str) -> Callable[[Door, World], tuple[Outcome, Any]]:
    def run(door: Door, world: World) -> tuple[Outcome, Any]:
        word = world.mark()
        outcome = door.delegate(world.persona(persona), {"to_capability": world.capability, "body": word})
        return outcome, [m["to_agent"] for m in world.stored(word)] == [world.persona("worker").agent]

    return run


def result_by_a_non_holder(door: Door, world: World) -> tuple[Outcome, Any]:
    task = world.task_for_carol()
    word = world.mark()
    outcome = door.answer(world.persona("other"), task, word)
    return outcome, (world.task_status(task), _count(world, word))


def complete_by_a_non_holder(door: Door, world: World) -> tuple[Outcome, Any]:
    task = world.task_for_carol()
    return door.complete(world.persona("other"), task), world.task_status(task)


def scoped_key_answers_a_task_of_another_room(door: Door, world: World) -> tuple[Outcome, Any]:
    task = world.task_in_room_b()
    word = world.mark()
    fields = {
        "kind": "task_result",
        "channel": "direct",
        "to_agent": world.persona("alice").agent,
        "reply_to": task,
        "body": word,
    }
    outcome = door.post(world.persona("scoped"), fields)
    return outcome, (world.task_status(task), _count(world, word))


def scoped_key_claims_a_task_of_another_room(door: Door, world: World) -> tuple[Outcome, Any]:
    task = world.task_in_room_b()
    return door.claim_task(world.persona("scoped"), task), world.task_status(task)


def rate_limit_reached(door: Door, world: World) -> tuple[Outcome, Any]:
    word = world.mark()
    fields = {"channel": "general", "body": word}
    rl = world.persona("rl")
    rate = getattr(door, "rate", None)
    outcomes = rate(rl, fields, RATE_BURST + 1) if rate else [door.post(rl, fields) for _ in range(RATE_BURST + 1)]
    assert [o.cls for o in outcomes[:-1]] == ["created"] * RATE_BURST, outcomes
    return outcomes[-1], _count(world, word)


def revoked_key_posts(door: Door, world: World) -> tuple[Outcome, Any]:
    word = world.mark()
    return door.post(world.persona("revoked"), {"channel": "general", "body": word}), _count(world, word)


def revoked_key_reads(door: Door, world: World) -> tuple[Outcome, Any]:
    return door.read(world.persona("revoked"), "general"), None


def oversize_request(door: Door, world: World) -> tuple[Outcome, Any]:
    word = world.mark()
    body = f"{word} " + "x" * (REQUEST_CAP + 1000)
    if door.name in ("rest", "ws", "relay", "mcp_http", "hooks", "a2a"):
        data = json.dumps({"channel": "general", "body": body}).encode()
        if door.name in ("mcp_http", "a2a"):
            data = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"pad": body}}).encode()
        outcome = door.raw(world.persona("alice"), data)
    else:
        outcome = door.post(world.persona("alice"), {"channel": "general", "body": body})
    return outcome, _count(world, word)


def body_over_the_character_cap(door: Door, world: World) -> tuple[Outcome, Any]:
    word = world.mark()
    body = f"{word} " + "x" * 128_001
    return door.post(world.persona("alice"), {"channel": "general", "body": body}), _count(world, word)


def raw_json(data: bytes) -> Callable[[Door, World], tuple[Outcome, Any]]:
    def run(door: Door, world: World) -> tuple[Outcome, Any]:
        return door.raw(world.persona("alice"), data), None

    return run


def id_beyond_64_bits(door: Door, world: World) -> tuple[Outcome, Any]:
    return door.start(world.persona("alice"), 10**30), None


def nul_characters(door: Door, world: World) -> tuple[Outcome, Any]:
    word = world.mark()
    return door.post(world.persona("alice"), {"channel": "general", "body": f"{word} a\x00b"}), _count(world, word)


def unknown_task(door: Door, world: World) -> tuple[Outcome, Any]:
    return door.start(world.persona("alice"), 987_654_321), None


def closed_room(door: Door, world: World) -> tuple[Outcome, Any]:
    word = world.mark()
    outcome = door.post(world.persona("alice"), {"channel": world.room("closed"), "body": word})
    return outcome, _count(world, word)


def repeated_with_its_key(door: Door, world: World) -> tuple[Outcome, Any]:
    word, key = world.mark(), uuid.uuid4().hex
    fields = {"channel": "general", "body": word, "idempotency_key": key}
    first = door.post(world.persona("alice"), fields)
    again = door.post(world.persona("alice"), fields)
    assert first.cls == "created", first
    return again, _count(world, word)


def key_reused_for_another_request(door: Door, world: World) -> tuple[Outcome, Any]:
    word, key = world.mark(), uuid.uuid4().hex
    door.post(world.persona("alice"), {"channel": "general", "body": word, "idempotency_key": key})
    other = door.post(world.persona("alice"), {"channel": "general", "body": f"{word} other", "idempotency_key": key})
    return other, _count(world, word)


HOLDER_RULE = "only the task's requester, assignee or claimant may"
NESTED = b'{"channel": "general", "body": "deep", "metadata": ' + b'{"a": [' * 20_000 + b"1" + b"]}" * 20_000 + b"}"

CASES = [
    Case("acting as another agent", "403", POSTERS | {"hooks"}, acting_as_another_agent, message="must be"),
    Case(
        "an empty acting field is the key's agent",
        "created",
        POSTERS - {"mcp_http", "mcp_stdio"},
        empty_acting_field,
        True,
    ),
    Case("an absent acting field is the key's agent", "created", POSTERS, absent_acting_field, True),
    Case("a scoped key posts in its room", "created", POSTERS, scoped_post("a"), 1),
    Case("a scoped key posts outside its rooms", "403", POSTERS, scoped_post("b"), 0, "this key is limited to rooms"),
    Case("a scoped key reads its room", "ok", READERS, scoped_read("a")),
    Case("a scoped key reads outside its rooms", "403", READERS, scoped_read("b"), message="this key is limited"),
    Case(
        "a key for direct messages posts a request by capability",
        "created",
        POSTERS - {"mcp_http", "mcp_stdio"},
        request_by_capability("direct"),
        True,
    ),
    Case(
        "a key scoped to one room posts a request by capability (a direct message, not a room post)",
        "created",
        POSTERS - {"mcp_http", "mcp_stdio"},
        request_by_capability("scoped"),
        True,
    ),
    Case(
        "a key for direct messages delegates by capability",
        "created",
        POSTERS,
        delegation_by_capability("direct"),
        True,
    ),
    Case(
        "a key scoped to one room delegates by capability", "created", POSTERS, delegation_by_capability("scoped"), True
    ),
    Case("a result by an agent not holding the task", "403", POSTERS, result_by_a_non_holder, ("open", 0), HOLDER_RULE),
    Case("completing a task one does not hold", "403", TASKERS, complete_by_a_non_holder, "open", HOLDER_RULE),
    Case(
        "a scoped key answers a task of another room by direct message",
        "403",
        POSTERS,
        scoped_key_answers_a_task_of_another_room,
        ("open", 0),
        "is not visible to this key",
    ),
    Case(
        "a scoped key claims a task of another room",
        "403",
        TASKERS,
        scoped_key_claims_a_task_of_another_room,
        "open",
        "is not visible to this key",
    ),
    Case("the rate limit reached", "429", POSTERS, rate_limit_reached, RATE_BURST, "posting too fast"),
    Case("a revoked key posts", "401", POSTERS, revoked_key_posts, 0, "revoked"),
    Case(
        "a revoked key reads",
        "401",
        frozenset({"longpoll", "sse", "hooks", "a2a"}),
        revoked_key_reads,
        message="revoked",
    ),
    Case(
        "a request over the size cap",
        "413",
        POSTERS | {"dashboard", "hooks", "a2a"},
        oversize_request,
        0,
        "exceeds max size",
    ),
    Case(
        "a body over the character cap",
        "400",
        POSTERS | {"dashboard"},
        body_over_the_character_cap,
        0,
        "body exceeds max size",
    ),
    Case("malformed JSON", "400", RAW, raw_json(b'{"channel": "general", "body": '), message="JSON"),
    Case("deeply nested JSON", "400", RAW, raw_json(NESTED), message="JSON"),
    Case(
        "an integer of thousands of digits",
        "400",
        RAW,
        raw_json(b'{"channel": "general", "body": "big", "reply_to": ' + b"9" * 5001 + b"}"),
        message="out of range",
    ),
    Case("an id beyond 64 bits", "400", TASKERS | {"dashboard"}, id_beyond_64_bits, message="64-bit"),
    Case("NUL characters", "400", POSTERS | {"dashboard"}, nul_characters, 0, "NUL"),
    Case("an unknown task", "404", TASKERS | {"dashboard"}, unknown_task, message="task not found"),
    Case("a post to a closed room", "409", POSTERS | {"dashboard"}, closed_room, 0, "is closed"),
    Case("a post repeated with its idempotency key", "created", POSTERS, repeated_with_its_key, 1),
    Case(
        "an idempotency key reused for another request",
        "409",
        POSTERS,
        key_reused_for_another_request,
        1,
        "was used for another request",
    ),
]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, dict[str, str]]]:
    extra = {"ARC_RATE_LIMIT": f"{RATE_BURST}/3600,{RATE_BURST}", "ARC_MAX_ATTACHMENTS": str(MAX_ATTACHMENTS)}
    with running_hub(tmp_path_factory.mktemp("parity") / "hub", extra_env=extra) as live:
        keys = json.loads(manage(live, "shell", "-c", MINT % {"doors": sorted(DOORS)}).splitlines()[-1])
        yield live, keys


@pytest.fixture
def world(hub: tuple[Hub, dict[str, str]], request: pytest.FixtureRequest) -> World:
    live, keys = hub
    door = request.node.callspec.params["door"]
    world = World(hub=live, door=door, keys=keys)
    worker = world.persona("worker")  # live, so that a delegation by capability finds it
    world.admin_call("POST", "/v1/sessions", {"capabilities": [world.capability], "replace": True}, key=worker.key)
    return world


def run_case(door: Door, world: World, case: Case) -> str | None:
    """What is wrong with ``case`` at ``door`` (``None``: the outcome and the effect are as the table says)."""
    try:
        outcome, effect = case.run(door, world)
    except Inexpressible:
        return f"{door.name} cannot express it, but the table lists it there"
    if outcome.cls != case.expect:
        return f"expected {case.expect}, got {outcome}"
    if case.message and outcome.message and case.message not in outcome.message:
        return f"the refusal says {outcome.message[:200]!r}, not {case.message!r}"
    if effect != case.effect:
        return f"stored effect {effect!r}, expected {case.effect!r}"
    return None


@pytest.mark.parametrize("door", sorted(DOORS))
def test_every_case_has_one_outcome_at_every_door(hub: tuple[Hub, dict[str, str]], world: World, door: str) -> None:
    live, _ = hub
    client = DOORS[door](live)
    try:
        wrong = {case.name: run_case(client, world, case) for case in CASES if door in case.doors}
    finally:
        client.close()
    assert wrong, f"no case runs through {door}"
    assert {name: why for name, why in wrong.items() if why} == {}


def test_the_table_covers_every_door_and_the_cases_the_issue_names() -> None:
    doors = set().union(*(case.doors for case in CASES))
    assert doors == set(DOORS)
    assert len({case.name for case in CASES}) == len(CASES)
