"""The humans' views at a glance (docs/dashboard.md): the task board, the agent map, activity, an agent's
page, search; their escaping, their paging and what each costs in queries."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from coordination.core import glance, services
from coordination.core.models import AgentKey, Delivery, Message, Task
from tests.conftest import ApiClient

HOSTILE = '<img src=x onerror="alert(1)">'


@pytest.fixture
def ada(api: ApiClient) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("ada", "ada@example.com", "pw"))
    return client


def page(client: Client, path: str, **extra: Any) -> str:
    response = client.get(path, **extra)
    assert response.status_code == 200, (path, response.status_code)
    return response.content.decode()


def delegate(body: str, *, to: str = "bob", by: str = "alice", **fields: Any) -> int:
    return int(services.task_delegate(from_agent=by, to_agent=to, body=body, **fields).id)


def column(html: str, status: str) -> str:
    match = re.search(rf'<section class="column" id="column-{status}".*?</section>', html, re.S)
    assert match, status
    return match.group(0)


# ── The task board ─────────────────────────────────────────────────────────


def test_the_board_shows_what_each_task_is_in_its_statuss_column(ada: Client) -> None:
    services.session_create(agent_id="bob", capabilities=["build"])
    first = delegate("Release 1.4\nwith the notes from #7", thread_id="rel-1.4")
    second = delegate("Review the API", to="carol")
    services.task_start(task_id=second, actor="carol")
    third = delegate("Fix the flaky test")
    services.task_fail(task_id=third, reason="could not reproduce", actor="bob")

    html = page(ada, "/work")

    opened = column(html, "open")
    assert f"#{first} Release 1.4</h3>" in opened
    assert "with the notes" not in opened  # the first line is the title
    assert 'href="/agents/alice"' in opened
    assert 'href="/agents/bob"' in opened
    assert 'href="/threads/rel-1.4"' in opened
    assert f"/tasks/{first}/start" in opened
    assert f"#{second} Review the API" in column(html, "in_progress")
    failed = column(html, "failed")
    assert f"#{third} Fix the flaky test" in failed
    assert "could not reproduce" in failed
    assert "/start" not in failed


def test_an_overdue_task_is_marked_and_a_hostile_title_stays_text(ada: Client) -> None:
    late = delegate(f"{HOSTILE} do it now")
    Task.objects.filter(pk=late).update(deadline=timezone.now() - timedelta(minutes=5))

    html = column(page(ada, "/work"), "open")

    assert 'class="task overdue"' in html
    assert "overdue</strong>" in html
    assert HOSTILE not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; do it now" in html


def test_the_board_filters_by_room_assignee_and_capability(ada: Client) -> None:
    services.session_create(agent_id="bob", capabilities=["build"])
    services.session_create(agent_id="carol", capabilities=["review"])
    services.room_create(name="ops", created_by="alice")
    built = int(services.task_delegate(from_agent="alice", to_capability="build", body="Build it").id)
    reviewed = delegate("Review it", to="carol", channel="ops")

    by_room = page(ada, "/work?room=ops")
    by_assignee = page(ada, "/work?assignee=bob")
    by_capability = page(ada, "/work?capability=build")

    assert f"#{reviewed} Review it" in by_room
    assert f"#{built} Build it" not in by_room
    assert f"#{built} Build it" in by_assignee
    assert f"#{reviewed} Review it" not in by_assignee
    assert f"#{built} Build it" in by_capability
    assert f"#{reviewed} Review it" not in by_capability
    assert '<span class="tag">build</span>' in by_capability


def test_finished_columns_are_paged_and_a_bad_page_is_the_first(ada: Client) -> None:
    done = []
    for n in range(25):
        task_id = delegate(f"chore {n}")
        services.task_complete(task_id=task_id, actor="bob")
        done.append(task_id)

    first, second, bad = page(ada, "/work"), page(ada, "/work?page=2"), page(ada, "/work?page=x")

    assert column(first, "done").count("<article") == glance.PAGE
    assert f"#{done[-1]} chore 24" in first
    assert "page 1 of 2" in first
    assert column(second, "done").count("<article") == 5
    assert f"#{done[0]} chore 0" in second
    assert "page 1 of 2" in bad


def test_a_card_action_returns_to_the_filtered_board(ada: Client) -> None:
    task_id = delegate("Start me")

    response = ada.post(f"/tasks/{task_id}/start", {"next": "/work?assignee=bob"})

    assert response.status_code == 302
    assert response["Location"] == "/work?assignee=bob"
    assert Task.objects.get(pk=task_id).status == "in_progress"


# ── The agent map ──────────────────────────────────────────────────────────


def test_the_map_draws_a_line_for_traffic_and_lists_it_without_javascript(ada: Client) -> None:
    services.session_create(agent_id="alice")
    services.session_create(agent_id="bob")
    services.message_post(from_agent="alice", to_agent="bob", body="hi")
    services.message_post(from_agent="alice", to_agent="bob", body="again")
    delegate("a task")

    html = page(ada, "/map")

    assert '<svg class="map"' in html
    assert '<line class="edge"' in html
    assert "<title>alice → bob: 2 direct messages, 1 task request</title>" in html
    assert '<a href="/agents/alice"><g class="node live">' in html
    traffic = re.search(r'<table id="traffic">.*?</table>', html, re.S)
    assert traffic
    assert "<td>2</td><td>1</td><td>0</td>" in traffic.group(0)


def test_the_map_keeps_hostile_names_as_text_inside_the_svg(ada: Client) -> None:
    services.session_create(agent_id=HOSTILE)
    services.message_post(from_agent=HOSTILE, to_agent="bob", body="hi")

    html = page(ada, "/map")
    svg = html[html.index('<svg class="map"') : html.index("</svg>", html.index('<svg class="map"'))]

    assert HOSTILE not in html
    assert "<img" not in svg
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in svg


def test_the_map_with_no_agents_says_so_and_an_unknown_window_is_the_hour(ada: Client) -> None:
    html = page(ada, "/map?window=year")

    assert "No agents live or seen in this window." in html
    assert "<strong>last hour</strong>" in html


# ── Activity over time ─────────────────────────────────────────────────────


def test_activity_charts_count_the_last_hour_and_say_when_there_is_nothing(ada: Client) -> None:
    empty = page(ada, "/")
    assert "messages: none in this window" in empty
    assert "no dead letters" in empty

    services.session_create(agent_id="carol")
    for n in range(3):
        services.message_post(from_agent="alice", channel="general", body=f"post {n}")
    dead = services.message_post(from_agent="alice", to_agent="carol", body="poison", max_attempts=1)
    services.delivery_nack(agent_id="carol", message_id=dead.id, reason="cannot parse")
    late = delegate("late")
    Task.objects.filter(pk=late).update(deadline=timezone.now() - timedelta(minutes=1))

    html = page(ada, "/")

    assert re.search(r"messages: 5 in all, at most \d+ in one bucket", html)  # 3 posts, the poison, the task
    assert "tasks opened: 1 in all" in html
    assert "1 dead letter</a>" in html
    assert "1 overdue task</a>" in html
    assert html.count('<svg class="spark"') >= 4


def test_delivery_lag_is_the_median_from_post_to_delivered(ada: Client) -> None:
    services.session_create(agent_id="bob")
    sent = services.message_post(from_agent="alice", to_agent="bob", body="lagging")
    posted = timezone.now() - timedelta(seconds=3)
    Message.objects.filter(pk=sent.pk).update(ts=posted)
    delivered = Delivery.objects.filter(message=sent).update(delivered_at=posted + timedelta(milliseconds=1500))
    assert delivered == 1

    seen = glance.activity(window="hour")

    assert seen.lag_ms.total == pytest.approx(1500, abs=1)


def test_a_rooms_page_charts_that_room_alone(ada: Client) -> None:
    services.room_create(name="ops", created_by="alice")
    for n in range(2):
        services.message_post(from_agent="alice", channel="ops", body=f"ops {n}")
    services.message_post(from_agent="alice", channel="general", body="elsewhere")

    html = page(ada, "/rooms/ops")
    region = page(ada, "/rooms/ops?partial=activity", HTTP_HX_REQUEST="true")

    assert re.search(r"messages: 2 in all", html)
    assert region.startswith('<div id="activity-region" hx-get="/rooms/ops?partial=activity"')


def test_the_stats_page_charts_the_hub_and_each_room_over_an_hour_or_a_day(ada: Client) -> None:
    services.message_post(from_agent="alice", channel="general", body="hello")

    hour, day = page(ada, "/stats"), page(ada, "/stats?window=day")

    assert '<table class="charts" id="room-activity">' in hour
    assert 'href="/rooms/general">#general</a>' in hour
    assert "Activity, last day" in day
    assert "Activity, last hour" in hour


# ── One agent's page ───────────────────────────────────────────────────────


def test_an_agents_page_gathers_its_presence_keys_holds_queue_and_messages(ada: Client, api: ApiClient) -> None:
    services.session_create(agent_id="bob", capabilities=["build", "deploy"])
    key, _ = services.key_mint(agent_id="bob", label="bob's box")
    services.claim_acquire(owner_agent_id="bob", claim_key="deploy-7")
    assert api.post("/v1/locks", {"agent_id": "bob", "file_path": "src/app.py"})[0] == 201
    task_id = delegate("Build 1.4")
    dead = services.message_post(from_agent="alice", to_agent="bob", body="poison", max_attempts=1)
    services.delivery_nack(agent_id="bob", message_id=dead.id, reason="cannot parse")

    html = page(ada, "/agents/bob")

    assert '<span class="tag ok">live</span>' in html
    assert '<span class="tag">deploy</span>' in html
    assert f"<code>{key.prefix}</code>" in html
    assert f"/keys/{key.prefix}/revoke" in html
    assert "deploy-7" in html
    assert "src/app.py" in html
    assert f"#{task_id} Build 1.4" in html
    assert "cannot parse" in html
    assert "poison" in html
    assert '<svg class="spark"' in html


def test_an_agents_page_actions_return_to_it(ada: Client) -> None:
    services.session_create(agent_id="bob")
    key, _ = services.key_mint(agent_id="bob")

    response = ada.post(f"/keys/{key.prefix}/revoke", {"next": "/agents/bob"})

    assert response.status_code == 302
    assert response["Location"] == "/agents/bob"
    assert AgentKey.objects.get(pk=key.pk).revoked_at is not None
    assert '<span class="tag bad">revoked</span>' in page(ada, "/agents/bob")


def test_an_unknown_agent_is_a_404_page_and_a_hostile_name_has_a_page(ada: Client) -> None:
    assert ada.get("/agents/nobody").status_code == 404
    services.session_create(agent_id=HOSTILE)
    response = ada.get("/agents/" + HOSTILE.replace('"', "%22").replace(" ", "%20"))
    assert response.status_code == 200
    assert HOSTILE not in response.content.decode()


def test_names_link_to_their_agents_page_on_the_overview_and_in_rooms(ada: Client) -> None:
    services.session_create(agent_id="bob")
    services.message_post(from_agent="bob", channel="general", body="hi all")

    assert '<a class="agent" href="/agents/bob">bob</a>' in page(ada, "/")
    assert '<a class="agent" href="/agents/bob">bob</a>' in page(ada, "/rooms/general")


# ── Search ─────────────────────────────────────────────────────────────────


def test_search_finds_messages_with_the_apis_filters(ada: Client) -> None:
    services.message_post(from_agent="alice", channel="general", body="the deploy is green")
    services.message_post(from_agent="bob", channel="general", body="deploy failed again")

    both = page(ada, "/search?q=deploy")
    by_author = page(ada, "/search?q=deploy&from_agent=bob")

    assert "2 found" in both
    assert "1 found" in by_author
    assert "deploy failed again" in by_author
    assert "the deploy is green" not in by_author


def test_search_says_what_is_wrong_with_a_query_never_a_500(ada: Client) -> None:
    html = page(ada, "/search?q=%22%22%22")
    assert 'role="alert"' in html
    assert page(ada, "/search").count("found") == 0


# ── What each page costs ───────────────────────────────────────────────────


def queries(client: Client, path: str) -> int:
    client.get(path)  # (a first request fills caches: the session, content types)
    with CaptureQueriesContext(connection) as seen:
        assert client.get(path).status_code == 200
    return len(seen)


def fill(n: int) -> None:
    for i in range(n):
        services.session_create(agent_id=f"agent-{i}", capabilities=["build"], replace=True)
        services.message_post(from_agent=f"agent-{i}", to_agent="bob", body=f"dm {i}")
        task_id = delegate(f"task {i}", by=f"agent-{i}")
        if i % 2:
            services.task_complete(task_id=task_id, actor="bob")


PAGES = ["/work", "/map", "/map?window=day", "/", "/stats", "/agents/bob", "/search?q=dm", "/rooms/general"]


def test_each_page_costs_the_same_queries_for_ten_times_the_data(ada: Client) -> None:
    services.session_create(agent_id="bob")
    fill(3)
    few = {path: queries(ada, path) for path in PAGES}
    fill(30)
    assert {path: queries(ada, path) for path in PAGES} == few
