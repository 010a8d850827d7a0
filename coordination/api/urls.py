from __future__ import annotations

from django.urls import path

from coordination.api import streams, views

urlpatterns = [
    path("sessions", views.SessionsView.as_view()),
    path("sessions/<str:session_id>", views.SessionView.as_view()),
    path("agents", streams.agents),
    path("channels", views.ChannelsView.as_view()),
    path("hub-info", views.HubInfoView.as_view()),
    path("messages", streams.messages),
    path("messages/<int:message_id>/status", views.MessageStatusView.as_view()),
    path("messages/<int:message_id>/reply-claim", views.ReplyClaimView.as_view()),
    path("stats", views.StatsView.as_view()),
    path("events", streams.events),
    path("stream", streams.stream),
    path("bootstrap", views.BootstrapView.as_view()),
    path("threads", views.ThreadsView.as_view()),
    path("threads/<str:thread_id>", views.ThreadView.as_view()),
    path("inbox/<str:agent_id>", views.InboxView.as_view()),
    path("claims", views.ClaimsView.as_view()),
    path("claims/refresh", views.ClaimRefreshView.as_view()),
    path("claims/release", views.ClaimReleaseView.as_view()),
    path("locks", views.LocksView.as_view()),
    path("locks/refresh", views.LockRefreshView.as_view()),
    path("locks/release", views.LockReleaseView.as_view()),
    path("tasks", views.TasksView.as_view()),
    path("tasks/<int:task_id>/complete", views.TaskCompleteView.as_view()),
    path("tasks/<int:task_id>/start", views.TaskStartView.as_view()),
    path("tasks/<int:task_id>/fail", views.TaskFailView.as_view()),
    path("network", views.NetworkView.as_view()),
    path("shutdown", views.ShutdownView.as_view()),
    path("shutdown/cancel", views.ShutdownCancelView.as_view()),
]
