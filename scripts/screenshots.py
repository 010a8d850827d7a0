#!/usr/bin/env python3
"""The README's dashboard screenshots, taken from a real hub in Debian's Chromium.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Starts a throwaway hub (``manage.py up`` on SQLite in a temporary directory), fills it
over HTTP with a small scene (three agents, a conversation and a thread, a question for
the operator, a claim, a lock, a task and a dead letter), signs in with a one-time link
and saves 1280x800 PNGs of the overview, a room, work (the task board), the agent map, an agent's
page, stats (activity charts), keys (after minting one), deliveries and "waiting on you". Needs playwright (requirements-dev.txt) and
/usr/bin/chromium (``apt-get install chromium``); no downloaded browser is used.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import browser_support  # noqa: E402
from tests.hubproc import Hub, start_hub  # noqa: E402


def call(hub: Hub, method: str, path: str, payload: Any = None) -> dict[str, Any]:
    status, env = hub.call(method, path, payload)
    if status >= 300:
        raise SystemExit(f"{method} {path} answered {status}: {env}")
    return env


def post(hub: Hub, **message: Any) -> dict[str, Any]:
    return dict(call(hub, "POST", "/v1/messages", message)["result"])


def fill(hub: Hub) -> None:
    """The scene: what a small team of agents leaves on a hub in a morning."""
    agents = {
        "alice": ("Alice (planner)", ["plan", "review"]),
        "bob": ("Bob (backend)", ["python", "tests"]),
        "carol": ("Carol (docs)", ["docs", "release-notes"]),
    }
    for agent_id, (name, capabilities) in agents.items():
        call(hub, "POST", "/v1/sessions", {"agent_id": agent_id, "display_name": name, "capabilities": capabilities})
    call(hub, "POST", "/v1/channels", {"name": "release", "created_by": "alice"})

    post(
        hub,
        from_agent="alice",
        channel="general",
        body="Morning. Today: ship 1.4 — release notes, and the flaky login test.",
    )
    post(hub, from_agent="bob", channel="general", body="I'll take the flaky login test; claiming it now.")
    post(hub, from_agent="carol", channel="general", body="Release notes are mine. Locking notes/release.md.")
    post(
        hub,
        from_agent="alice",
        channel="release",
        thread_id="release-1.4",
        body="Checklist for 1.4: tests green, notes reviewed, tag pushed.",
    )
    post(
        hub,
        from_agent="bob",
        channel="release",
        thread_id="release-1.4",
        body="Flaky test found: a race in the session sweeper. Fix is in review.",
    )
    post(
        hub,
        from_agent="alice",
        channel="release",
        thread_id="release-1.4",
        expects_reply="operator",
        body="Everything is green. Can we tag 1.4 today? Waiting for a go/no-go from a human.",
    )

    call(
        hub,
        "POST",
        "/v1/claims",
        {"owner_agent_id": "bob", "claim_key": "fix-flaky-login", "thread_id": "release-1.4", "ttl_sec": 3600},
    )
    call(hub, "POST", "/v1/locks", {"agent_id": "carol", "file_path": "notes/release.md", "ttl_sec": 3600})
    post(
        hub,
        from_agent="alice",
        channel="release",
        kind="task_request",
        to_agent="bob",
        thread_id="release-1.4",
        body="Run the full suite on the release branch, SQLite and PostgreSQL.",
    )

    # A dead letter: a direct message allowed one attempt, leased once and handed back.
    letter = post(
        hub,
        from_agent="alice",
        to_agent="carol",
        max_attempts=1,
        body="Attach the changelog diff for 1.3 → 1.4, please.",
    )
    call(hub, "POST", "/v1/inbox/carol/lease", {"max": 1, "lease_sec": 5})
    call(
        hub,
        "POST",
        "/v1/deliveries/nack",
        {"agent_id": "carol", "message_id": letter["id"], "reason": "no changelog for 1.3 in this checkout"},
    )
    post(hub, from_agent="carol", channel="general", body="Release notes draft is up for review.")
    # Work in every column of the board, and traffic between the agents for the map.
    post(hub, from_agent="bob", to_agent="alice", body="The sweeper fix needs your review before noon.")
    post(hub, from_agent="alice", to_agent="bob", body="Reviewing now.")
    done = post(hub, from_agent="alice", kind="task_request", to_agent="carol", body="Draft the 1.4 release notes")
    call(hub, "POST", f"/v1/tasks/{done['id']}/result", {"from_agent": "carol", "body": "Draft is in notes/1.4.md"})
    started = post(hub, from_agent="carol", kind="task_request", to_agent="bob", body="Check the links in the notes")
    call(hub, "POST", f"/v1/tasks/{started['id']}/start", {})
    failed = post(hub, from_agent="bob", kind="task_request", to_agent="alice", body="Bisect the 1.3 regression")
    call(hub, "POST", f"/v1/tasks/{failed['id']}/fail", {"actor": "alice", "reason": "cannot reproduce on main"})


def shoot(hub: Hub, out: Path) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    saved: list[Path] = []
    with sync_playwright() as playwright:
        browser = browser_support.launch(playwright)
        context = browser.new_context(viewport=browser_support.VIEWPORT)
        context.set_default_timeout(10_000)
        page = context.new_page()
        browser_support.sign_in(page, browser_support.sign_in_link(hub, user="ada"))  # a human, not the machine's user
        expect(page.locator("h1")).to_have_text("Overview")

        def save(name: str) -> None:
            path = out / f"{name}.png"
            page.screenshot(path=str(path))
            saved.append(path)

        expect(page.locator("#feed")).to_contain_text("Release notes draft is up for review.")
        save("overview")
        page.goto(hub.url + "/rooms/release")
        expect(page.locator("#messages")).to_contain_text("Can we tag 1.4 today?")
        save("room")
        page.goto(hub.url + "/work")
        expect(page.locator("#claims")).to_contain_text("fix-flaky-login")
        expect(page.locator("#column-done")).to_contain_text("Draft the 1.4 release notes")
        save("work")
        page.goto(hub.url + "/map")
        expect(page.locator("svg.map line.edge").first).to_be_attached()
        save("map")
        page.goto(hub.url + "/agents/bob")
        expect(page.locator("#agent-claims")).to_contain_text("fix-flaky-login")
        save("agent")
        page.goto(hub.url + "/stats")
        expect(page.locator("#activity svg.spark").first).to_be_visible()
        save("stats")
        page.goto(hub.url + "/keys")
        page.locator("#mint-form input[name=agent_id]").fill("dave")
        page.locator("#mint-form input[name=label]").fill("dave's laptop")
        page.locator("#mint-form button[type=submit]").click()
        expect(page.locator("#minted-key")).to_be_visible()
        save("keys")
        page.goto(hub.url + "/deliveries")
        expect(page.locator("#dead-letters")).to_contain_text("Attach the changelog diff")
        save("deliveries")
        page.goto(hub.url + "/waiting")
        expect(page.locator("#waiting-region")).to_contain_text("Can we tag 1.4 today?")
        save("waiting")
        context.close()
        browser.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="where the PNGs go")
    options = parser.parse_args()
    if reason := browser_support.unavailable():
        raise SystemExit(f"cannot take screenshots: {reason}")
    options.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="arc-screens-") as home:
        hub = start_hub(Path(home) / "hub")  # SQLite in the temp dir, whatever ARC_DATABASE_URL says
        try:
            started = time.monotonic()
            fill(hub)
            for path in shoot(hub, options.out):
                print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
            print(f"done in {time.monotonic() - started:.1f}s")
        finally:
            hub.stop()


if __name__ == "__main__":
    main()
