"""One-time dashboard sign-in links for whoever runs the hub's commands (docs/dashboard.md)."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from coordination.core.errors import Invalid, Unauthorized
from coordination.core.models import LoginLink
from coordination.core.parsing import required_text
from coordination.core.services import keys

LOGIN_LINK_TTL = timedelta(hours=24)


def login_link_mint(*, username: str) -> str:
    """A one-time dashboard login token for ``username``: a staff user, created (as superuser) if absent.

    Only whoever can run the hub's commands on its storage gets one (``up``, ``ensure``,
    ``login``), so that user is trusted as an administrator, like a notebook server's owner.
    The token is returned once; only its hash is kept.
    """
    from django.contrib.auth import get_user_model

    username = required_text(username, "username")
    user_model = get_user_model()
    with transaction.atomic():
        user, created = user_model.objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_unusable_password()  # the links are the way in; a password can be set in the admin
            user.save(update_fields=["password"])
        elif not (user.is_staff and user.is_active):
            # Never promote or revive an account someone made or switched off on purpose.
            raise Invalid(f"the user {username} exists but is not an active staff user; pick another name (--user)")
        now = timezone.now()
        LoginLink.objects.filter(expires_at__lt=now).delete()
        token = secrets.token_urlsafe(32)
        LoginLink.objects.create(digest=keys.key_digest(token), username=username, expires_at=now + LOGIN_LINK_TTL)
    return token


def login_link_redeem(*, token: str) -> Any:
    """The user a login token lets in, once: a second use, an expired or unknown token is ``Unauthorized``."""
    from django.contrib.auth import get_user_model

    now = timezone.now()
    digest = keys.key_digest(token)
    with transaction.atomic():
        # One conditional update: of two tabs opening the same link, one gets in.
        if not LoginLink.objects.filter(digest=digest, used_at__isnull=True, expires_at__gte=now).update(used_at=now):
            raise Unauthorized(
                "this login link is unknown, expired or already used; run `manage.py login` for a new one"
            )
        username = LoginLink.objects.get(pk=digest).username
        user = get_user_model().objects.filter(username=username, is_active=True, is_staff=True).first()
        if user is None:
            raise Unauthorized(f"the user {username} of this login link is no longer an active staff user")
        return user
