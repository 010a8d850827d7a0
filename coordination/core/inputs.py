"""Input shapes: what each request, frame and tool call may carry, as DRF serializers, for every door.

They check types and bounds only (strings are strings, integers are integers and
within the bounds the services export, objects are objects), in Arc's lenient way:
``null`` means absent, numbers are accepted where a string id is expected. Domain
rules (kinds, sizes, existence, states) live in ``coordination.core.services`` so
every door shares them. REST bodies, WebSocket frames and MCP arguments are parsed
by these same shapes (through ``coordination.core.operations``); docs/protocol.md
lists them.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from rest_framework import serializers

from coordination.core import hub
from coordination.core.errors import Invalid
from coordination.core.parsing import MAX_ID, reject_nul
from coordination.core.services import (
    MAX_DELIVERY_ATTEMPTS,
    MAX_LEASE_BATCH,
    MAX_LEASE_SEC,
    MAX_TTL_SEC,
    MIN_TTL_SEC,
)
from coordination.core.services.asking import MAX_ASK_REPLIES, MAX_ASK_TIMEOUT_SEC


class Text(serializers.CharField):
    """A string field where ``null`` counts as absent (Arc) and blank is allowed unless required."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", not kwargs["required"])
        kwargs.setdefault("allow_blank", not kwargs["required"])
        kwargs.setdefault("max_length", 1000)
        super().__init__(**kwargs)


class Object(serializers.JSONField):
    """A JSON object (``dict``); ``null`` means ``{}``."""

    default_error_messages: ClassVar[dict[str, Any]] = {"not_object": "must be a JSON object"}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            self.fail("not_object")
        return data


class Ttl(serializers.IntegerField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("min_value", MIN_TTL_SEC)
        kwargs.setdefault("max_value", MAX_TTL_SEC)
        super().__init__(**kwargs)


class Id(serializers.IntegerField):
    """A message or task id: an integer the database can store (signed 64-bit), or ``null``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("min_value", -MAX_ID - 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(**kwargs)


class ArcSerializer(serializers.Serializer[Any]):
    """Serializer whose ``parse`` returns validated data without ``None`` values or raises ``Invalid``."""

    _prototype: ClassVar[ArcSerializer | None] = None

    @classmethod
    def parse(cls, data: dict[str, Any]) -> dict[str, Any]:
        reject_nul(data, "the request")  # every door's input passes here (REST bodies were checked already)
        serializer = cls._fresh(data)
        if not serializer.is_valid():
            raise Invalid(first_error(serializer.errors))
        return {key: value for key, value in serializer.validated_data.items() if value is not None}

    @classmethod
    def _fresh(cls, data: dict[str, Any]) -> ArcSerializer:
        """A serializer for ``data`` sharing one bound field set per class.

        DRF deep-copies every declared field for each new serializer (a fifth of a
        ``POST /v1/messages`` here). Input fields keep no per-request state while
        validating, so a shallow copy of a prototype whose fields are already bound
        validates the same way without that copy.
        """
        prototype = cls.__dict__.get("_prototype")
        if prototype is None:
            prototype = cls()
            _ = prototype.fields  # bind once
            cls._prototype = prototype
        serializer = copy.copy(prototype)
        serializer.initial_data = data
        return serializer


def first_error(errors: Any, prefix: str = "") -> str:
    """A DRF error tree as one line: ``field: message``."""
    if isinstance(errors, dict):
        for key, value in errors.items():
            name = key if key != "non_field_errors" else ""
            return first_error(value, f"{prefix}.{name}" if prefix and name else (name or prefix))
    if isinstance(errors, list) and errors:
        if all(isinstance(item, str) for item in errors):
            message = str(errors[0])
            return f"{prefix}: {message}" if prefix else message
        for index, item in enumerate(errors):
            if item:
                return first_error(item, f"{prefix}[{index}]")
    return f"{prefix}: invalid" if prefix else "invalid request"


class SessionCreate(ArcSerializer):
    agent_id = Text(required=True, max_length=200)
    display_name = Text(max_length=200)
    capabilities = serializers.ListField(
        child=Text(required=True, max_length=200), required=False, allow_null=True, max_length=100
    )
    metadata = Object()
    replace = serializers.BooleanField(required=False, allow_null=True)


class ChannelCreate(ArcSerializer):
    name = Text(required=True, max_length=200)
    created_by = Text(max_length=200)
    metadata = Object()


class MessagePost(ArcSerializer):
    from_agent = Text(required=True, max_length=200)
    to_agent = Text(max_length=200)
    channel = Text(max_length=200)
    kind = Text(max_length=32)
    body = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False)
    attachments = serializers.ListField(child=serializers.JSONField(), required=False, allow_null=True)
    reply_to = Id()
    thread_id = Text(max_length=200, trim_whitespace=False)  # Arc keeps thread ids verbatim
    metadata = Object()
    parent_task_id = Id()
    priority = Text(max_length=16)
    ttl_sec = Ttl(min_value=1)
    expects_reply = Text(max_length=200)
    to_capability = Text(max_length=200)
    max_attempts = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_DELIVERY_ATTEMPTS
    )


class Ask(ArcSerializer):
    from_agent = Text(required=True, max_length=200)
    body = serializers.CharField(required=True, allow_blank=False, trim_whitespace=False)
    channel = Text(max_length=200)
    to_capability = Text(max_length=200)
    max_replies = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_ASK_REPLIES)
    timeout = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=MAX_ASK_TIMEOUT_SEC)
    thread_id = Text(max_length=200, trim_whitespace=False)
    metadata = Object()
    expects_reply = Text(max_length=200)


class InboxLease(ArcSerializer):
    max = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_LEASE_BATCH)
    lease_sec = serializers.IntegerField(
        required=False, allow_null=True, min_value=MIN_TTL_SEC, max_value=MAX_LEASE_SEC
    )


class MessageIds(serializers.ListField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("child", Id(required=True, allow_null=False))
        kwargs.setdefault("min_length", 1)
        kwargs.setdefault("max_length", 1000)
        super().__init__(**kwargs)


class DeliveryAck(ArcSerializer):
    agent_id = Text(required=True, max_length=200)
    message_ids = MessageIds()


class DeliveryNack(ArcSerializer):
    agent_id = Text(required=True, max_length=200)
    message_id = Id(required=True, allow_null=False)
    reason = Text(max_length=2000)
    delay_sec = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_LEASE_SEC)


class DeliveryRetry(ArcSerializer):
    agent_id = Text(max_length=200)
    message_ids = MessageIds()


class TaskFail(ArcSerializer):
    reason = Text(max_length=2000)


class PushConfigSet(ArcSerializer):
    """An A2A client's webhook for its task (docs/a2a.md, push notifications)."""

    from_agent = Text(required=True, max_length=200)
    config_id = Text(max_length=200)
    url = Text(required=True, max_length=2000)
    token = Text(max_length=500)
    auth_scheme = Text(max_length=100)
    auth_credentials = Text(max_length=4000)


class ReplyClaim(ArcSerializer):
    agent_id = Text(required=True, max_length=200)


class ClaimAcquire(ArcSerializer):
    owner_agent_id = Text(required=True, max_length=200)
    claim_key = Text(max_length=300)
    task_message_id = Id()
    thread_id = Text(max_length=200)  # Arc strips claim fields (its _validate), but not message fields
    ttl_sec = Ttl()
    metadata = Object()


class ClaimRefresh(ArcSerializer):
    claim_key = Text(required=True, max_length=300)
    owner_agent_id = Text(required=True, max_length=200)
    ttl_sec = Ttl()


class ClaimRelease(ArcSerializer):
    claim_key = Text(required=True, max_length=300)
    agent_id = Text(required=True, max_length=200)


class LockAcquire(ArcSerializer):
    agent_id = Text(required=True, max_length=200)
    file_path = Text(required=True, max_length=1000)
    ttl_sec = Ttl()
    metadata = Object()


class LockRefresh(ArcSerializer):
    agent_id = Text(required=True, max_length=200)
    file_path = Text(required=True, max_length=1000)
    ttl_sec = Ttl()


class LockRelease(ArcSerializer):
    agent_id = Text(required=True, max_length=200)
    file_path = Text(required=True, max_length=1000)


class NetworkToggle(ArcSerializer):
    allow_remote = serializers.BooleanField(required=False, allow_null=True)


class ShutdownStart(ArcSerializer):
    delay_sec = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=hub.MAX_SHUTDOWN_DELAY_SEC
    )


# ── WebSocket frames (docs/websocket.md), beyond the shapes above they share ──

EVENT_TYPES = frozenset({"claim", "lock", "task", "presence", "delivery", "room"})


class Register(ArcSerializer):
    agent_id = Text(max_length=200)  # required, unless a key says who the socket is (then filled in)
    display_name = Text(max_length=200)
    description = Text(max_length=2000)
    capabilities = serializers.ListField(
        child=Text(required=True, max_length=200), required=False, allow_null=True, max_length=100
    )
    metadata = Object()
    since_id = Id(min_value=0)
    key = Text(max_length=300)  # an agent key, when the upgrade carried none (docs/access.md)


class Discover(ArcSerializer):
    capability = Text(max_length=200)


class Delegate(ArcSerializer):
    """A task for an agent, named (``to_agent``) or picked by capability (``to_capability``)."""

    from_agent = Text(required=True, max_length=200)
    to_agent = Text(max_length=200, allow_blank=False)
    to_capability = Text(max_length=200, allow_blank=False)
    body = serializers.CharField(required=True, trim_whitespace=False)
    payload = serializers.JSONField(required=False, allow_null=True)
    ttl_sec = Ttl(min_value=1)
    channel = Text(max_length=200, allow_blank=False)
    thread_id = Text(max_length=200, trim_whitespace=False)


class TaskAnswer(ArcSerializer):
    """The answer to a task: a ``task_result`` to its requester that finishes it (failed unless ``success``)."""

    from_agent = Text(required=True, max_length=200)
    success = serializers.BooleanField(required=False, allow_null=True)
    body = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False)
    payload = serializers.JSONField(required=False, allow_null=True)


class Result(TaskAnswer):
    """A ``result`` frame: the answer to the task ``task_id``."""

    task_id = Id(required=True, allow_null=False)


class Status(ArcSerializer):
    task_id = Id()


class Broadcast(ArcSerializer):
    body = serializers.CharField(required=True, trim_whitespace=False)


class Subscribe(ArcSerializer):
    channels = serializers.ListField(
        child=Text(required=True, max_length=200), required=False, allow_null=True, max_length=100
    )
    since_id = Id(min_value=0)
    types = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(EVENT_TYPES | {"message"})),
        required=False,
        allow_null=True,
        max_length=10,
    )
    exclude_self = serializers.BooleanField(required=False, allow_null=True)


class Empty(ArcSerializer):
    """Nothing but what the door itself reads (``deregister`` and ``heartbeat`` frames)."""


class HookEvent(ArcSerializer):
    """A coding agent client's hook input (Claude Code's shape; Codex sends the same fields).

    Only what the hub reads is declared; the client's other fields (the prompt, the
    transcript path, the model) pass unread.
    """

    hook_event_name = Text(required=True, max_length=100)
    session_id = Text(max_length=200)
    stop_hook_active = serializers.BooleanField(required=False, allow_null=True)
    tool_name = Text(max_length=200)
    tool_input = Object()
    cwd = Text(max_length=4096)
    # Added by ``manage.py hook`` from git: the working tree's top level, and the repository's name
    # (its origin URL, else its common git directory): what every worktree of it shares.
    repo_root = Text(max_length=4096)
    repo = Text(max_length=1000)
