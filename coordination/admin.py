"""Django admin for the hub's data. Keys are minted and revoked through the services, never edited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from coordination import services
from coordination.errors import ArcError
from coordination.models import AgentKey, Claim, Delivery, Lock, Message, Room, Session, Task


class KeyMintForm(forms.ModelForm):
    expires = forms.ChoiceField(choices=[(c, c) for c in AgentKey.EXPIRY_CHOICES], initial="24h")
    room_names = forms.CharField(required=False, help_text="comma-separated rooms; empty means every room")

    class Meta:
        model = AgentKey
        fields = ("agent_id", "is_admin", "label")

    def room_list(self) -> list[str]:
        return [r for r in (self.cleaned_data.get("room_names") or "").split(",") if r.strip()]

    def clean(self) -> dict[str, Any] | None:
        """Refuse what the mint would refuse (unknown rooms...) as a form error, before anything is saved."""
        data = super().clean()
        if not self.errors:
            try:
                services.key_check(
                    agent_id=self.cleaned_data.get("agent_id") or "",
                    rooms=self.room_list(),
                    expires=self.cleaned_data.get("expires") or "",
                )
            except ArcError as exc:
                raise forms.ValidationError(exc.message) from exc
        return data


@admin.register(AgentKey)
class AgentKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "agent_id", "rooms", "is_admin", "expires_at", "last_used_at", "revoked_at", "label")
    list_filter = ("is_admin", "revoked_at")
    search_fields = ("agent_id", "prefix", "label")
    readonly_fields = (
        "prefix",
        "agent_id",
        "rooms",
        "is_admin",
        "label",
        "created_by",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )
    exclude = ("digest",)
    actions = ["revoke_keys"]

    def get_form(self, request: HttpRequest, obj: AgentKey | None = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = KeyMintForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: AgentKey | None = None) -> Any:
        return self.readonly_fields if obj is not None else ()

    def get_fields(self, request: HttpRequest, obj: AgentKey | None = None) -> Any:
        if obj is None:
            return ("agent_id", "room_names", "expires", "is_admin", "label")
        return self.readonly_fields

    def save_model(self, request: HttpRequest, obj: AgentKey, form: Any, change: bool) -> None:
        """Mint through the service (only the hash is stored); show the key this once."""
        if change:
            return  # keys are immutable: revoke and mint a new one
        data = form.cleaned_data
        try:
            key, plaintext = services.key_mint(
                agent_id=data["agent_id"],
                rooms=form.room_list(),
                expires=data["expires"],
                admin=data["is_admin"],
                label=data.get("label") or "",
                created_by=f"admin:{request.user.get_username()}",
            )
        except ArcError as exc:
            raise forms.ValidationError(exc.message) from exc
        obj.pk = key.pk
        messages.warning(request, f"Key for {key.agent_id} (shown once, copy it now): {plaintext}")

    @admin.action(description="Revoke selected keys (at once: their streams close)")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[AgentKey]) -> None:
        for key in queryset:
            services.key_revoke(key_id=key.prefix)
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ("name", "created_by", "created_at", "closed_at", "closed_by")
    search_fields = ("name",)
    # Closed through the actions (the services), so waiting agents are told; never by editing the fields.
    readonly_fields = ("closed_at", "closed_by")
    actions = ["close_rooms", "reopen_rooms"]

    @admin.action(description="Close selected rooms (posts get 409; waiting agents are told)")
    def close_rooms(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        self._apply(request, queryset, services.room_close, "Closed")

    @admin.action(description="Reopen selected rooms")
    def reopen_rooms(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        self._apply(request, queryset, services.room_reopen, "Reopened")

    def _apply(
        self, request: HttpRequest, queryset: QuerySet[Room], change: Callable[..., tuple[Room, bool]], done: str
    ) -> None:
        changed, refused = [], []
        for room in queryset:
            try:
                if change(name=room.name, actor=request.user.get_username())[1]:
                    changed.append(room.name)
            except ArcError as exc:
                refused.append(exc.message)
        self.message_user(request, f"{done} {len(changed)} room(s): {', '.join(changed) or 'none changed'}.")
        for reason in refused:
            self.message_user(request, reason, messages.ERROR)


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = ("agent_id", "display_name", "active", "last_seen", "created_at")
    list_filter = ("active",)
    search_fields = ("agent_id", "display_name")


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "ts", "from_agent", "to_agent", "channel", "kind", "short_body")
    list_filter = ("kind", "channel", "priority")
    search_fields = ("body", "from_agent", "to_agent", "thread_id")
    date_hierarchy = "ts"

    @admin.display(description="body")
    def short_body(self, obj: Message) -> str:
        return obj.body[:80]


@admin.register(Claim)
class ClaimAdmin(admin.ModelAdmin):
    list_display = ("claim_key", "owner_agent_id", "thread_id", "expires_at", "released_at")
    search_fields = ("claim_key", "owner_agent_id", "thread_id")


@admin.register(Lock)
class LockAdmin(admin.ModelAdmin):
    list_display = ("file_path", "agent_id", "expires_at", "released_at")
    search_fields = ("file_path", "agent_id")


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("task_id", "status", "requester", "assignee", "channel", "thread_id", "deadline")
    list_filter = ("status",)
    search_fields = ("requester", "assignee", "thread_id")


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("message", "agent_id", "state", "attempts", "max_attempts", "leased_until", "last_error")
    list_filter = ("state",)
    search_fields = ("agent_id",)
    actions = ["retry_dead_letters"]

    @admin.action(description="Retry selected dead letters (queued again with fresh attempts)")
    def retry_dead_letters(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        retried = 0
        for agent_id, message_id in queryset.values_list("agent_id", "message_id"):
            retried += services.deliveries_retry(message_ids=[message_id], agent_id=agent_id)
        self.message_user(request, f"Queued {retried} dead letter(s) again.", messages.SUCCESS)
