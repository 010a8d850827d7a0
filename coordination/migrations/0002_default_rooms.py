"""Arc's default rooms, ``general`` and ``direct``, exist from the first migration on."""

from __future__ import annotations

from typing import Any

from django.db import migrations
from django.utils import timezone


def create_default_rooms(apps: Any, schema_editor: Any) -> None:
    Room = apps.get_model("coordination", "Room")
    for name in ("general", "direct"):
        Room.objects.get_or_create(name=name, defaults={"created_by": "system", "created_at": timezone.now()})


class Migration(migrations.Migration):
    dependencies = [("coordination", "0001_initial")]
    operations = [migrations.RunPython(create_default_rooms, migrations.RunPython.noop)]
