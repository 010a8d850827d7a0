"""The hub's storage made ready for use: its schema migrated and its default rooms there."""

from __future__ import annotations

import importlib.util
import pkgutil

from django.apps import apps
from django.core.management import call_command
from django.db import DatabaseError, connection

from coordination.core import services


def storage_ready() -> None:
    """Apply pending migrations (quietly) and ensure the default rooms; cheap when nothing is pending.

    Run by ``up`` and by every command that reads or writes the hub's database, so that a command
    run before the hub ever started (``invite``, ``keys``) works instead of failing on a missing table.
    """
    if not migrations_pending():
        services.rooms_ensure_defaults()
        return
    call_command("migrate", interactive=False, verbosity=0)
    services.rooms_ensure_defaults()


def migrations_pending() -> bool:
    """Is any migration on disk not yet applied to this storage? One query and a directory listing.

    ``migrate`` answers the same question by importing every migration and building their graph,
    about a second on every start and every command; this reads the names instead. Any doubt (no
    ``django_migrations`` table, a name not recorded) answers True, and ``migrate`` decides.
    """
    on_disk: set[tuple[str, str]] = set()
    for config in apps.get_app_configs():
        spec = importlib.util.find_spec(f"{config.name}.migrations")
        if spec is None or not spec.submodule_search_locations:
            continue
        for module in pkgutil.iter_modules(spec.submodule_search_locations):
            if not module.name.startswith(("_", "~")):  # what Django's MigrationLoader skips
                on_disk.add((config.label, module.name))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT app, name FROM django_migrations")
            applied = {(app, name) for app, name in cursor.fetchall()}
    except DatabaseError:
        return True
    return not on_disk <= applied
