"""Hub administration: ``/v1/hub-info``, ``X-Arc-Instance``, ``/v1/network``, ``/v1/shutdown`` (docs/protocol.md).

Personas: alice is the coordinator who administers the hub; bob is a worker who only
reads what the hub tells him.

The shutdown tests start the timer with the longest allowed delay and always cancel it:
if it ever fired it would stop this test process.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection

from coordination.core import hub

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_pending_shutdown(api) -> Iterator[None]:
    """Whatever a test does, no shutdown timer survives it."""
    assert hub.shutdown.status() is None
    yield
    if hub.shutdown.status() is not None:
        hub.shutdown.cancel()


def notices(api):
    return [m for m in api.get("/v1/messages", channel="general")[1]["result"] if m["kind"] == "notice"]


# ── GET /v1/hub-info ────────────────────────────────────────────────────────


def test_hub_info_describes_storage_identity_and_limits(api, settings):
    status, env = api.get("/v1/hub-info")

    assert status == 200
    assert env["ok"] is True
    info = env["result"]
    for key in (
        "storage_path",
        "instance_id",
        "journal_mode",
        "wal_mode",
        "default_channel",
        "max_body_chars",
        "max_attachment_chars",
        "max_attachments",
        "allow_remote",
    ):
        assert key in info, key
    if connection.vendor == "sqlite":
        assert info["storage_path"] == str(connection.settings_dict["NAME"])
        assert info["journal_mode"] == "wal"
    else:
        assert info["storage_path"].startswith("postgresql://")
    assert info["wal_mode"] is True
    assert info["instance_id"].startswith("mh1-")
    assert len(info["instance_id"]) == len("mh1-") + 20
    assert info["default_channel"] == "general"
    assert info["max_body_chars"] == settings.ARC_MAX_BODY_CHARS
    assert info["max_attachment_chars"] == settings.ARC_MAX_ATTACHMENT_CHARS
    assert info["max_attachments"] == settings.ARC_MAX_ATTACHMENTS
    assert info["allow_remote"] is False


def test_the_instance_id_is_stable(api):
    first = api.get("/v1/hub-info")[1]["result"]["instance_id"]
    hub.forget_instance_id()

    assert api.get("/v1/hub-info")[1]["result"]["instance_id"] == first


# ── X-Arc-Instance ──────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("method", "path", "body", "expected_status"),
    [
        ("get", "/v1/channels", None, 200),
        ("get", "/v1/hub-info", None, 200),
        ("post", "/v1/sessions", '{"agent_id": "bob"}', 201),
        ("post", "/v1/messages", "{not json", 400),
        ("get", "/v1/messages", None, 400),
        ("get", "/v1/threads/unknown", None, 404),
        ("delete", "/v1/sessions/unknown", None, 404),
        ("get", "/v1/no-such-endpoint", None, 404),
        ("get", "/no-such-page", None, 404),
        ("get", "/v1/sessions", None, 405),
        ("put", "/v1/messages", None, 405),
    ],
)
def test_every_response_carries_x_arc_instance(api, method, path, body, expected_status):
    instance_id = api.get("/v1/hub-info")[1]["result"]["instance_id"]
    kwargs = {"data": body, "content_type": "application/json"} if body is not None else {}

    response = getattr(api.client, method)(path, **kwargs)

    assert response.status_code == expected_status
    assert response["X-Arc-Instance"] == instance_id
    assert response["Content-Type"] == "application/json"
    assert response.json()["ok"] is (expected_status < 400)


# ── /v1/network ─────────────────────────────────────────────────────────────


def test_network_reports_remote_access_off_by_default(api):
    assert api.get("/v1/network") == (200, {"ok": True, "result": {"allow_remote": False}})


def test_network_toggles_remote_access(api, admin_api):
    assert admin_api.post("/v1/network", {"allow_remote": True}) == (
        200,
        {"ok": True, "result": {"allow_remote": True}},
    )
    assert api.get("/v1/network")[1]["result"] == {"allow_remote": True}
    assert api.get("/v1/hub-info")[1]["result"]["allow_remote"] is True

    assert admin_api.post("/v1/network", {"allow_remote": False}) == (
        200,
        {"ok": True, "result": {"allow_remote": False}},
    )
    assert api.get("/v1/network")[1]["result"] == {"allow_remote": False}


def test_network_without_allow_remote_changes_nothing(api, admin_api):
    admin_api.post("/v1/network", {"allow_remote": True})

    assert admin_api.post("/v1/network", {}) == (200, {"ok": True, "result": {"allow_remote": True}})


def test_a_remote_client_is_refused_while_remote_access_is_off(api, admin_api):
    response = api.client.get("/v1/channels", REMOTE_ADDR="192.0.2.7")

    assert response.status_code == 403
    assert response.json()["ok"] is False
    assert "remote access is off" in response.json()["error"]
    assert response["X-Arc-Instance"].startswith("mh1-")

    admin_api.post("/v1/network", {"allow_remote": True})
    # Now remote clients are let in, but never without a key.
    without_key = api.client.get("/v1/channels", REMOTE_ADDR="192.0.2.7")
    assert without_key.status_code == 401
    assert "need an agent key" in without_key.json()["error"]
    assert admin_api.client.get("/v1/channels", REMOTE_ADDR="192.0.2.7").status_code == 200


def test_only_an_admin_may_toggle_the_network_or_shut_down(api, no_pending_shutdown):
    for path, body in (
        ("/v1/network", {"allow_remote": True}),
        ("/v1/shutdown", {"delay_sec": 3600}),
        ("/v1/shutdown/cancel", {}),
    ):
        status, env = api.post(path, body)
        assert status == 403, path
        assert "admin key" in env["error"]
    assert api.get("/v1/network")[1]["result"] == {"allow_remote": False}


# ── /v1/shutdown ────────────────────────────────────────────────────────────


def test_shutdown_status_is_null_when_nothing_is_pending(api, no_pending_shutdown):
    assert api.get("/v1/shutdown") == (200, {"ok": True, "result": None})


def test_shutdown_can_be_scheduled_announced_and_cancelled(api, admin_api, no_pending_shutdown):
    status, env = admin_api.post("/v1/shutdown", {"delay_sec": 3600})

    assert status == 200
    assert env["ok"] is True
    assert env["result"]["status"] == "shutdown_initiated"
    assert env["result"]["delay_sec"] == 3600
    assert 3590 <= env["result"]["remaining_sec"] <= 3600
    pending = api.get("/v1/shutdown")[1]["result"]
    assert pending["delay_sec"] == 3600
    assert 3590 <= pending["remaining_sec"] <= 3600
    [announced] = notices(api)
    assert announced["from_agent"] == "system"
    assert announced["body"] == "Hub shutdown initiated. Shutting down in 3600 seconds."
    assert announced["metadata"] == {"shutdown": True, "delay_sec": 3600}

    assert admin_api.post("/v1/shutdown/cancel") == (200, {"ok": True, "result": {"status": "shutdown_cancelled"}})

    assert api.get("/v1/shutdown") == (200, {"ok": True, "result": None})
    cancelled = notices(api)[-1]
    assert cancelled["from_agent"] == "system"
    assert cancelled["body"] == "Hub shutdown cancelled."
    assert cancelled["metadata"] == {"shutdown_cancelled": True}


def test_shutdown_defaults_to_a_sixty_second_delay_like_arc(api, admin_api, no_pending_shutdown):
    status, env = admin_api.post("/v1/shutdown")

    assert status == 200
    assert env["result"]["delay_sec"] == 60
    assert notices(api)[0]["metadata"] == {"shutdown": True, "delay_sec": 60}
    admin_api.post("/v1/shutdown/cancel")
    assert api.get("/v1/shutdown")[1]["result"] is None


def test_a_second_shutdown_is_refused_while_one_is_pending(api, admin_api, no_pending_shutdown):
    admin_api.post("/v1/shutdown", {"delay_sec": 3600})

    assert admin_api.post("/v1/shutdown", {"delay_sec": 3000}) == (
        400,
        {"ok": False, "error": "shutdown already pending"},
    )
    assert api.get("/v1/shutdown")[1]["result"]["delay_sec"] == 3600
    assert len(notices(api)) == 1


def test_cancel_without_a_pending_shutdown_is_refused(api, admin_api, no_pending_shutdown):
    assert admin_api.post("/v1/shutdown/cancel") == (400, {"ok": False, "error": "no shutdown pending"})
    assert notices(api) == []


@pytest.mark.parametrize("delay", [-1, 3601])
def test_shutdown_delay_must_be_within_an_hour(api, admin_api, no_pending_shutdown, delay):
    status, env = admin_api.post("/v1/shutdown", {"delay_sec": delay})

    assert status == 400
    assert "delay_sec" in env["error"]
    assert api.get("/v1/shutdown")[1]["result"] is None
