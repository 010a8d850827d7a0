"""The hub's storage made ready for use: its schema migrated and its default rooms there."""

from __future__ import annotations

from django.core.management import call_command

from coordination.core import services


def storage_ready() -> None:
    """Apply pending migrations (quietly) and ensure the default rooms; cheap when nothing is pending.

    Run by ``up`` and by every command that reads or writes the hub's database, so that a command
    run before the hub ever started (``invite``, ``keys``) works instead of failing on a missing table.
    """
    call_command("migrate", interactive=False, verbosity=0)
    services.rooms_ensure_defaults()
