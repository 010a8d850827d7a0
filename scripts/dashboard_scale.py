#!/usr/bin/env python3
"""The dashboard's pages at scale: server time and queries per page (docs/dashboard.md).

    .venv/bin/python scripts/dashboard_scale.py [--agents 200] [--messages 10000] [--tasks 2000] [--runs 15]
                                                [--database-url postgres://...]

Fills a throwaway hub (SQLite in a temporary directory, or a fresh PostgreSQL database named by
``--database-url``, which is flushed first) through the services: the agents registered, the messages
posted among them (a third direct, the rest in ten rooms, over the last hour), the tasks delegated
(a third left open, a third done, the rest failed, some overdue). Then renders every page and live
region in process with Django's test client as a signed-in operator, ``--runs`` times each after one
warm-up, and prints the median and the slowest server time and the queries of each (a markdown table,
then JSON). Nothing here is a test: it is a measurement, run by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGES = [
    "/",
    "/?partial=activity",
    "/?partial=agents",
    "/work",
    "/work?partial=work",
    "/work?page=5",
    "/map",
    "/map?window=day",
    "/stats",
    "/stats?window=day",
    "/agents/agent-7",
    "/rooms/room-3",
    "/deliveries",
    "/keys",
    "/waiting",
    "/search?q=deploy",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--database-url", help="a PostgreSQL database to fill (flushed first); default: SQLite")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="arc-dashboard-scale-")
    os.environ["ARC_HOME"] = home
    os.environ["DJANGO_SETTINGS_MODULE"] = "arcsite.settings"
    os.environ["ARC_PRESENCE_TTL_SEC"] = "7200"  # (every agent stays live while the pages are measured)
    if args.database_url:
        os.environ["ARC_DATABASE_URL"] = args.database_url
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0)
    if args.database_url:
        call_command("flush", interactive=False, verbosity=0)
        call_command("migrate", verbosity=0)
    started = time.monotonic()
    fill(args.agents, args.messages, args.tasks)
    print(f"filled in {time.monotonic() - started:.0f} s", file=sys.stderr)
    rows = measure(args.runs)
    from django.db import connection

    print(f"\n{args.agents} agents, {args.messages} messages, {args.tasks} tasks on {connection.vendor}; ")
    print(f"{args.runs} runs per page after a warm-up (server time in process, Django's test client)\n")
    print("| page | median ms | slowest ms | queries |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| `{row['page']}` | {row['median_ms']} | {row['max_ms']} | {row['queries']} |")
    print()
    print(json.dumps({"database": connection.vendor, "pages": rows}, indent=2))


def fill(agents: int, messages: int, tasks: int) -> None:
    from django.utils import timezone

    from coordination.core import services
    from coordination.core.models import Message, Task

    names = [f"agent-{i}" for i in range(agents)]
    for i, name in enumerate(names):
        services.session_create(agent_id=name, capabilities=["build" if i % 2 else "review", f"skill-{i % 7}"])
        if i % 10 == 0:
            services.key_mint(agent_id=name, label=f"key of {name}")
    rooms = [f"room-{i}" for i in range(10)]
    for room in rooms:
        services.room_create(name=room, created_by="agent-0")
    words = ["deploy", "review", "build", "release", "tests", "flaky", "docs", "api"]
    for n in range(messages):
        sender, other = names[n % agents], names[(n * 7 + 3) % agents]
        body = f"{words[n % len(words)]} note {n}: {words[(n // 3) % len(words)]} is next"
        if n % 3 == 0:
            services.message_post(from_agent=sender, to_agent=other, body=body)
        else:
            services.message_post(from_agent=sender, channel=rooms[n % len(rooms)], body=body)
    for n in range(tasks):
        sender, other = names[(n * 3) % agents], names[(n * 11 + 1) % agents]
        if other == sender:
            other = names[(n * 11 + 2) % agents]
        task = services.task_delegate(
            from_agent=sender, to_agent=other, body=f"Task {n}: {words[n % len(words)]} the thing\nmore words"
        )
        if n % 3 == 1:
            services.task_complete(task_id=task.id, actor=other)
        elif n % 3 == 2:
            services.task_fail(task_id=task.id, reason="could not", actor=other)
        elif n % 30 == 0:
            Task.objects.filter(pk=task.id).update(deadline=timezone.now() - timedelta(minutes=1))
    # Spread the messages over the last hour, as a busy hub's would be.
    now = timezone.now()
    total = Message.objects.count()
    for i, pk in enumerate(Message.objects.order_by("id").values_list("id", flat=True)):
        Message.objects.filter(pk=pk).update(ts=now - timedelta(seconds=3590 * (1 - i / max(1, total))))


def measure(runs: int) -> list[dict[str, object]]:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(User.objects.create_superuser("scale", "scale@example.com", "pw"))
    rows = []
    for path in PAGES:
        headers = {"HX-Request": "true"} if "partial=" in path else {}
        response = client.get(path, headers=headers)
        if response.status_code != 200:
            raise SystemExit(f"{path} answered {response.status_code}")
        times = []
        for _ in range(runs):
            with CaptureQueriesContext(connection) as seen:
                started = time.perf_counter()
                client.get(path, headers=headers)
                times.append(time.perf_counter() - started)
        rows.append(
            {
                "page": path,
                "median_ms": round(statistics.median(times) * 1000, 1),
                "max_ms": round(max(times) * 1000, 1),
                "queries": len(seen),
            }
        )
    return rows


if __name__ == "__main__":
    main()
