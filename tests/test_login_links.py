"""One-time dashboard links (docs/dashboard.md): ``services.login_link_mint/redeem``, ``/login/<token>``,
``manage.py login`` and the ``login_url`` of ``ensure``.

Whoever can run the hub's commands on its storage gets a link, and so is trusted as its
administrator: the link's user is created as staff, with no usable password.

Personas:
- ``ada``: the person at the hub's machine, who runs ``manage.py login`` and opens the link;
- ``nina``: an existing Django user who is not staff until a link is minted for her;
- ``eve``: someone holding a used, expired or made-up link.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from io import StringIO
from urllib.parse import quote

import pytest
import requests
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from coordination.core import services
from coordination.core.errors import Invalid, Unauthorized
from coordination.core.models import LoginLink
from coordination.process.signin import sign_in_url as _login
from tests.hubproc import Hub, manage, sign_in

pytestmark = pytest.mark.django_db

URL = "http://hub.test:6969"
LINK = re.compile(r"^http://hub\.test:6969/login/([A-Za-z0-9_-]{40,})$")


def open_link(browser: Client, token: str):
    """Open the link and press its button: the GET shows the page, the POST signs in."""
    assert browser.get(f"/login/{token}").status_code == 200
    return browser.post(f"/login/{token}")


def signed_in_as(browser: Client) -> str | None:
    response = browser.get("/work")
    return response.wsgi_request.user.get_username() if response.status_code == 200 else None


# ── The service ───────────────────────────────────────────────────────────


def test_it_creates_a_staff_user_with_no_usable_password(db):
    services.login_link_mint(username="ada")

    ada = User.objects.get(username="ada")
    assert (ada.is_staff, ada.is_superuser, ada.is_active) == (True, True, True)
    assert not ada.has_usable_password()


def test_it_keeps_only_the_tokens_digest(db):
    token = services.login_link_mint(username="ada")

    link = LoginLink.objects.get()
    assert link.digest == hashlib.sha256(token.encode()).hexdigest()
    assert token not in link.digest
    assert abs(link.expires_at - link.created_at - timedelta(hours=24)) < timedelta(seconds=5)


def test_a_token_lets_its_user_in_once(db):
    token = services.login_link_mint(username="ada")

    assert services.login_link_redeem(token=token).username == "ada"
    with pytest.raises(Unauthorized, match="already used"):
        services.login_link_redeem(token=token)


@pytest.mark.parametrize(
    "account",
    [{"is_staff": False, "is_active": True}, {"is_staff": True, "is_active": False}],
    ids=["not-staff", "deactivated"],
)
def test_it_never_promotes_or_revives_an_existing_user(db, account):
    User.objects.create_user("nina", "nina@example.com", "pw-nina", **account)

    with pytest.raises(Invalid, match="exists but is not an active staff user"):
        services.login_link_mint(username="nina")

    nina = User.objects.get(username="nina")
    assert (nina.is_staff, nina.is_active, nina.is_superuser) == (account["is_staff"], account["is_active"], False)
    assert not LoginLink.objects.exists()


def test_an_existing_staff_user_keeps_her_password_and_rights(db):
    User.objects.create_user("nina", "nina@example.com", "pw-nina", is_staff=True)

    token = services.login_link_mint(username="nina")

    nina = services.login_link_redeem(token=token)
    assert (nina.is_staff, nina.is_superuser) == (True, False)
    assert nina.check_password("pw-nina")


def test_a_link_of_a_user_deactivated_since_is_refused(db):
    token = services.login_link_mint(username="ada")
    User.objects.filter(username="ada").update(is_active=False)

    with pytest.raises(Unauthorized, match="no longer an active staff user"):
        services.login_link_redeem(token=token)


def test_minting_sweeps_expired_links(db):
    services.login_link_mint(username="ada")
    LoginLink.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    services.login_link_mint(username="ada")

    assert LoginLink.objects.count() == 1


# ── /login/<token> ────────────────────────────────────────────────────────


def test_the_link_signs_in_once_and_opens_the_overview(db):
    token = services.login_link_mint(username="ada")
    ada, eve = Client(), Client()

    response = open_link(ada, token)

    assert (response.status_code, response["Location"]) == (302, "/")
    assert "no-cache" in response["Cache-Control"]
    assert signed_in_as(ada) == "ada"
    again = open_link(eve, token)
    assert again.status_code == 401
    assert "already used" in again.content.decode()
    assert signed_in_as(eve) is None


def test_an_expired_link_is_refused(db):
    token = services.login_link_mint(username="ada")
    LoginLink.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    eve = Client()

    response = open_link(eve, token)

    assert response.status_code == 401
    assert "expired" in response.content.decode()
    assert signed_in_as(eve) is None
    assert LoginLink.objects.get().used_at is None


@pytest.mark.parametrize("token", ["made-up", "x" * 300, quote('"><img src=x onerror=alert(2)>', safe="")])
def test_an_unknown_link_is_refused(db, token):
    services.login_link_mint(username="ada")
    eve = Client()

    response = open_link(eve, token)

    assert response.status_code == 401
    assert "<img" not in response.content.decode()
    assert signed_in_as(eve) is None


def test_a_link_is_refused_to_a_remote_browser_while_remote_access_is_off(db):
    token = services.login_link_mint(username="ada")

    assert Client().post(f"/login/{token}", REMOTE_ADDR="203.0.113.5").status_code == 403
    assert LoginLink.objects.get().used_at is None  # still good on the hub's machine
    assert open_link(Client(), token).status_code == 302


def test_a_get_shows_a_button_and_uses_nothing_so_a_link_preview_cannot_burn_it(db):
    token = services.login_link_mint(username="ada")
    previewer, ada = Client(), Client()

    for _ in range(3):  # a chat app's preview, a mail scanner, the human's own first click
        page = previewer.get(f"/login/{token}")
        assert page.status_code == 200
        assert 'id="sign-in"' in page.content.decode()
        assert 'method="post"' in page.content.decode()
    assert LoginLink.objects.get().used_at is None
    assert signed_in_as(previewer) is None
    assert open_link(ada, token).status_code == 302
    assert signed_in_as(ada) == "ada"


def test_the_button_needs_the_pages_csrf_token(db):
    token = services.login_link_mint(username="ada")
    strict = Client(enforce_csrf_checks=True)

    assert strict.post(f"/login/{token}").status_code == 403
    assert LoginLink.objects.get().used_at is None


def test_other_methods_on_a_link_are_refused(db):
    token = services.login_link_mint(username="ada")

    assert Client().put(f"/login/{token}").status_code == 405
    assert LoginLink.objects.get().used_at is None


# ── manage.py login ───────────────────────────────────────────────────────


def login_command(*args: str) -> str:
    out = StringIO()
    call_command("login", "--url", URL, *args, stdout=out)
    return out.getvalue().strip()


def test_manage_login_prints_a_link_that_works(db):
    printed = login_command("--user", "ada")

    match = LINK.match(printed)
    assert match, printed
    ada = Client()
    assert open_link(ada, match.group(1)).status_code == 302
    assert signed_in_as(ada) == "ada"
    user = User.objects.get(username="ada")
    assert user.is_staff
    assert not user.has_usable_password()


def test_manage_login_defaults_to_the_login_name(db, monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "grace")

    token = LINK.match(login_command()).group(1)  # type: ignore[union-attr]

    assert services.login_link_redeem(token=token).username == "grace"


def test_each_manage_login_prints_a_new_link_and_the_old_one_still_works(db):
    first, second = (LINK.match(login_command("--user", "ada")).group(1) for _ in range(2))  # type: ignore[union-attr]

    assert first != second
    assert open_link(Client(), first).status_code == 302
    assert open_link(Client(), second).status_code == 302


# ── ensure's login_url ────────────────────────────────────────────────────


def test_ensure_offers_no_link_for_a_hub_on_other_storage(db, live_hub: Hub):
    answer = _login(live_hub.url)

    assert "login_url" not in answer
    assert "serves other storage" in answer["login"]
    assert not LoginLink.objects.exists()


def test_ensure_offers_no_link_when_no_hub_answers(db):
    answer = _login("http://127.0.0.1:9")

    assert answer["login"].startswith("no login link:")


@pytest.mark.live
def test_ensure_beside_a_hub_gives_a_login_url_that_signs_in(live_hub: Hub):
    code = f"import json; from coordination.process.signin import sign_in_url as _login; print(json.dumps(_login({live_hub.url!r})))"
    answer = json.loads(manage(live_hub, "shell", "-c", code).splitlines()[-1])

    assert answer["login_url"].startswith(f"{live_hub.url}/login/")
    browser = requests.Session()
    response = sign_in(browser, answer["login_url"])
    assert (response.status_code, response.url) == (200, f"{live_hub.url}/")
    assert "Overview" in response.text
    token = browser.cookies["csrftoken"]
    again = browser.post(
        answer["login_url"], data={"csrfmiddlewaretoken": token}, headers={"Referer": answer["login_url"]}
    )
    assert again.status_code == 401
