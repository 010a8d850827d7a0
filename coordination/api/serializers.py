"""Input shapes of the write endpoints, as DRF serializers.

They check types only (strings are strings, integers are integers, objects are
objects), in Arc's lenient way: ``null`` means absent, numbers are accepted
where a string id is expected. Domain rules (kinds, sizes, existence, states)
live in ``coordination.services`` so every entry point shares them.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from rest_framework import serializers

from coordination.errors import Invalid


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
        kwargs.setdefault("min_value", 5)
        kwargs.setdefault("max_value", 10 * 365 * 24 * 3600)
        super().__init__(**kwargs)


class Id(serializers.IntegerField):
    """A message or task id: an integer the database can store (signed 64-bit), or ``null``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("min_value", -(2**63))
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(**kwargs)


class ArcSerializer(serializers.Serializer[Any]):
    """Serializer whose ``parse`` returns validated data without ``None`` values or raises ``Invalid``."""

    _prototype: ClassVar[ArcSerializer | None] = None

    @classmethod
    def parse(cls, data: dict[str, Any]) -> dict[str, Any]:
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
    ttl_sec = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=10 * 365 * 24 * 3600)
    expects_reply = Text(max_length=200)
    to_capability = Text(max_length=200)
    max_attempts = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=100)


class Ask(ArcSerializer):
    from_agent = Text(required=True, max_length=200)
    body = serializers.CharField(required=True, allow_blank=False, trim_whitespace=False)
    channel = Text(max_length=200)
    to_capability = Text(max_length=200)
    max_replies = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=100)
    timeout = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=300)
    thread_id = Text(max_length=200, trim_whitespace=False)
    metadata = Object()
    expects_reply = Text(max_length=200)


class InboxLease(ArcSerializer):
    max = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=100)
    lease_sec = serializers.IntegerField(required=False, allow_null=True, min_value=5, max_value=3600)


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
    delay_sec = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=3600)


class DeliveryRetry(ArcSerializer):
    agent_id = Text(max_length=200)
    message_ids = MessageIds()


class TaskFail(ArcSerializer):
    reason = Text(max_length=2000)


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
    delay_sec = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=3600)
