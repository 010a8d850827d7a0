"""``/live``: the dashboard's Server-Sent Events, against a real hub process.

A staff browser signs in with the one-time link ``manage.py login`` prints, opens
``/live`` as the page's ``sse-connect`` does, and sees what agents do over HTTP:
each message as an escaped row (``event: message``), and one empty event per region
whose state changed (``work``, ``agents``, ``waiting``).

Personas:
- ``ada``: the staff browser (a ``requests.Session`` signed in by a one-time link);
- alice, bob and carol: agents posting, claiming and connecting over REST from loopback.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.hubproc import Hub, manage, running_hub, sign_in

pytestmark = pytest.mark.live

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(2)>'
WAIT_SEC = 10.0


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(Path(tmp_path_factory.mktemp("dashboard-live")) / "hub") as live:
        yield live


@pytest.fixture(scope="module")
def ada(hub: Hub) -> Iterator[requests.Session]:
    """A browser signed in to the dashboard with the link ``manage.py login`` printed."""
    session = requests.Session()
    link = manage(hub, "login", "--url", hub.url, "--user", "ada")
    response = sign_in(session, link)
    assert response.status_code == 200, response.text  # the overview, after the link's redirect
    assert response.url == hub.url + "/"
    yield session
    session.close()


@dataclass
class Event:
    name: str
    id: int | None
    data: str


def sse(response: requests.Response) -> Iterator[Event]:
    """Each event of an SSE response (comments skipped), as the browser's ``EventSource`` parses them."""
    name: str = "message"
    event_id: int | None = None
    data: list[str] = []
    seen = False
    for raw in response.iter_lines():
        line = raw.decode()
        if not line:
            if seen:
                yield Event(name, event_id, "\n".join(data))
            name, event_id, data, seen = "message", None, [], False
            continue
        if line.startswith(":"):
            yield Event("comment", None, line)  # lets a reader check its deadline on keep-alives too
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        seen = True
        if field == "event":
            name = value
        elif field == "id":
            event_id = int(value)
        elif field == "data":
            data.append(value)


def read_until(stream: Iterator[Event], wanted: str) -> list[Event]:
    """The events up to and including the first named ``wanted``, within ``WAIT_SEC``."""
    got: list[Event] = []
    deadline = time.monotonic() + WAIT_SEC
    for event in stream:
        if event.name != "comment":
            got.append(event)
            if event.name == wanted:
                return got
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"no {wanted!r} event within {WAIT_SEC}s; got {got}")


def post(hub: Hub, **payload: Any) -> dict[str, Any]:
    payload.setdefault("from_agent", "alice")
    status, env = hub.call("POST", "/v1/messages", payload)
    assert status == 201, env
    return env["result"]


def open_live(ada: requests.Session, hub: Hub, **params: Any) -> tuple[requests.Response, Iterator[Event]]:
    headers = params.pop("headers", {})
    response = ada.get(f"{hub.url}/live", params=params, headers=headers, stream=True, timeout=(10, 30))
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    stream = sse(response)
    assert next(stream) == Event("comment", None, ": connected")
    return response, stream


def test_it_sends_an_anonymous_browser_no_stream(hub):
    response = requests.get(f"{hub.url}/live", timeout=10)

    assert response.status_code == 204  # tells EventSource to stop reconnecting
    assert response.content == b""


def test_it_pushes_each_new_message_as_an_escaped_row_with_its_id(hub, ada):
    since = post(hub, body="before the page")["id"]
    response, stream = open_live(ada, hub, since=since)
    with response:
        evil = f"{SCRIPT}{IMG}"
        message = post(hub, from_agent="mallory<script>alert(1)", body=evil, thread_id=f"t{IMG}")

        [event] = [e for e in read_until(stream, "message") if e.name == "message"]

    assert event.id == message["id"]
    assert event.data.startswith(f'<li id="m-{message["id"]}"')
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in event.data
    assert "mallory&lt;script&gt;" in event.data
    assert "<script>" not in event.data
    assert "<img" not in event.data
    assert 'name="csrfmiddlewaretoken"' in event.data  # the row's reply form works as on the page


def test_a_message_that_expects_a_reply_refreshes_the_waiting_region(hub, ada):
    response, stream = open_live(ada, hub, since=post(hub, body="warm-up")["id"])
    with response:
        asked = post(hub, to_agent="operator", body="may I?", expects_reply="anyone")

        got = read_until(stream, "waiting")

    # (a message also refreshes the charts, the map and agents' pages: "activity")
    assert [(e.name, e.id) for e in got] == [("message", asked["id"]), ("activity", None), ("waiting", None)]


def test_a_claim_over_http_refreshes_the_work_region(hub, ada):
    response, stream = open_live(ada, hub)
    with response:
        status, env = hub.call("POST", "/v1/claims", {"owner_agent_id": "bob", "claim_key": "live-claim"})
        assert status == 201, env

        got = read_until(stream, "work")

    assert got[-1] == Event("work", None, "")


def test_a_presence_change_refreshes_the_agents_region(hub, ada):
    response, stream = open_live(ada, hub)
    with response:
        status, env = hub.call("POST", "/v1/sessions", {"agent_id": "carol", "capabilities": ["build"]})
        assert status == 201, env

        got = read_until(stream, "agents")

    assert got[-1] == Event("agents", None, "")


def test_a_room_page_gets_only_that_rooms_messages(hub, ada):
    assert hub.call("POST", "/v1/channels", {"name": "builds"})[0] in (200, 201)
    response, stream = open_live(ada, hub, room="general", since=post(hub, body="warm-up")["id"])
    with response:
        post(hub, channel="builds", body="in another room")
        post(hub, to_agent="bob", body="a direct message")
        here = post(hub, body="in general")

        got = [e for e in read_until(stream, "message") if e.name == "message"]

    assert [e.id for e in got] == [here["id"]]
    assert "in general" in got[0].data


def test_it_resumes_after_last_event_id_without_a_gap(hub, ada):
    posted = [post(hub, body=f"resume {i}") for i in range(4)]
    response, stream = open_live(ada, hub, since=posted[-1]["id"], headers={"Last-Event-ID": str(posted[0]["id"])})
    with response:
        got: list[Event] = []
        while len(got) < 3:
            got += [e for e in read_until(stream, "message") if e.name == "message"]

    # Last-Event-ID (the browser's reconnect) wins over the page's ``since``.
    assert [e.id for e in got] == [m["id"] for m in posted[1:]]
    assert [f"resume {i}" in e.data for i, e in enumerate(got, start=1)] == [True, True, True]


def test_a_body_cannot_end_its_event_or_start_another() -> None:
    from dashboard.live import _message_event

    body = 'x\r\n\r\nevent: keys\rdata: <b onmouseover="1">\ny\n\nid: 99'
    wire = {"id": 7, "ts": "", "from_agent": "mallory", "to_agent": None, "channel": "general", "kind": "chat"}
    event = _message_event({**wire, "body": body, "attachments": [], "reply_to": None, "thread_id": None}, "t", "/")

    lines = re.split(r"\r\n|\r|\n", event)
    # One event: its id and name, then only data lines, then the blank line that ends it.
    assert lines[:2] == ["id: 7", "event: message"]
    assert lines[-2:] == ["", ""]
    assert all(line.startswith("data: ") for line in lines[2:-2])
    assert "data: event: keys" in lines
    assert any(line.startswith("data: id: 99") for line in lines)
    assert "&lt;b onmouseover=&quot;1&quot;&gt;" in event


def test_the_overview_stream_carries_direct_messages_between_agents(hub, ada):
    response, stream = open_live(ada, hub, since=post(hub, body="warm-up")["id"])
    with response:
        direct = post(hub, to_agent="bob", body="between alice and bob")

        [event] = [e for e in read_until(stream, "message") if e.name == "message"]

    assert event.id == direct["id"]  # the operator is an admin: it reads every message, as the page does


def test_an_agent_taking_a_reply_refreshes_the_waiting_region(hub, ada):
    asked = post(hub, to_agent="operator", body="anyone?", expects_reply="anyone")
    response, stream = open_live(ada, hub, since=asked["id"])
    with response:
        status, env = hub.call("POST", f"/v1/messages/{asked['id']}/reply-claim", {"agent_id": "bob"})
        assert status == 201, env

        got = read_until(stream, "waiting")

    assert got[-1] == Event("waiting", None, "")


def test_the_stream_ends_soon_after_its_user_signs_out(hub):
    session = requests.Session()
    assert sign_in(session, manage(hub, "login", "--url", hub.url, "--user", "ada")).status_code == 200
    response, stream = open_live(session, hub)
    with response:
        token = session.cookies["csrftoken"]
        out = session.post(f"{hub.url}/logout", data={"csrfmiddlewaretoken": token}, timeout=30, allow_redirects=False)
        assert out.status_code == 302
        started = time.monotonic()

        left = [e for e in stream if e.name != "comment"]  # runs until the hub ends the stream

    assert left == []
    assert time.monotonic() - started < WAIT_SEC
