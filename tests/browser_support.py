"""Debian's Chromium under Playwright, for the browser tests and ``scripts/screenshots.py``.

Only the system browser (``/usr/bin/chromium``, from apt) is ever launched: Playwright's
own downloaded browsers (``playwright install``) are not used anywhere in this project.
"""

from __future__ import annotations

import importlib.util
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from tests.hubproc import Hub, manage

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright, ViewportSize

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox: the tests run as root in containers, where Chromium's sandbox cannot start.
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}


def unavailable() -> str | None:
    """Why the browser cannot run here (to skip with), or ``None`` when it can."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -r requirements-dev.txt)"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium; scripts/test.sh installs it when root)"
    return None


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)


def sign_in_link(hub: Hub, *, user: str = "") -> str:
    """A fresh one-time dashboard link for the hub, as an operator gets it (``manage.py login``);
    for ``user`` (default: whoever runs the tests)."""
    link = manage(hub, "login", "--url", hub.url, *(["--user", user] if user else []))
    assert link.startswith(hub.url + "/login/"), link
    return link


def sign_in(page: Page, link: str) -> None:
    """Open a one-time link as its human does: the page it shows, then its "Sign in" button."""
    page.goto(link)
    page.get_by_role("button", name="Sign in").click()


def status_with_key(hub: Hub, path: str, key: str) -> int:
    """The HTTP status of ``GET path`` with ``Authorization: Bearer key``."""
    request = urllib.request.Request(hub.url + path, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


AXE_VERSION = "4.14.1"
AXE_TARBALL = f"https://registry.npmjs.org/axe-core/-/axe-core-{AXE_VERSION}.tgz"
# The npm registry's integrity for that tarball (sha512, base64): what is fetched is checked against it.
AXE_INTEGRITY = "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="


def axe_script(cache: Path) -> Path | str:
    """axe-core's ``axe.min.js`` (the accessibility checker, from the npm registry), fetched once into
    ``cache``; a reason (to skip with) when it cannot be had."""
    import base64
    import hashlib
    import io
    import tarfile

    script = cache / f"axe-core-{AXE_VERSION}" / "axe.min.js"
    if script.exists():
        return script
    try:
        with urllib.request.urlopen(AXE_TARBALL, timeout=60) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as exc:
        return f"axe-core {AXE_VERSION} could not be fetched from the npm registry ({exc})"
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != AXE_INTEGRITY:
        return f"axe-core {AXE_VERSION} from the registry does not match its integrity ({digest[:24]}…)"
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        member = archive.extractfile("package/axe.min.js")
        if member is None:
            return "the axe-core tarball has no package/axe.min.js"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_bytes(member.read())
    return script
