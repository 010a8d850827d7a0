"""The dashboard in a real browser (Debian's Chromium under Playwright) against a live hub.

One hub and one browser for the module; each test gets a fresh browser context signed in
with the module's session, so tests share the hub's data and use names of their own.

Personas:
- ``ada``, the operator: the human at the dashboard (a staff user signed in by a one-time link);
- ``alice``: an agent posting over HTTP and holding work the operator may take back;
- ``dave``: an agent whose key the operator mints and revokes in the browser.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests import browser_support
from tests.hubproc import Hub, running_hub

if reason := browser_support.unavailable():
    pytest.skip(f"browser tests skipped: {reason}", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, StorageState

pytestmark = pytest.mark.live

TIMEOUT_MS = 5000


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("browser") / "hub") as hub:
        yield hub


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = browser_support.launch(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def signed_in(hub: Hub, browser: Browser) -> tuple[str, StorageState]:
    """The operator opens a one-time link: it signs in and lands on the overview. (link, session)."""
    link = browser_support.sign_in_link(hub, user="ada")
    context = browser.new_context()
    page = context.new_page()
    browser_support.sign_in(page, link)
    expect(page).to_have_url(hub.url + "/")
    expect(page.locator("h1")).to_have_text("Overview")
    state = context.storage_state()
    context.close()
    return link, state


@pytest.fixture
def context(browser: Browser, signed_in: tuple[str, StorageState]) -> Iterator[BrowserContext]:
    context = browser.new_context(storage_state=signed_in[1], viewport=browser_support.VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A page that fails its test on a script error, a console error or a 5xx answer."""
    page = context.new_page()
    trouble: list[str] = []
    page.on("pageerror", lambda error: trouble.append(f"script error: {error}"))
    page.on("console", lambda msg: trouble.append(f"console: {msg.text}") if msg.type == "error" else None)
    page.on("response", lambda r: trouble.append(f"{r.status} {r.url}") if r.status >= 500 else None)
    yield page
    assert not trouble, trouble


def post(hub: Hub, **message: Any) -> dict[str, Any]:
    """A message posted by an agent over HTTP; the hub's record of it."""
    status, env = hub.call("POST", "/v1/messages", message)
    assert status == 201, env
    return dict(env["result"])


def mark(page: Page) -> None:
    """A marker in the page's JavaScript world: it survives in-page swaps, not a navigation."""
    page.evaluate("window.__marker = 1")


def still_marked(page: Page) -> bool:
    return bool(page.evaluate("window.__marker === 1"))


# ── Signing in ───────────────────────────────────────────────────────────


def test_the_sign_in_link_works_once(browser: Browser, hub: Hub, signed_in: tuple[str, StorageState]) -> None:
    context = browser.new_context()
    page = context.new_page()

    page.goto(signed_in[0])  # the module's link, used already: opening it still only shows the button
    expect(page.locator("h1")).to_have_text("Sign in to the hub")
    page.get_by_role("button", name="Sign in").click()

    expect(page.locator("h1")).to_have_text("This login link does not work")
    page.goto(hub.url + "/work")
    expect(page).to_have_url(hub.url + "/login?next=%2Fwork")
    context.close()


# ── Live messages ────────────────────────────────────────────────────────


def test_a_message_posted_over_http_appears_live_on_the_overview(hub: Hub, page: Page) -> None:
    page.goto(hub.url + "/")
    mark(page)

    message = post(hub, from_agent="alice", channel="general", body="overview live: the build is green")

    row = page.locator(f'#feed li[data-message-id="{message["id"]}"]')
    expect(row).to_contain_text("overview live: the build is green")
    expect(row).to_contain_text("alice")
    expect(page.locator("#feed li").first).to_have_attribute("data-message-id", str(message["id"]))  # newest on top
    assert still_marked(page)


def test_a_message_posted_over_http_appears_live_in_its_room_only(hub: Hub, page: Page) -> None:
    assert hub.call("POST", "/v1/channels", {"name": "ops-live", "created_by": "alice"})[0] in (200, 201)
    page.goto(hub.url + "/rooms/ops-live")
    mark(page)

    elsewhere = post(hub, from_agent="alice", channel="general", body="not for ops-live")
    here = post(hub, from_agent="alice", channel="ops-live", body="room live: deploy at noon")

    expect(page.locator(f'#messages li[data-message-id="{here["id"]}"]')).to_contain_text("room live: deploy at noon")
    expect(page.locator(f'#messages li[data-message-id="{elsewhere["id"]}"]')).to_have_count(0)
    assert still_marked(page)


def test_the_operator_posts_from_the_room_page(hub: Hub, page: Page) -> None:
    page.goto(hub.url + "/rooms/general")

    page.locator("#post-form textarea[name=body]").fill("operator here: please hold the release")
    page.locator("#post-form button[type=submit]").click()

    expect(page.locator("p.flash")).to_contain_text("Posted message")
    expect(page.locator("#messages")).to_contain_text("operator here: please hold the release")
    status, env = hub.call("GET", "/v1/messages?channel=general&limit=200")
    assert status == 200
    (sent,) = [m for m in env["result"] if m["body"] == "operator here: please hold the release"]
    assert sent["from_agent"] == "operator"
    expect(page.locator(f'#messages li[data-message-id="{sent["id"]}"]')).to_have_count(1)  # not twice (page + live)


def test_a_hostile_body_pushed_live_shows_as_text_and_does_not_run(hub: Hub, page: Page) -> None:
    hostile = '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=1</script>'
    page.goto(hub.url + "/")
    mark(page)

    message = post(hub, from_agent="alice", channel="general", body=hostile)

    row = page.locator(f'#feed li[data-message-id="{message["id"]}"]')
    expect(row.locator(".body")).to_have_text(hostile)
    expect(row.locator("img, script")).to_have_count(0)
    row.get_by_role("link", name="#general").click()  # a boosted swap: the room rendered with it, same document
    expect(page).to_have_url(hub.url + "/rooms/general")
    expect(page.locator(f'#messages li[data-message-id="{message["id"]}"] .body')).to_have_text(hostile)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert still_marked(page)  # one document all along: __pwned had every chance to be set


# ── Keys ─────────────────────────────────────────────────────────────────


def test_a_minted_key_is_shown_once_works_and_stops_when_revoked(hub: Hub, page: Page) -> None:
    page.goto(hub.url + "/keys")
    page.locator("#mint-form input[name=agent_id]").fill("dave")
    page.locator("#mint-form button[type=submit]").click()

    expect(page.locator("#minted-key")).to_have_text(re.compile(r"^arc_[0-9a-f]+_\S+$"))
    secret = page.locator("#minted-key").inner_text()
    prefix = secret.split("_")[1]
    assert browser_support.status_with_key(hub, "/v1/hub-info", secret) == 200
    expect(page).to_have_url(hub.url + "/keys")  # not /keys/mint nor /keys/minted: a reload shows no secret

    page.get_by_role("link", name="Work", exact=True).click()
    expect(page.locator("h1")).to_have_text("Work")
    page.go_back()  # htmx restores history from its cache (sessionStorage) or the server
    expect(page.locator("h1")).to_have_text("Agent keys")
    expect(page.locator("#minted-key")).to_have_count(0)
    assert secret not in page.evaluate("JSON.stringify(sessionStorage) + JSON.stringify(localStorage)")
    page.reload()
    expect(page.locator("#minted-key")).to_have_count(0)
    assert secret not in page.content()
    row = page.locator(f'#keys tr[data-key-id="{prefix}"]')
    expect(row).to_contain_text("dave")
    expect(row).to_contain_text("usable")

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()

    expect(page.locator("p.flash")).to_contain_text(f"Revoked key {prefix} of dave")
    expect(page.locator(f'#keys tr[data-key-id="{prefix}"]')).to_contain_text("revoked")
    assert browser_support.status_with_key(hub, "/v1/hub-info", secret) == 401


# ── Rooms and work ───────────────────────────────────────────────────────


def test_closing_a_room_refuses_posts_to_it(hub: Hub, page: Page) -> None:
    assert hub.call("POST", "/v1/channels", {"name": "release-plan", "created_by": "alice"})[0] in (200, 201)
    page.goto(hub.url + "/rooms/release-plan")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Close room").click()

    expect(page.locator("p.flash")).to_contain_text("Closed #release-plan.")
    expect(page.locator("#roomstate h1")).to_contain_text("closed by")
    expect(page.get_by_role("button", name="Reopen room")).to_be_visible()
    status, env = hub.call("POST", "/v1/messages", {"from_agent": "alice", "channel": "release-plan", "body": "x"})
    assert status == 409, env


def test_a_link_to_a_room_that_does_not_exist_shows_the_not_found_page(
    hub: Hub, browser: Browser, context: BrowserContext
) -> None:
    page = context.new_page()  # not the `page` fixture: the browser logs the 404 itself as a console error
    page.goto(hub.url + "/")
    # A boosted link, as the pages' own links are (a room deleted from under an open page, say).
    page.evaluate(
        "document.querySelector('main').insertAdjacentHTML('beforeend', '<a id=\"gone\" href=\"/rooms/gone\">gone</a>');"
        "htmx.process(document.getElementById('gone'))"
    )
    page.locator("#gone").click()

    expect(page.locator("h1")).to_have_text("No room gone")
    expect(page).to_have_url(hub.url + "/rooms/gone")


def test_force_releasing_a_claim_frees_it_and_tells_its_holder(hub: Hub, page: Page) -> None:
    status, env = hub.call("POST", "/v1/claims", {"owner_agent_id": "alice", "claim_key": "job-1"})
    assert (status, env["acquired"]) == (201, True), env
    page.goto(hub.url + "/work")
    row = page.locator("#claims tr", has_text="job-1")
    expect(row).to_contain_text("alice")

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Force-release").click()

    expect(page.locator("p.flash")).to_contain_text("Released claim job-1; alice was told.")
    expect(page.locator("#claims")).not_to_contain_text("job-1")
    status, env = hub.call("GET", "/v1/claims")
    assert status == 200
    (claim,) = [c for c in env["result"] if c["claim_key"] == "job-1"]
    assert claim["released_at"] is not None
    status, env = hub.call("GET", "/v1/inbox/alice")
    assert status == 200
    notices = [m["body"] for m in env["result"] if m["kind"] == "notice"]
    assert "Your claim job-1 was released by ada; others may take it now." in notices


# ── Without JavaScript ───────────────────────────────────────────────────


def test_the_pages_read_and_post_without_javascript(
    browser: Browser, hub: Hub, signed_in: tuple[str, StorageState]
) -> None:
    message = post(hub, from_agent="alice", channel="general", body="readable without scripts")
    context = browser.new_context(java_script_enabled=False, storage_state=signed_in[1])
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()

    page.goto(hub.url + "/")
    expect(page.locator(f'#feed li[data-message-id="{message["id"]}"]')).to_contain_text("readable without scripts")
    expect(page.locator("#agents-region h2")).to_contain_text("Live agents")
    page.goto(hub.url + "/rooms/general")
    page.locator("#post-form textarea[name=body]").fill("posted by a plain form")
    page.locator("#post-form button[type=submit]").click()

    expect(page).to_have_url(hub.url + "/rooms/general")
    expect(page.locator("p.flash")).to_contain_text("Posted message")
    expect(page.locator("#messages")).to_contain_text("posted by a plain form")
    for path in ("/work", "/deliveries", "/keys", "/network", "/stats", "/waiting"):
        response = page.goto(hub.url + path)
        assert response is not None
        assert response.status == 200, path
    context.close()


def test_nothing_went_wrong_in_the_hub(hub: Hub) -> None:
    """The hub logged no server error while the browser used it."""
    errors = [line for line in hub.output if "Traceback" in line or "Internal Server Error" in line]
    assert not errors, "\n".join(hub.output[-50:])
