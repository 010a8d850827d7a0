"""Full-text search over message bodies: ``GET /v1/search`` (docs/protocol.md, docs/access.md), on SQLite and PostgreSQL.

Personas:
- ``anyone``: the anonymous loopback client; not bound to an agent, so it sees every
  message, direct ones too (as in ``/v1/threads/{id}``);
- ``alice``: her own unscoped key; sees every room's broadcasts and her own direct messages;
- ``bob``: a teammate's unscoped key; must never see direct messages between alice and carol;
- ``olivia``: an outsider's key scoped to room ``ops``; sees ops and her own direct messages.
"""

from __future__ import annotations

import importlib
import sqlite3
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordination.client import ArcClient, ArcError
from coordination.core import access, search
from coordination.core.models import Message
from tests.conftest import ApiClient, Persona
from tests.hubproc import Hub

pytestmark = pytest.mark.django_db

migration = importlib.import_module("coordination.migrations.0006_message_search")

on_sqlite = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's FTS5 index")
on_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's GIN index")

FUZZ = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ── Personas and helpers ──────────────────────────────────────────────────


@pytest.fixture
def anyone(api: ApiClient) -> ApiClient:
    """The anonymous loopback client: acts as any agent it names, sees every message."""
    return api


@pytest.fixture
def alice(api: ApiClient) -> Persona:
    """alice: her own unscoped key."""
    return Persona("alice")


@pytest.fixture
def bob(api: ApiClient) -> Persona:
    """bob: a teammate's unscoped key; alice's DMs with carol are none of his business."""
    return Persona("bob")


@pytest.fixture
def olivia(anyone: ApiClient) -> Persona:
    """olivia: a key scoped to room ops; ops and her own direct messages only."""
    assert anyone.post("/v1/channels", {"name": "ops"})[0] == 201
    return Persona("olivia", rooms=["ops"])


def post(client: ApiClient, **fields: Any) -> dict[str, Any]:
    fields.setdefault("from_agent", "alice")
    status, env = client.post("/v1/messages", fields)
    assert status == 201, env
    return env["result"]


def found(client: ApiClient, q: str, **params: Any) -> list[int]:
    status, env = client.get("/v1/search", q=q, **params)
    assert status == 200, env
    assert env["ok"] is True
    return [m["id"] for m in env["result"]]


def refused(client: ApiClient, **params: Any) -> tuple[int, str]:
    status, env = client.get("/v1/search", **params)
    assert set(env) == {"ok", "error"}, env
    assert env["ok"] is False
    return status, env["error"]


# ── Matching ──────────────────────────────────────────────────────────────


def test_it_answers_full_messages_holding_every_word(anyone):
    hit = post(anyone, body="Deploy the API to staging", thread_id="t-1", metadata={"env": "staging"})
    post(anyone, body="deploy the dashboard")
    post(anyone, body="the api is down")

    status, env = anyone.get("/v1/search", q="api DEPLOY")

    assert status == 200
    assert env == {"ok": True, "result": [hit]}  # the message as everywhere else (as_wire)


def test_the_last_word_also_matches_as_a_prefix(anyone):
    deploy = post(anyone, body="deploy finished")
    deployment = post(anyone, body="deployment finished")

    assert found(anyone, "depl") == [deployment["id"], deploy["id"]]
    assert found(anyone, "finished depl") == [deployment["id"], deploy["id"]]
    assert found(anyone, "depl finished") == []  # only the last word is a prefix
    assert found(anyone, "deploy ") == [deploy["id"]]  # a trailing space ends the word
    assert found(anyone, "deploy") == [deployment["id"], deploy["id"]]


def test_words_are_letters_and_digits_in_the_body_as_in_the_query(anyone):
    path = post(anyone, body="fixed src/parser.py (see foo_bar, v2.1)")
    post(anyone, body="a parser generator")

    assert found(anyone, "parser py ") == [path["id"]]
    assert found(anyone, "src/parser.py") == [path["id"]]
    assert found(anyone, "foo") == [path["id"]]
    assert found(anyone, "foo_bar") == [path["id"]]
    assert found(anyone, "v2 1") == [path["id"]]


def test_it_finds_words_in_any_script(anyone):
    greek = post(anyone, body="Καλημέρα κόσμε")
    chinese = post(anyone, body="部署 完成")
    cyrillic = post(anyone, body="Привет, МИР")

    assert found(anyone, "καλημέρα") == [greek["id"]]
    assert found(anyone, "部署") == [chinese["id"]]
    assert found(anyone, "мир привет") == [cyrillic["id"]]


@on_sqlite
def test_on_sqlite_accents_are_folded(anyone):
    cafe = post(anyone, body="un café naïve")

    assert found(anyone, "cafe naive") == [cafe["id"]]


def test_the_best_match_comes_first_then_the_newest(anyone):
    for filler in ("lunch at noon", "the build is green", "coffee machine broken", "review my patch"):
        post(anyone, body=filler)
    weak_old = post(anyone, body="the lease on the build runner expired during the nightly job")
    strong = post(anyone, body="lease lease lease expired")
    weak_new = post(anyone, body="the lease on the build runner expired during the nightly job")

    assert found(anyone, "lease expired") == [strong["id"], weak_new["id"], weak_old["id"]]


def test_channel_and_from_agent_narrow_the_results(anyone):
    anyone.post("/v1/channels", {"name": "builds"})
    general_alice = post(anyone, body="release notes drafted")
    builds_alice = post(anyone, channel="builds", body="release build started")
    builds_bob = post(anyone, from_agent="bob", channel="builds", body="release build green")

    assert found(anyone, "release", channel="builds") == [builds_bob["id"], builds_alice["id"]]
    assert found(anyone, "release", from_agent="alice") == [builds_alice["id"], general_alice["id"]]
    assert found(anyone, "release", channel="builds", from_agent="alice") == [builds_alice["id"]]
    assert found(anyone, "release", channel="nowhere") == []
    everything = [builds_bob["id"], builds_alice["id"], general_alice["id"]]
    assert found(anyone, "release", channel="", from_agent="") == everything  # blank: no filter


def test_limit_caps_the_results_and_the_hub_caps_the_limit(anyone, settings):
    posted = [post(anyone, body=f"heartbeat {n}") for n in range(4)]
    newest_first = [m["id"] for m in reversed(posted)]

    assert found(anyone, "heartbeat", limit=2) == newest_first[:2]
    settings.ARC_MAX_QUERY_LIMIT = 3
    assert found(anyone, "heartbeat", limit=100) == newest_first[:3]
    assert found(anyone, "heartbeat") == newest_first[:3]
    assert refused(anyone, q="heartbeat", limit=0) == (400, "limit must be at least 1")
    assert refused(anyone, q="heartbeat", limit="many") == (400, "limit must be an integer")


def test_a_missing_or_blank_q_is_a_400(anyone):
    error = "q query parameter is required: the words to search message bodies for"
    assert refused(anyone) == (400, error)
    assert refused(anyone, q="") == (400, error)
    assert refused(anyone, q="  \t ") == (400, error)


def test_other_methods_are_405(anyone):
    assert anyone.post("/v1/search", {"q": "x"})[0] == 405


# ── Hostile query text ────────────────────────────────────────────────────


@pytest.fixture
def plain_traffic(anyone: ApiClient) -> dict[str, int]:
    return {
        "deploy": post(anyone, body="deploy the api")["id"],
        "near": post(anyone, body="stand near the door")["id"],
        "or": post(anyone, body="now or never")["id"],
    }


@pytest.mark.parametrize(
    ("q", "expect"),
    [
        ('"', None),
        ('"deploy', ["deploy"]),
        ('deploy"', ["deploy"]),
        ('"deploy api"', ["deploy"]),
        ("deploy*", ["deploy"]),
        ("dep*loy", []),
        ("*", None),
        ("-deploy", ["deploy"]),  # no negation: "-" only separates words
        ("deploy -api", ["deploy"]),
        ("deploy NOT api", []),
        ("AND OR", []),
        ("now OR", ["or"]),
        ("NEAR(", ["near"]),
        ("NEAR(deploy api)", []),
        ("near door", ["near"]),
        ("body:deploy", []),
        ("{body}: deploy", []),
        ("^deploy", ["deploy"]),
        ("deploy + api", ["deploy"]),
        ("' OR 1=1 --", []),
        ("'; DROP TABLE coordination_message; --", []),
        ("deploy:* & !api | api", ["deploy"]),
        ("\\", None),
        ("\\deploy", ["deploy"]),
        ("()", None),
        ("\u202edeploy", ["deploy"]),
        ("\ufeffdeploy", ["deploy"]),
        ("🚀", None),
        ("deploy 🚀", ["deploy"]),
        ("%", None),
        ("%s %(x)s deploy", []),
    ],
)
def test_query_syntax_is_never_interpreted(anyone, plain_traffic, q, expect):
    status, env = anyone.get("/v1/search", q=q)

    if expect is None:
        assert (status, env) == (
            400,
            {"ok": False, "error": "q has no words to search for: give at least one letter or digit"},
        )
    else:
        assert status == 200, env
        assert [m["id"] for m in env["result"]] == [plain_traffic[name] for name in expect]


def test_nul_characters_are_a_400(anyone):
    status, error = refused(anyone, q="deploy\x00")
    assert status == 400
    assert "NUL" in error


def test_too_long_or_too_many_words_is_a_400(anyone):
    assert refused(anyone, q="a" * 1001) == (400, "q must be at most 1000 characters")
    assert refused(anyone, q=" ".join(["w"] * 33)) == (400, "q has 33 words; at most 32 are searched together")
    assert found(anyone, " ".join(["w"] * 32)) == []
    assert found(anyone, "a" * 1000) == []


# ── Who sees what ─────────────────────────────────────────────────────────


@pytest.fixture
def rooms_and_dms(anyone: ApiClient, olivia: Persona) -> dict[str, int]:
    """The word "rollout" in general, in ops, and in direct messages among alice, carol and olivia."""
    sent = {
        "general": post(anyone, body="rollout in general"),
        "ops": post(anyone, channel="ops", body="rollout in ops"),
        "alice_to_carol": post(anyone, to_agent="carol", body="rollout, privately, to carol"),
        "carol_to_alice": post(anyone, from_agent="carol", to_agent="alice", body="rollout reply to alice"),
        "alice_to_olivia": post(anyone, to_agent="olivia", body="rollout for olivia"),
        "olivia_to_carol": post(anyone, from_agent="olivia", to_agent="carol", body="rollout from olivia"),
        "dm_in_ops": post(anyone, from_agent="carol", to_agent="bob", channel="ops", body="rollout for bob in ops"),
    }
    return {name: message["id"] for name, message in sent.items()}


# The bodies differ in length, so their order is by rank; these tests are about which ones.


def seen(client: ApiClient, q: str, **params: Any) -> set[int]:
    return set(found(client, q, **params))


def named(sent: dict[str, int], *names: str) -> set[int]:
    return {sent[name] for name in names}


def test_an_unkeyed_loopback_client_sees_every_message(anyone, rooms_and_dms):
    assert seen(anyone, "rollout") == set(rooms_and_dms.values())


def test_a_keyed_agent_sees_broadcasts_and_only_its_own_direct_messages(alice, rooms_and_dms):
    assert seen(alice, "rollout") == named(
        rooms_and_dms, "general", "ops", "alice_to_carol", "carol_to_alice", "alice_to_olivia"
    )


def test_another_agents_direct_messages_never_appear(bob, rooms_and_dms):
    assert seen(bob, "rollout") == named(rooms_and_dms, "general", "ops", "dm_in_ops")
    assert found(bob, "rollout privately carol") == []
    assert found(bob, "rollout", from_agent="alice", channel="direct") == []
    assert found(bob, "rollout", from_agent="olivia") == []


def test_a_scoped_key_sees_only_its_rooms_and_its_own_direct_messages(olivia, rooms_and_dms):
    assert seen(olivia, "rollout") == named(rooms_and_dms, "ops", "alice_to_olivia", "olivia_to_carol")
    assert found(olivia, "rollout", channel="ops") == [rooms_and_dms["ops"]]  # bob's DM in ops is not hers


def test_a_scoped_key_may_not_search_another_room(olivia, rooms_and_dms):
    assert refused(olivia, q="rollout", channel="general") == (
        403,
        "this key is limited to rooms ops; general is not one",
    )


def test_visibility_is_exactly_may_read(anyone, alice, bob, olivia, rooms_and_dms):
    # The SQL filter and Identity.may_read (events, threads, status) must never disagree.
    everything = list(Message.objects.all())
    for who in (
        access.Identity(),
        *(access.identity_for_key(persona.key, loopback=True) for persona in (alice, bob, olivia)),
    ):
        expected = {m.id for m in everything if who.may_read(m.as_wire())}
        assert {m["id"] for m in search.messages_search(q="rollout", reader=who)} == expected, who


# ── The index follows the table ───────────────────────────────────────────


def test_edits_and_deletes_through_the_orm_keep_the_index_in_step(anyone):
    kept = post(anyone, body="canary release")
    edited = Message.objects.get(pk=post(anyone, body="canary build")["id"])
    gone = post(anyone, body="canary deleted")["id"]

    edited.body = "blue green rollout"
    edited.save()
    Message.objects.filter(pk=kept["id"]).update(body="canary release, final")
    Message.objects.filter(pk=gone).delete()
    Message.objects.filter(pk=kept["id"]).update(reply_claimed_by="bob")  # not the body: index untouched

    assert found(anyone, "canary") == [kept["id"]]
    assert found(anyone, "final canary") == [kept["id"]]
    assert found(anyone, "rollout green") == [edited.id]
    assert found(anyone, "deleted") == []
    assert_index_consistent()


def assert_index_consistent() -> None:
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:  # raises if the FTS index and the table differ
            cursor.execute(f"INSERT INTO {search.FTS_TABLE}({search.FTS_TABLE}, rank) VALUES ('integrity-check', 1)")


@on_sqlite
def test_the_sqlite_triggers_exist_after_every_migration():
    # A later migration that rebuilds coordination_message on SQLite drops them silently.
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'coordination_message'")
        triggers = {row[0] for row in cursor.fetchall()}
    assert {f"{search.FTS_TABLE}_{op}" for op in ("insert", "update", "delete")} <= triggers


@on_postgresql
def test_postgresql_answers_from_the_gin_index(anyone):
    post(anyone, body="index me")
    with CaptureQueriesContext(connection) as queries:
        search.messages_search(q="index", reader=access.Identity())
    (sql,) = [query["sql"] for query in queries.captured_queries if "to_tsquery" in query["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "coordination_message_body_search" in plan, plan


@pytest.mark.django_db(transaction=True)
def test_the_migration_indexes_earlier_messages_and_reverses_cleanly(api):
    before = [Message.objects.create(from_agent="alice", channel="general", body=f"legacy note {n}") for n in range(3)]
    try:
        with connection.schema_editor() as editor:
            migration.drop_index(None, editor)
        assert not index_exists()
        during = Message.objects.create(from_agent="alice", channel="general", body="legacy note, unindexed then")
    finally:
        with connection.schema_editor() as editor:
            migration.create_index(None, editor)
    assert index_exists()

    assert set(found(api, "legacy note")) == {during.id, *(m.id for m in before)}
    assert_index_consistent()


def index_exists() -> bool:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT count(*) FROM sqlite_master WHERE name LIKE %s", [f"{search.FTS_TABLE}%"])
        else:
            cursor.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'coordination_message_body_search'")
        return bool(cursor.fetchone()[0])


def test_the_migration_says_clearly_when_sqlite_lacks_fts5(monkeypatch):
    class NoFts5:
        def execute(self, sql: str) -> None:
            raise sqlite3.OperationalError("no such module: fts5")

        def close(self) -> None:
            pass

    monkeypatch.setattr(migration.sqlite3, "connect", lambda *args: NoFts5())

    with pytest.raises(ImproperlyConfigured, match="message search needs SQLite's FTS5 extension"):
        migration.require_fts5()


# ── Fuzzing ───────────────────────────────────────────────────────────────

HOSTILE = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("\"*-+^():{}[]\\'%&|!~<>@#;, \t\nANDORNOTNEAR"), max_size=30),
    st.lists(st.sampled_from(["AND", "OR", "NOT", "NEAR(", '"', "*", "-", "deploy", "api", ":*", "&", "'"])).map(
        " ".join
    ),
)


@pytest.fixture
def personas(anyone: ApiClient, alice: Persona, olivia: Persona) -> dict[str, ApiClient]:
    post(anyone, body="deploy the api")
    post(anyone, channel="ops", body='quotes " and stars * and NEAR(things)')
    post(anyone, to_agent="olivia", body="AND OR NOT for olivia")
    return {"anyone": anyone, "alice": alice, "olivia": olivia}


def test_no_query_gets_a_5xx(personas):
    identities = {
        "anyone": access.Identity(),
        "alice": access.identity_for_key(personas["alice"].key, loopback=True),
        "olivia": access.identity_for_key(personas["olivia"].key, loopback=True),
    }

    @FUZZ
    @given(
        who=st.sampled_from(sorted(personas)),
        q=HOSTILE,
        extra=st.fixed_dictionaries(
            {},
            optional={
                "channel": st.sampled_from(["general", "ops", "direct", "", "\x00"]) | st.text(max_size=8),
                "from_agent": st.sampled_from(["alice", "olivia", ""]) | st.text(max_size=8),
                "limit": st.sampled_from(["1", "0", "-1", "x", "99999999999999999999"]),
            },
        ),
    )
    def fuzz(who: str, q: str, extra: dict[str, str]) -> None:
        response = personas[who].client.get("/v1/search", {"q": q, **extra})
        assert response.status_code in (200, 400, 403), response.content[:300]
        envelope = response.json()
        if response.status_code == 200:
            assert envelope["ok"] is True
            assert all(identities[who].may_read(m) for m in envelope["result"])
        else:
            assert set(envelope) == {"ok", "error"}
            assert envelope["ok"] is False
            assert envelope["error"]

    fuzz()


# Letters of several scripts, digits, punctuation and spaces: what agents write.
BODY_TEXT = st.text(
    alphabet=st.characters(categories=("Lu", "Ll", "Lo", "Nd", "Pd", "Po", "Ps", "Pe", "Zs"), codec="utf-8"),
    min_size=1,
    max_size=60,
)


def test_every_word_of_a_body_finds_its_message(anyone):
    @FUZZ
    @given(body=BODY_TEXT, data=st.data())
    def fuzz(body: str, data: st.DataObject) -> None:
        words = search._WORD.findall(body)
        message = post(anyone, body=body)
        if not words:
            return
        word = data.draw(st.sampled_from(words))
        assert message["id"] in found(anyone, word + " ", limit=500), (body, word)

    fuzz()


# ── The Python client ─────────────────────────────────────────────────────


@pytest.mark.live
def test_the_client_searches_a_live_hub(live_hub: Hub) -> None:
    assert live_hub.call("POST", "/v1/channels", {"name": "builds"})[0] == 201
    alice = ArcClient.quickstart("alice", live_hub.url)
    bob = ArcClient.quickstart("bob", live_hub.url)
    alice.post("general", "rollback plan for the deploy")
    bob.post("general", "deploy done")
    posted = alice.post("builds", "deploy of the builds room")

    assert [m["body"] for m in bob.search("deploy rollback")] == ["rollback plan for the deploy"]
    assert [m["id"] for m in bob.search("depl", channel="builds", from_agent="alice")] == [posted["id"]]
    assert len(bob.search("deploy", limit=2)) == 2
    with pytest.raises(ArcError) as raised:
        bob.search("***")
    assert raised.value.status == 400
