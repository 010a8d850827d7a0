from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandParser

from coordination.client import ArcClient
from coordination.management.cli import AgentCommand


class Command(AgentCommand):
    help = (
        "Long-poll a running hub as --agent for messages newer than --since-id (broadcasts and direct messages "
        "to the agent, its own posts excluded unless --include-self) and print each as one JSON line. "
        "Prints nothing if none arrive within --timeout seconds."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--channel", help="only messages in this channel")
        parser.add_argument("--thread-id", metavar="ID", help="only messages in this thread")
        parser.add_argument("--timeout", type=float, default=30.0, metavar="SEC", help="seconds to wait (default 30)")
        parser.add_argument("--since-id", type=int, default=0, metavar="ID", help="only messages with a larger id")
        parser.add_argument("--include-self", action="store_true", help="also return the agent's own posts")

    def run(self, client: ArcClient, options: dict[str, Any]) -> None:
        client.since_id = options["since_id"]
        messages = client.poll(
            exclude_self=not options["include_self"],
            timeout=options["timeout"],
            channel=options["channel"],
            thread_id=options["thread_id"],
        )
        for message in messages:
            self.stdout.write(json.dumps(message))
