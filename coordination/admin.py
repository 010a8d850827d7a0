"""Django admin for the hub's data (docs/dashboard.md).

The admin reads freely but writes nothing itself: every change is an action (or, for
keys and rooms, the add form) that calls one function in ``coordination.core.services``,
so the rules, the notices to agents and the real-time events are never skipped.
Everything shown comes from agents and is left to Django's autoescaping: no
``mark_safe``/``format_html`` here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from coordination.core import access, services
from coordination.core.errors import ArcError
from coordination.core.models import (
    AgentKey,
    Claim,
    Delivery,
    LeaseQuerySet,
    Lock,
    Message,
    RemoteAgent,
    Room,
    Session,
    Task,
)
from coordination.core.parsing import as_id


class HubAdmin(admin.ModelAdmin):
    """The hub's one rule of who may do what, here as in the dashboard (``access.staff_admin``).

    Any active staff user reads; only a hub admin (a superuser, or a staff user with the
    ``operate_hub`` permission) changes anything: mints, revokes, closes, force-releases,
    retries, finishes tasks. Django's per-model permissions decide nothing here, so a staff
    user can do in the Django admin exactly what the dashboard lets them do.
    """

    def has_module_permission(self, request: HttpRequest) -> bool:
        return access.staff_member(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access.staff_member(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return access.staff_admin(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access.staff_admin(request.user)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ServiceOwnedAdmin(HubAdmin):
    """Rows only the services change: listed, searched and filtered here; changed only by actions.

    No add, edit or delete: a claim deleted by hand tells its holder nothing, an edited
    delivery skips its state machine, a deleted message breaks the feeds' id chain, and
    none of them would publish the event live clients wait for. The change page is a
    read-only view; a hub admin runs the actions (``has_operate_permission``).
    """

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return access.staff_admin(request.user)


def _apply_each(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    rows: Iterable[Model],
    change: Callable[[Any], bool],
    *,
    done: str,
    noun: str,
    label: Callable[[Any], str] = str,
) -> None:
    """Call ``change`` (one service call, True when it changed something) for each selected row.

    Says what changed in one line and each refusal (an ``ArcError``) in a line of its own,
    so one row the service refuses does not hide what happened to the others.
    """
    changed: list[str] = []
    for row in rows:
        try:
            if change(row):
                changed.append(label(row))
        except ArcError as exc:
            modeladmin.message_user(request, f"{label(row)}: {exc.message}", messages.ERROR)
    modeladmin.message_user(request, f"{done} {len(changed)} {noun}(s): {', '.join(changed) or 'none changed'}.")


def _id_named_by(search_term: str) -> int | None:
    """The id a search term names (``42`` or ``#42``), if it names one."""
    return as_id(search_term.strip().removeprefix("#"))


# ── Keys ──────────────────────────────────────────────────────────────────


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
class AgentKeyAdmin(HubAdmin):
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

    def has_delete_permission(self, request: HttpRequest, obj: AgentKey | None = None) -> bool:
        # A deleted key publishes no revocation, so its open streams would stay open: revoke instead.
        return False

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
        request.arc_minted = (key, plaintext)  # type: ignore[attr-defined]  # for response_add, this request only

    def response_add(self, request: HttpRequest, obj: AgentKey, post_url_continue: str | None = None) -> Any:
        """The new key's secret on this one page (never in a message, which travels in a cookie), uncached."""
        minted = getattr(request, "arc_minted", None)
        if minted is None:
            return super().response_add(request, obj, post_url_continue)
        key, plaintext = minted
        context = {**self.admin_site.each_context(request), "opts": self.opts, "key": key, "plaintext": plaintext}
        response = TemplateResponse(request, "admin/coordination/agentkey/minted.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected keys (at once: their streams close)", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[AgentKey]) -> None:
        revoked = already = 0
        for key in queryset.order_by("pk"):
            if key.revoked_at is not None:
                already += 1  # the service would keep the first revocation time anyway
                continue
            services.key_revoke(key_id=key.prefix)
            revoked += 1
        note = f" ({already} already revoked)" if already else ""
        self.message_user(request, f"Revoked {revoked} key(s).{note}", messages.SUCCESS)


# ── Rooms ─────────────────────────────────────────────────────────────────


@admin.register(Room)
class RoomAdmin(HubAdmin):
    list_display = ("name", "created_by", "created_at", "closed_at", "closed_by")
    list_filter = (("closed_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "created_by")
    actions = ["close_rooms", "reopen_rooms"]

    def get_fields(self, request: HttpRequest, obj: Room | None = None) -> Any:
        if obj is None:
            return ("name", "metadata")
        return ("name", "created_by", "created_at", "metadata", "closed_at", "closed_by")

    def get_readonly_fields(self, request: HttpRequest, obj: Room | None = None) -> Any:
        # Closed and reopened through the actions, so waiting agents are told; renamed never
        # (the name is the key messages refer to).
        return () if obj is None else self.get_fields(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Room | None = None) -> bool:
        # Rooms are never deleted (every process remembers the rooms it has seen): close instead.
        return False

    def save_model(self, request: HttpRequest, obj: Room, form: Any, change: bool) -> None:
        if change:
            return  # nothing on a room is edited by hand
        room, _ = services.room_create(
            name=obj.name, created_by=f"admin:{request.user.get_username()}", metadata=obj.metadata
        )
        obj.pk = room.pk

    @admin.action(description="Close selected rooms (posts get 409; waiting agents are told)", permissions=["change"])
    def close_rooms(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        actor = request.user.get_username()
        _apply_each(
            self,
            request,
            queryset,
            lambda room: services.room_close(name=room.name, actor=actor)[1],
            done="Closed",
            noun="room",
        )

    @admin.action(description="Reopen selected rooms", permissions=["change"])
    def reopen_rooms(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        actor = request.user.get_username()
        _apply_each(
            self,
            request,
            queryset,
            lambda room: services.room_reopen(name=room.name, actor=actor)[1],
            done="Reopened",
            noun="room",
        )


# ── Agents (sessions) and messages ────────────────────────────────────────


@admin.register(Session)
class SessionAdmin(ServiceOwnedAdmin):
    list_display = ("agent_id", "display_name", "capabilities", "active", "last_seen", "created_at", "session_id")
    list_filter = ("active",)
    # capabilities is a JSON list: icontains matches within its text, which is what a search box wants.
    search_fields = ("agent_id", "display_name", "capabilities", "=session_id")
    ordering = ("-last_seen",)
    actions = ["close_sessions"]

    @admin.action(description="Close selected sessions (the agent goes offline)", permissions=["operate"])
    def close_sessions(self, request: HttpRequest, queryset: QuerySet[Session]) -> None:
        _apply_each(
            self,
            request,
            queryset.order_by("agent_id"),
            lambda session: bool(services.session_close(session_id=session.session_id)),
            done="Closed",
            noun="session",
            label=lambda session: session.agent_id,
        )


class AudienceFilter(admin.SimpleListFilter):
    title = "audience"
    parameter_name = "audience"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("direct", "direct (to one agent)"), ("broadcast", "broadcast (to a room)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        if self.value() in ("direct", "broadcast"):
            return queryset.filter(to_agent__isnull=self.value() == "broadcast")
        return None


class ExpectsReplyFilter(admin.SimpleListFilter):
    title = "expects reply"
    parameter_name = "expects_reply"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("none", "none"), ("anyone", "from anyone"), ("agent", "from a named agent")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        if self.value() in ("none", "anyone"):
            return queryset.filter(expects_reply=self.value())
        if self.value() == "agent":
            return queryset.exclude(expects_reply__in=("none", "anyone"))
        return None


@admin.register(Message)
class MessageAdmin(ServiceOwnedAdmin):
    """Messages are history: read here, posted only through the services (REST, MCP, dashboard)."""

    list_display = ("id", "ts", "from_agent", "to_agent", "channel", "kind", "priority", "short_body")
    list_filter = ("kind", AudienceFilter, "priority", ExpectsReplyFilter, "channel")
    search_fields = ("body", "from_agent", "to_agent", "thread_id")
    search_help_text = "Body, sender, recipient or thread; a number also finds the message with that id."
    date_hierarchy = "ts"
    ordering = ("-id",)

    @admin.display(description="body")
    def short_body(self, obj: Message) -> str:
        return obj.body[:80]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Message], search_term: str
    ) -> tuple[QuerySet[Message], bool]:
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        message_id = _id_named_by(search_term)
        if message_id is not None:
            found |= queryset.filter(pk=message_id)
        return found, may_have_duplicates


# ── Claims and locks ──────────────────────────────────────────────────────


class LeaseStateFilter(admin.SimpleListFilter):
    """Active (held now), expired (ran out, never released) or released — as ``LeaseQuerySet.active``."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "active"), ("expired", "expired"), ("released", "released")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        now = timezone.now()
        assert isinstance(queryset, LeaseQuerySet)
        if self.value() == "active":
            return queryset.active(now)
        if self.value() == "expired":
            return queryset.lapsed(now)
        if self.value() == "released":
            return queryset.filter(released_at__isnull=False)
        return None


@admin.register(Claim)
class ClaimAdmin(ServiceOwnedAdmin):
    list_display = (
        "claim_key",
        "owner_agent_id",
        "state",
        "thread_id",
        "task_message_id",
        "claimed_at",
        "expires_at",
        "released_at",
    )
    list_filter = (LeaseStateFilter,)
    search_fields = ("claim_key", "owner_agent_id", "thread_id")
    ordering = ("-claimed_at",)
    actions = ["force_release"]

    @admin.display(description="state")
    def state(self, obj: Claim) -> str:
        return obj.state

    @admin.action(description="Force-release selected claims (the holder is told)", permissions=["operate"])
    def force_release(self, request: HttpRequest, queryset: QuerySet[Claim]) -> None:
        actor = request.user.get_username()
        _apply_each(
            self,
            request,
            queryset.order_by("pk"),
            lambda claim: bool(services.claim_force_release(claim_key=claim.claim_key, actor=actor)),
            done="Released",
            noun="claim",
        )


@admin.register(Lock)
class LockAdmin(ServiceOwnedAdmin):
    list_display = ("file_path", "agent_id", "state", "locked_at", "expires_at", "released_at")
    list_filter = (LeaseStateFilter,)
    search_fields = ("file_path", "agent_id")
    ordering = ("-locked_at",)
    actions = ["force_release"]

    @admin.display(description="state")
    def state(self, obj: Lock) -> str:
        return obj.state

    @admin.action(description="Force-release selected locks (the holder is told)", permissions=["operate"])
    def force_release(self, request: HttpRequest, queryset: QuerySet[Lock]) -> None:
        actor = request.user.get_username()
        _apply_each(
            self,
            request,
            queryset.order_by("pk"),
            lambda lock: bool(services.lock_force_release(file_path=lock.file_path, actor=actor)),
            done="Released",
            noun="lock",
        )


# ── Tasks and deliveries ──────────────────────────────────────────────────


@admin.register(Task)
class TaskAdmin(ServiceOwnedAdmin):
    list_display = ("task_id", "status", "requester", "assignee", "channel", "thread_id", "created_at", "deadline")
    list_filter = ("status", "channel")
    search_fields = ("requester", "assignee", "thread_id")
    search_help_text = "Requester, assignee or thread; a number also finds the task with that id."
    ordering = ("-task_id",)
    actions = ["complete_tasks", "fail_tasks"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Task], search_term: str
    ) -> tuple[QuerySet[Task], bool]:
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        task_id = _id_named_by(search_term)
        if task_id is not None:
            found |= queryset.filter(pk=task_id)
        return found, may_have_duplicates

    @admin.action(description="Mark selected tasks done (parents roll up)", permissions=["operate"])
    def complete_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        # task_complete is a no-op on a done task, so those are not counted; failed ones it refuses.
        _apply_each(
            self,
            request,
            queryset.order_by("pk"),
            lambda task: task.status != Task.Status.DONE and bool(services.task_complete(task_id=task.task_id)),
            done="Completed",
            noun="task",
            label=lambda task: str(task.task_id),
        )

    @admin.action(description="Mark selected tasks failed", permissions=["operate"])
    def fail_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        reason = f"failed by {request.user.get_username()} in the admin"
        _apply_each(
            self,
            request,
            queryset.order_by("pk"),
            lambda task: bool(services.task_fail(task_id=task.task_id, reason=reason)),
            done="Failed",
            noun="task",
            label=lambda task: str(task.task_id),
        )


@admin.register(Delivery)
class DeliveryAdmin(ServiceOwnedAdmin):
    list_display = (
        "message",
        "agent_id",
        "state",
        "priority",
        "attempts",
        "max_attempts",
        "leased_until",
        "last_error",
    )
    list_filter = ("state",)
    list_select_related = ("message",)
    search_fields = ("agent_id",)
    search_help_text = "Recipient; a number also finds the deliveries of the message with that id."
    ordering = ("-message_id", "agent_id")
    actions = ["retry_dead_letters"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Delivery], search_term: str
    ) -> tuple[QuerySet[Delivery], bool]:
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        message_id = _id_named_by(search_term)
        if message_id is not None:
            found |= queryset.filter(message_id=message_id)
        return found, may_have_duplicates

    @admin.action(description="Retry selected dead letters (queued again with fresh attempts)", permissions=["operate"])
    def retry_dead_letters(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        retried = 0
        for agent_id, message_id in queryset.values_list("agent_id", "message_id"):
            retried += services.deliveries_retry(message_ids=[message_id], agent_id=agent_id)
        self.message_user(request, f"Queued {retried} dead letter(s) again.", messages.SUCCESS)


# ── A2A agents elsewhere ──────────────────────────────────────────────────


@admin.register(RemoteAgent)
class RemoteAgentAdmin(ServiceOwnedAdmin):
    """Registered with ``manage.py a2a add`` (their cards are fetched there); listed here, never their credential."""

    list_display = ("agent_id", "card_url", "live", "checked_at", "registered_by")
    search_fields = ("agent_id", "card_url")
    ordering = ("agent_id",)
    fields = ("agent_id", "card_url", "capabilities", "card", "registered_by", "created_at", "checked_at", "problem")
    readonly_fields = fields
    actions = ["remove"]

    @admin.display(description="live", boolean=True)
    def live(self, obj: RemoteAgent) -> bool:
        return not obj.problem

    @admin.action(description="Remove selected A2A agents (their unfinished tasks fail)", permissions=["operate"])
    def remove(self, request: HttpRequest, queryset: QuerySet[RemoteAgent]) -> None:
        _apply_each(
            self,
            request,
            queryset.order_by("agent_id"),
            lambda remote: bool(services.remote_remove(agent_id=remote.agent_id)),
            done="Removed",
            noun="A2A agent",
        )
