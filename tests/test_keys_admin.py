"""Minting, listing and revoking agent keys: ``manage.py invite`` / ``keys`` / ``revoke`` and Django admin.

Personas:
- ``ada``: a superuser logged in to Django admin: may mint and revoke any key;
- ``alice``: the agent a key is minted for: acts only as alice once she has it;
- ``olivia``: an outsider whose key is limited to room ``ops``.
"""

from __future__ import annotations

import json
import re
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from coordination.core import services
from coordination.core.models import AgentKey
from tests.conftest import ApiClient

pytestmark = pytest.mark.django_db

KEY_PATTERN = re.compile(r"arc_[0-9a-f]{12}_[A-Za-z0-9_-]+")
URL = "http://hub.test:6969"


def run(name: str, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def the_key(text: str) -> str:
    found = set(KEY_PATTERN.findall(text))
    assert len(found) == 1, text
    return found.pop()


@pytest.fixture
def ops(api: ApiClient) -> str:
    services.room_create(name="ops")
    return "ops"


# ── manage.py invite ──────────────────────────────────────────────────────


def test_invite_prints_a_paste_ready_brief_with_the_url_the_key_and_the_agent(api):
    brief, note = run("invite", "alice", "--url", URL)
    secret = the_key(brief)
    key = AgentKey.objects.get()

    assert 'You are agent "alice"' in brief
    assert f"{URL}/v1/hub-info" in brief
    assert f"{URL}/v1/events?agent_id=alice" in brief
    assert f"\n    {secret}\n" in brief  # on a line of its own, to copy
    assert "shown only now" in brief
    assert "umask 077" in brief  # how to keep it off command lines
    assert f"manage.py revoke {key.prefix}" in note
    assert ApiClient(key=secret).get("/v1/bootstrap")[1]["result"]["agent_id"] == "alice"


def test_invite_without_url_names_a_hub_address(api):
    brief, _ = run("invite", "alice")

    assert re.search(r"http://[^\s/]+:\d+/v1/hub-info", brief)


def test_invite_key_only_prints_just_the_key(api):
    out, _ = run("invite", "alice", "--key-only")

    assert KEY_PATTERN.fullmatch(out.strip())
    assert ApiClient(key=out.strip()).get("/v1/bootstrap")[1]["result"]["agent_id"] == "alice"


def test_invite_mints_scoped_expiring_and_admin_keys(api, ops):
    scoped, _ = run("invite", "olivia", "--rooms", ops, "--expires", "7d", "--url", URL)
    admin, _ = run("invite", "root", "--admin", "--label", "ops console", "--url", URL)

    olivia, root = AgentKey.objects.get(agent_id="olivia"), AgentKey.objects.get(agent_id="root")
    assert "(rooms: ops)" in scoped
    assert "valid until" in scoped
    assert (olivia.rooms, olivia.is_admin, olivia.expires_at is not None) == (["ops"], False, True)
    assert "(admin)" in admin
    assert (root.rooms, root.is_admin, root.expires_at, root.label) == ([], True, None, "ops console")
    assert olivia.created_by == root.created_by == "manage.py invite"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["alice", "--rooms", "nowhere"], "unknown rooms: nowhere"),
        (["alice", "--expires", "forever"], "invalid choice"),
        (["  "], "agent_id is required"),
    ],
)
def test_invite_refuses_bad_options_and_mints_nothing(api, args, error):
    with pytest.raises(CommandError, match=error):
        run("invite", *args)

    assert not AgentKey.objects.exists()


# ── manage.py keys ────────────────────────────────────────────────────────


def test_keys_lists_usable_keys_in_a_table_without_secrets(api, ops):
    alice = the_key(run("invite", "alice", "--label", "laptop", "--url", URL)[0])
    olivia = the_key(run("invite", "olivia", "--rooms", ops, "--url", URL)[0])
    digests = list(AgentKey.objects.values_list("digest", flat=True))

    table, _ = run("keys")

    header, *rows = table.splitlines()
    assert header.split() == [
        "key_id",
        "agent_id",
        "rooms",
        "admin",
        "expires_at",
        "last_used_at",
        "revoked_at",
        "label",
    ]
    assert sorted(row.split()[1] for row in rows) == ["alice", "olivia"]
    assert any(row.split()[2] == "ops" for row in rows)
    assert any(row.split()[2] == "all" and row.split()[-1] == "laptop" for row in rows)
    for secret in (alice, olivia, *digests):
        assert secret not in table


def test_keys_json_has_every_field_but_the_secret(api):
    secret = the_key(run("invite", "alice", "--url", URL)[0])
    key = AgentKey.objects.get()

    out, _ = run("keys", "--json")
    [listed] = json.loads(out)

    assert listed == key.as_wire()
    assert set(listed) == {
        "key_id",
        "agent_id",
        "rooms",
        "admin",
        "label",
        "created_by",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    }
    assert secret not in out
    assert key.digest not in out


def test_keys_hides_revoked_keys_unless_all(api):
    kept = the_key(run("invite", "alice", "--key-only")[0])
    gone = the_key(run("invite", "alice", "--key-only")[0])
    run("revoke", gone.split("_")[1])

    usable = [k["key_id"] for k in json.loads(run("keys", "--json")[0])]
    everything = json.loads(run("keys", "--json", "--all")[0])

    assert usable == [kept.split("_")[1]]
    assert {k["key_id"] for k in everything} == {kept.split("_")[1], gone.split("_")[1]}
    assert next(k for k in everything if k["key_id"] == gone.split("_")[1])["revoked_at"] is not None


def test_keys_filters_by_agent_and_says_when_there_are_none(api):
    run("invite", "alice", "--key-only")

    assert json.loads(run("keys", "--json", "--agent", "bob")[0]) == []
    assert run("keys", "--agent", "bob")[0].strip() == "no keys (mint one with: manage.py invite AGENT)"


# ── manage.py revoke ──────────────────────────────────────────────────────


def test_revoke_revokes_at_once_and_prints_what_it_revoked(api):
    secret = the_key(run("invite", "alice", "--key-only")[0])
    alice = ApiClient(key=secret)
    assert alice.get("/v1/bootstrap")[0] == 200

    out, _ = run("revoke", secret.split("_")[1])

    [revoked] = json.loads(out)
    assert revoked["key_id"] == secret.split("_")[1]
    assert revoked["revoked_at"] is not None
    assert secret not in out
    assert alice.get("/v1/bootstrap") == (401, {"ok": False, "error": "this agent key was revoked"})


def test_revoking_twice_keeps_the_first_revocation_time(api):
    prefix = the_key(run("invite", "alice", "--key-only")[0]).split("_")[1]

    first = json.loads(run("revoke", prefix)[0])[0]["revoked_at"]
    again = json.loads(run("revoke", prefix)[0])[0]["revoked_at"]

    assert first == again


def test_revoke_refuses_an_unknown_key_id(api):
    with pytest.raises(CommandError, match="nothing revoked for arc_nope: no key arc_nope"):
        run("revoke", "arc_nope")


def test_revoke_takes_the_whole_key(api):
    secret = the_key(run("invite", "alice", "--key-only")[0])

    out, err = run("revoke", secret)

    [revoked] = json.loads(out)
    assert revoked["key_id"] == secret.split("_")[1]
    assert f"revoked key {revoked['key_id']} of alice" in err
    assert secret not in out + err
    assert ApiClient(key=secret).get("/v1/bootstrap")[0] == 401


def test_revoke_refuses_a_whole_key_with_the_wrong_secret_and_shows_no_secret(api):
    secret = the_key(run("invite", "alice", "--key-only")[0])
    guessed = secret[:-4] + "XXXX"

    with pytest.raises(CommandError, match="not with that secret") as refused:
        run("revoke", guessed)

    assert guessed not in str(refused.value)
    assert ApiClient(key=secret).get("/v1/bootstrap")[0] == 200


def test_revoke_agent_revokes_every_live_key_of_the_agent_and_lists_them(api):
    first = the_key(run("invite", "bob", "--key-only")[0])
    second = the_key(run("invite", "bob", "--key-only", "--rooms", "general")[0])
    carols = the_key(run("invite", "carol", "--key-only")[0])

    out, err = run("revoke", "--agent", "bob")

    assert sorted(k["key_id"] for k in json.loads(out)) == sorted(s.split("_")[1] for s in (first, second))
    assert err.count("revoked key ") == 2
    assert [ApiClient(key=s).get("/v1/bootstrap")[0] for s in (first, second, carols)] == [401, 401, 200]


def test_revoke_agent_with_no_live_key_fails_saying_so(api):
    with pytest.raises(CommandError, match="nobody has no live key"):
        run("revoke", "--agent", "nobody")


def test_revoke_needs_something_to_revoke(api):
    with pytest.raises(CommandError, match="name a key"):
        run("revoke")


# ── Django admin ──────────────────────────────────────────────────────────


@pytest.fixture
def ada(api: ApiClient) -> Client:
    """ada: a superuser logged in to Django admin; may mint and revoke any key."""
    User.objects.create_superuser("ada", "ada@example.com", "correct horse battery staple")
    client = Client()
    assert client.login(username="ada", password="correct horse battery staple")
    return client


ADD_URL = "/admin/coordination/agentkey/add/"
LIST_URL = "/admin/coordination/agentkey/"


def test_admin_mints_a_key_and_shows_it_once_on_the_page_never_in_a_cookie(ada, ops):
    response = ada.post(
        ADD_URL, {"agent_id": "olivia", "room_names": ops, "expires": "24h", "is_admin": "", "label": "from admin"}
    )

    assert response.status_code == 200  # the page itself, not a redirect carrying a message
    assert "no-store" in response["Cache-Control"]
    secret = the_key(response.content.decode())
    assert not list(get_messages(response.wsgi_request))
    assert all(secret not in morsel.value for morsel in response.cookies.values())
    key = AgentKey.objects.get()
    assert (key.agent_id, key.rooms, key.label, key.created_by) == ("olivia", ["ops"], "from admin", "admin:ada")
    assert key.expires_at is not None
    assert key.digest != secret
    assert ApiClient(key=secret).get("/v1/bootstrap")[1]["result"]["agent_id"] == "olivia"
    # Shown once: no later page has it.
    for page in (LIST_URL, f"{LIST_URL}{key.pk}/change/"):
        body = ada.get(page).content.decode()
        assert secret not in body, page
        assert key.digest not in body, page


def test_admin_refuses_an_unknown_room_with_a_form_error(ada):
    response = ada.post(ADD_URL, {"agent_id": "olivia", "room_names": "nowhere", "expires": "24h"})

    assert response.status_code == 200
    assert "unknown rooms: nowhere" in response.content.decode()
    assert not AgentKey.objects.exists()


def test_admin_changelist_shows_keys_without_secrets(ada, ops):
    secret = the_key(run("invite", "olivia", "--rooms", ops, "--key-only")[0])
    key = AgentKey.objects.get()

    body = ada.get(LIST_URL).content.decode()

    assert key.prefix in body
    assert "olivia" in body
    assert secret not in body
    assert key.digest not in body


def test_admin_revoke_action_revokes_the_selected_keys(ada):
    alice = the_key(run("invite", "alice", "--key-only")[0])
    bob = the_key(run("invite", "bob", "--key-only")[0])
    target = AgentKey.objects.get(agent_id="alice")

    response = ada.post(LIST_URL, {"action": "revoke_keys", "_selected_action": [target.pk]}, follow=True)

    assert response.status_code == 200
    assert "Revoked 1 key(s)." in response.content.decode()
    target.refresh_from_db()
    assert target.revoked_at is not None
    assert AgentKey.objects.get(agent_id="bob").revoked_at is None
    assert ApiClient(key=alice).get("/v1/bootstrap") == (401, {"ok": False, "error": "this agent key was revoked"})
    assert ApiClient(key=bob).get("/v1/bootstrap")[0] == 200


def test_admin_cannot_edit_a_key(ada):
    run("invite", "alice", "--key-only")
    key = AgentKey.objects.get()

    ada.post(f"{LIST_URL}{key.pk}/change/", {"agent_id": "mallory", "is_admin": "on", "rooms": "[]"})

    key.refresh_from_db()
    assert (key.agent_id, key.is_admin) == ("alice", False)


def test_admin_needs_a_staff_login(api):
    anonymous = Client()

    assert anonymous.get(LIST_URL).status_code == 302
    assert anonymous.post(ADD_URL, {"agent_id": "mallory", "expires": "never", "is_admin": "on"}).status_code == 302
    assert not AgentKey.objects.exists()
