from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandParser

from coordination.client import ArcClient
from coordination.core.models import Message
from coordination.management.cli import AgentCommand


class Command(AgentCommand):
    help = (
        "Post a message to a running hub as --agent (to --channel, default general; a direct message with --to) "
        "and print the stored message as JSON."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--channel", help="channel to post to (default general; direct with --to)")
        parser.add_argument("--to", metavar="AGENT", help="send as a direct message to this agent")
        parser.add_argument(
            "--kind", default="chat", choices=sorted(Message.Kind.values), help="message kind (default chat)"
        )
        parser.add_argument("--thread-id", metavar="ID", help="thread to post in")
        parser.add_argument("body", help="message text")

    def run(self, client: ArcClient, options: dict[str, Any]) -> None:
        fields = {"kind": options["kind"], "thread_id": options["thread_id"]}
        if options["to"]:
            channel = options["channel"] or "direct"
            message = client.dm(options["to"], options["body"], channel=channel, **fields)
        else:
            message = client.post(options["channel"] or "general", options["body"], **fields)
        self.stdout.write(json.dumps(message, indent=2))
