"""The views at a glance in a real browser (Debian's Chromium under Playwright) against a live hub: the
board moving a card live, the map drawing a new line after a direct message, the charts, an agent's page
and its action, hostile names and bodies kept as text, and axe-core's accessibility check of every page.

The personas and the fixtures are those of ``tests/test_browser.py`` (imported from it); this module has
its own hub, and names of its own.
"""

# ruff: noqa: F811 (the fixtures of tests/test_browser.py, imported, are the arguments' names)
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests import browser_support
from tests.hubproc import ROOT, Hub

if reason := browser_support.unavailable():
    pytest.skip(f"browser tests skipped: {reason}", allow_module_level=True)

from playwright.sync_api import expect

from tests.test_browser import TIMEOUT_MS, browser, context, hub, page, post, signed_in  # noqa: F401

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.live

LIVE_MS = 15_000  # a live change arrives within this (the map and charts refresh at most every 2 s)
HOSTILE = '<img src=x onerror="window.__pwned=1">'


def call(hub: Hub, method: str, path: str, payload: Any = None, expect_status: int = 201) -> dict[str, Any]:
    status, env = hub.call(method, path, payload)
    assert status == expect_status, env
    return dict(env["result"]) if isinstance(env.get("result"), dict) else env


def register(hub: Hub, agent: str, *capabilities: str) -> None:
    call(hub, "POST", "/v1/sessions", {"agent_id": agent, "capabilities": list(capabilities), "replace": True})


def delegate(hub: Hub, by: str, to: str, body: str) -> int:
    return int(call(hub, "POST", "/v1/tasks", {"from_agent": by, "to_agent": to, "body": body})["id"])


def test_the_board_moves_a_card_live_when_its_task_changes(hub: Hub, page: Page) -> None:
    register(hub, "builder", "build")
    page.goto(hub.url + "/work")
    task_id = delegate(hub, "planner", "builder", "Ship the board\nsecond line")

    card = page.locator(f"#column-open #task-{task_id}")
    expect(card).to_contain_text(f"#{task_id} Ship the board", timeout=LIVE_MS)
    call(hub, "POST", f"/v1/tasks/{task_id}/start", {"actor": "builder"}, expect_status=200)
    expect(page.locator(f"#column-in_progress #task-{task_id}")).to_be_visible(timeout=LIVE_MS)
    expect(page.locator(f"#column-open #task-{task_id}")).to_have_count(0)

    page.locator(f"#task-{task_id} input[name=reason]").fill("not today")
    page.locator(f"#task-{task_id} button.danger", has_text="Fail").click()
    expect(page.locator(f"#column-failed #task-{task_id}")).to_contain_text("not today", timeout=LIVE_MS)


def test_the_map_shows_a_new_line_after_a_direct_message(hub: Hub, page: Page) -> None:
    register(hub, "mapper-a")
    register(hub, "mapper-b")
    page.goto(hub.url + "/map")
    expect(page.locator("svg.map")).to_be_visible()
    assert page.locator("#traffic", has_text="mapper-a").count() == 0

    post(hub, from_agent="mapper-a", to_agent="mapper-b", body="hello over there")

    expect(page.locator("#traffic")).to_contain_text("mapper-a", timeout=LIVE_MS)
    edge = page.locator("svg.map line.edge title", has_text="mapper-a → mapper-b")
    expect(edge).to_have_count(1)
    page.locator('svg.map a[href="/agents/mapper-b"]').click()
    expect(page.locator("h1")).to_contain_text("mapper-b")


def test_the_charts_render_with_data_and_with_none(hub: Hub, page: Page) -> None:
    call(hub, "POST", "/v1/channels", {"name": "quiet-room", "created_by": "charter"})
    page.goto(hub.url + "/stats?window=day")
    charts = page.locator("#activity svg.spark")
    expect(charts).to_have_count(4)
    quiet = page.locator("#room-activity tr", has_text="#quiet-room")
    expect(quiet.locator("svg.spark title")).to_have_text("messages: none in this window")
    assert quiet.locator("svg.spark rect").count() == 0
    post(hub, from_agent="charter", channel="general", body="one more for the chart")
    page.goto(hub.url + "/")
    expect(page.locator("#activity svg.spark").first).to_be_visible()
    assert page.locator("#activity svg.spark rect").count() >= 1  # the messages of this run
    lag = page.locator("#activity tr", has_text="delivery lag")
    expect(lag).to_have_count(1)


def test_an_agents_page_shows_its_holdings_and_revokes_its_key(hub: Hub, page: Page) -> None:
    register(hub, "keyholder", "deploy")
    call(hub, "POST", "/v1/claims", {"owner_agent_id": "keyholder", "claim_key": "release-9"})
    page.goto(hub.url + "/keys")
    page.locator("#mint-form input[name=agent_id]").fill("keyholder")
    page.locator("#mint-form button[type=submit]").click()
    expect(page.locator("#minted")).to_be_visible()

    page.goto(hub.url + "/agents/keyholder")
    expect(page.locator("#agent-claims")).to_contain_text("release-9")
    expect(page.locator("h1 .tag")).to_have_text("live")
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator("#agent-keys button", has_text="Revoke").first.click()
    expect(page.locator("#agent-keys .tag.bad")).to_have_text("revoked", timeout=LIVE_MS)
    expect(page).to_have_url(hub.url + "/agents/keyholder")


def test_hostile_names_and_bodies_stay_text_in_the_map_and_on_cards(hub: Hub, page: Page) -> None:
    register(hub, HOSTILE)
    post(hub, from_agent=HOSTILE, to_agent="mapper-a", body="from a hostile name")
    task_id = delegate(hub, HOSTILE, "builder", HOSTILE + " and a task")

    for path in ("/map", "/work", "/"):
        page.goto(hub.url + path)
        assert page.evaluate("window.__pwned === undefined"), path
    page.goto(hub.url + "/work")
    expect(page.locator(f"#task-{task_id} h3")).to_contain_text(HOSTILE)  # shown as text, not made an element
    assert page.locator(f"#task-{task_id} img").count() == 0
    page.goto(hub.url + "/map")
    assert page.locator("svg.map img").count() == 0
    expect(page.locator("svg.map text", has_text="<img").first).to_be_attached()


PAGES = [
    "/",
    "/rooms/general",
    "/threads/a11y-thread",
    "/work",
    "/map",
    "/stats",
    "/search?q=hello",
    "/agents/builder",
    "/deliveries",
    "/keys",
    "/network",
    "/waiting",
]


def test_no_page_has_a_serious_accessibility_violation(hub: Hub, page: Page) -> None:
    script = browser_support.axe_script(ROOT / ".cache")
    if not isinstance(script, Path):
        pytest.skip(script)
    register(hub, "builder", "build")
    post(hub, from_agent="builder", channel="general", body="hello for the search", thread_id="a11y-thread")
    found: dict[str, list[str]] = {}
    for path in PAGES:
        page.goto(hub.url + path)
        page.add_script_tag(path=str(script))
        result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
        serious = [
            f"{v['id']} ({v['impact']}): {v['help']} — {', '.join(str(n['target']) for n in v['nodes'][:3])}"
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        if serious:
            found[path] = serious
    assert not found, "\n".join(f"{path}: {v}" for path, violations in found.items() for v in violations)


def test_nothing_went_wrong_in_this_hub(hub: Hub) -> None:
    errors = [line for line in hub.output if "Traceback" in line or "Internal Server Error" in line]
    assert not errors, "\n".join(hub.output[-50:])
