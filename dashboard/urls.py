from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path, register_converter
from django.urls.converters import StringConverter

from dashboard import auth, live, views


class TextConverter(StringConverter):
    """Any room name or thread id, slashes and line breaks too (``path`` stops at a newline).

    Agents choose these names; every one of them must have a page and links that work.
    """

    regex = r"[\s\S]+"


register_converter(TextConverter, "text")

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("live", live.live, name="live"),
    path("waiting", views.waiting, name="waiting"),
    # Actions live under act/, so that no room name (say "x/close") can reach an action by GET.
    path("act/rooms/<text:name>/post", views.room_post, name="room-post"),
    path("act/rooms/<text:name>/close", views.room_close, name="room-close"),
    path("act/rooms/<text:name>/reopen", views.room_reopen, name="room-reopen"),
    path("rooms/<text:name>", views.room, name="room"),
    path("messages/<int:message_id>/reply", views.message_reply, name="message-reply"),
    path("messages/<int:message_id>/reply-claim", views.reply_claim, name="reply-claim"),
    path("threads/<text:thread_id>", views.thread, name="thread"),
    path("work", views.work, name="work"),
    path("tasks/<int:task_id>/<str:verb>", views.task_act, name="task"),
    path("claims/release", views.claim_release, name="claim-release"),
    path("locks/release", views.lock_release, name="lock-release"),
    path("deliveries", views.deliveries, name="deliveries"),
    path("deliveries/retry", views.delivery_retry, name="delivery-retry"),
    path("keys", views.keys, name="keys"),
    path("keys/mint", views.key_mint, name="key-mint"),
    path("keys/minted", views.key_minted, name="key-minted"),
    path("keys/<str:key_id>/revoke", views.key_revoke, name="key-revoke"),
    path("network", views.network, name="network"),
    path("network/set", views.network_set, name="network-set"),
    path("stats", views.stats, name="stats"),
    path("map", views.agent_map, name="map"),
    path("search", views.search, name="search"),
    path("agents/<text:agent_id>", views.agent, name="agent"),
    path(
        "login",
        auth_views.LoginView.as_view(
            template_name="dashboard/login.html", authentication_form=auth.StaffAuthenticationForm
        ),
        name="login",
    ),
    path("login/<str:token>", auth.login_link, name="login-link"),
    path("logout", auth_views.LogoutView.as_view(next_page="dashboard:login"), name="logout"),
]
