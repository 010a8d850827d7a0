"""The dashboard's one-time sign-in links, as the hub's commands print them (``up``, ``ensure``, ``login``)."""

from __future__ import annotations

import getpass

from django.urls import reverse

from coordination.core import hub, services


def local_username() -> str:
    """The dashboard user for whoever runs the hub's commands: their login name."""
    try:
        return getpass.getuser() or "operator"
    except (KeyError, OSError):  # no name for this uid (a container): one name for the machine's user
        return "operator"


def sign_in_path(*, username: str) -> str:
    """A fresh one-time dashboard link for ``username``: its path, to put after the hub's URL."""
    return reverse("dashboard:login-link", args=[services.login_link_mint(username=username)])


def sign_in_url(url: str) -> dict[str, str]:
    """``{"login_url": ...}``, a one-time link into the hub at ``url`` if it serves this storage; else why not."""
    import requests

    try:
        answered = requests.get(f"{url}/v1/hub-info", timeout=5).headers.get("X-Arc-Instance")
        if answered != hub.instance_id():
            return {"login": "the hub at this URL serves other storage: run `manage.py login` beside it"}
        return {"login_url": url.rstrip("/") + sign_in_path(username=local_username())}
    except Exception as exc:  # noqa: BLE001 - the hub runs either way; only the link is missing
        return {"login": f"no login link: {exc}"}
