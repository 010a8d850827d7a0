"""Who may use the dashboard, and as whom (docs/dashboard.md).

A human signs in with Django auth: a one-time link printed by ``up``/``ensure``/``login``
(``services.login_link_mint``) or a staff user's password. A staff user acts as the hub's
``operator`` with admin rights, through the same ``access.resolve`` as every API request;
its checks (room scope, admin, rate limit) then run on each action as they do over REST.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib.auth import login
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from coordination.core import access, services
from coordination.core.errors import ArcError

View = Callable[..., HttpResponse]


class DashboardRequest(HttpRequest):
    """What the dashboard's views see: django-htmx's details, and the identity acting (``operator_required``)."""

    htmx: HtmxDetails
    arc_identity: access.Identity


def identity(request: HttpRequest) -> access.Identity:
    """The dashboard user as an API identity (``operator``, admin), by the API's own rules."""
    return access.resolve(authorization=None, client=request.META.get("REMOTE_ADDR"), staff=request.user)


def operator_required(view: View) -> View:
    """Pages and actions for a signed-in staff user; anyone else goes to the sign-in page."""

    @functools.wraps(view)
    def wrapped(request: DashboardRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not access.staff_member(request.user):
            target = reverse("dashboard:login") + "?" + urlencode({"next": request.get_full_path()})
            if request.htmx:  # a live region of an expired session: reload the whole page to the sign-in
                return HttpResponseClientRedirect(target)
            return HttpResponseRedirect(target)
        request.arc_identity = identity(request)
        return view(request, *args, **kwargs)

    return wrapped


@never_cache
@require_http_methods(["GET", "POST"])
def login_link(request: HttpRequest, token: str) -> HttpResponse:
    """``/login/<token>``: a GET shows one button; its POST uses the one-time link and signs in.

    A chat app's or a mail client's link preview fetches the link with a GET: that must not use
    it up, so only the button's POST (with the page's CSRF token) redeems it.
    """
    if request.method != "POST":
        return render(request, "dashboard/login_link.html", {"token": token})
    try:
        user = services.login_link_redeem(token=token)
    except ArcError as exc:
        return render(request, "dashboard/login_failed.html", {"reason": exc.message}, status=exc.status)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return HttpResponseRedirect(reverse("dashboard:overview"))


class StaffAuthenticationForm(AuthenticationForm):
    """Password sign-in for staff users only: the dashboard has no view for anyone else."""

    def confirm_login_allowed(self, user: Any) -> None:
        super().confirm_login_allowed(user)
        if not user.is_staff:
            raise forms.ValidationError("This user is not a staff user; ask an administrator.", code="not_staff")
