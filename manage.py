#!/usr/bin/env python3
"""Django's command-line utility for the Arc hub (``python manage.py up`` starts it).

The hub's location flags (``--home``, ``--storage``, ``--database-url``,
``--redis-url``, ``--spool-dir``, ``--host``, ``--port``, ``--allow-remote``) decide
which database Django opens, so they are read here, before settings load, and
passed on as the matching ``ARC_*`` environment variables. Each command still
declares them, so ``--help`` lists them.
"""

from __future__ import annotations

import os
import sys

# flag → environment variable it sets (flags taking a value)
LOCATION_FLAGS = {
    "--home": "ARC_HOME",
    "--storage": "ARC_STORAGE",
    "--database-url": "ARC_DATABASE_URL",
    "--redis-url": "ARC_REDIS_URL",
    "--spool-dir": "ARC_SPOOL_DIR",
    "--host": "ARC_HOST",
    "--port": "ARC_PORT",
}


def apply_location_flags(argv: list[str]) -> None:
    """Copy hub location flags from ``argv`` into ``os.environ`` (``--flag value`` or ``--flag=value``)."""
    for index, arg in enumerate(argv):
        name, sep, inline = arg.partition("=")
        if name == "--allow-remote" and not sep:
            os.environ["ARC_ALLOW_REMOTE"] = "1"
        elif name in LOCATION_FLAGS:
            value = inline if sep else (argv[index + 1] if index + 1 < len(argv) else None)
            if value is not None and not value.startswith("--"):
                os.environ[LOCATION_FLAGS[name]] = value


# Commands that talk to a running hub and keep no hub state of their own: they must not create its
# data directory, secret key or database wherever they happen to run (`mcp --local` is the hub's own).
CLIENT_COMMANDS = {"post", "poll", "whoami", "bench", "smoke", "relay", "mcp"}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arcsite.settings")
    apply_location_flags(sys.argv[2:])
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command in CLIENT_COMMANDS and "--local" not in sys.argv[2:]:
        os.environ.setdefault("ARC_CLIENT_ONLY", "1")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
