"""Channels (rooms on our side): ``GET/POST /v1/channels`` (docs/protocol.md).

Personas: alice coordinates and opens channels; bob is a worker who opens one that already exists.
"""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.django_db

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_it_lists_the_default_channels(api):
    status, env = api.get("/v1/channels")

    assert status == 200
    assert env["ok"] is True
    assert [c["name"] for c in env["result"]] == ["direct", "general"]
    for channel in env["result"]:
        assert set(channel) == {"name", "created_at", "created_by", "metadata", "closed", "closed_at", "closed_by"}
        assert channel["closed"] is False
        assert channel["created_by"] == "system"
        assert channel["metadata"] == {}
        assert ISO_Z.match(channel["created_at"])


def test_it_creates_a_channel(api):
    status, env = api.post("/v1/channels", {"name": "builds", "created_by": "alice", "metadata": {"topic": "CI"}})

    assert status == 201
    assert env["ok"] is True
    assert env["result"]["name"] == "builds"
    assert env["result"]["created_by"] == "alice"
    assert env["result"]["metadata"] == {"topic": "CI"}
    assert ISO_Z.match(env["result"]["created_at"])
    assert [c["name"] for c in api.get("/v1/channels")[1]["result"]] == ["builds", "direct", "general"]


def test_created_by_and_metadata_are_optional(api):
    status, env = api.post("/v1/channels", {"name": "builds"})

    assert status == 201
    assert env["result"]["created_by"] is None
    assert env["result"]["metadata"] == {}


def test_it_returns_an_existing_channel_unchanged_with_200(api):
    created = api.post("/v1/channels", {"name": "builds", "created_by": "alice", "metadata": {"topic": "CI"}})[1][
        "result"
    ]

    status, env = api.post("/v1/channels", {"name": "builds", "created_by": "bob", "metadata": {"topic": "other"}})

    assert status == 200
    assert env == {"ok": True, "result": created}


def test_the_default_channels_already_exist(api):
    status, env = api.post("/v1/channels", {"name": "general", "created_by": "alice"})

    assert status == 200
    assert env["result"]["created_by"] == "system"


def test_a_new_channel_accepts_posts(api):
    api.post("/v1/channels", {"name": "builds"})

    status, env = api.post("/v1/messages", {"from_agent": "alice", "channel": "builds", "body": "build green"})

    assert status == 201
    assert env["result"]["channel"] == "builds"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": None}, "name"),
        ({"name": {"x": 1}}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "builds", "metadata": "topic"}, "metadata"),
        ({"name": "builds", "metadata": ["topic"]}, "metadata"),
        ({"name": "builds", "created_by": ["alice"]}, "created_by"),
    ],
)
def test_it_validates_channel_fields(api, payload, field):
    status, env = api.post("/v1/channels", payload)

    assert status == 400
    assert env["ok"] is False
    assert field in env["error"]
    assert [c["name"] for c in api.get("/v1/channels")[1]["result"]] == ["direct", "general"]
