from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard import auth, live, views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("live", live.live, name="live"),
    path("waiting", views.waiting, name="waiting"),
    path("rooms/<path:name>/post", views.room_post, name="room-post"),
    path("rooms/<path:name>/close", views.room_close, name="room-close"),
    path("rooms/<path:name>/reopen", views.room_reopen, name="room-reopen"),
    path("rooms/<path:name>", views.room, name="room"),
    path("messages/<int:message_id>/reply", views.message_reply, name="message-reply"),
    path("messages/<int:message_id>/reply-claim", views.reply_claim, name="reply-claim"),
    path("threads/<path:thread_id>", views.thread, name="thread"),
    path("work", views.work, name="work"),
    path("tasks/<int:task_id>/<str:verb>", views.task_act, name="task"),
    path("claims/release", views.claim_release, name="claim-release"),
    path("locks/release", views.lock_release, name="lock-release"),
    path("deliveries", views.deliveries, name="deliveries"),
    path("deliveries/retry", views.delivery_retry, name="delivery-retry"),
    path("keys", views.keys, name="keys"),
    path("keys/mint", views.key_mint, name="key-mint"),
    path("keys/<str:key_id>/revoke", views.key_revoke, name="key-revoke"),
    path("network", views.network, name="network"),
    path("network/set", views.network_set, name="network-set"),
    path("stats", views.stats, name="stats"),
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
