from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from coordination import discovery
from coordination.client import ArcClient, ArcError
from coordination.management.cli import add_location_arguments

# Arc's message kinds, as its CLI offers them.
KINDS = (
    "artifact",
    "chat",
    "claim",
    "code_review",
    "notice",
    "release",
    "status_update",
    "task",
    "task_request",
    "task_result",
)


class AgentCommand(BaseCommand):
    """Arc's agent CLI (``post``, ``poll``, ``whoami``): talk to a running hub over HTTP as ``--agent``.

    Each run registers the agent with ``replace=True`` first, as ``arc.py`` does.
    """

    requires_system_checks: list[str] = []  # a hub client: it never opens the database itself

    def add_arguments(self, parser: CommandParser) -> None:
        add_location_arguments(parser)
        parser.add_argument("--agent", required=True, help="your agent id (registered with replace=True)")
        parser.add_argument(
            "--url",
            "--base-url",
            dest="url",
            metavar="URL",
            help="hub URL (default: the running hub found through .arc.pid, else http://ARC_HOST:ARC_PORT)",
        )
        parser.add_argument("--key", metavar="KEY", help="agent key, sent as Authorization: Bearer KEY")

    def handle(self, *args: Any, **options: Any) -> None:
        url = options["url"] or _default_url()
        try:
            client = ArcClient(options["agent"], base_url=url, key=options["key"])
            client.register(replace=True)
            self.run(client, options)
        except ArcError as exc:
            raise CommandError(f"arc error: {exc.error}") from None

    def run(self, client: ArcClient, options: dict[str, Any]) -> None:
        raise NotImplementedError


def _default_url() -> str:
    url, _ = discovery.running_hub(settings.ARC_HOST, settings.ARC_PORT)
    return url or discovery.base_url(settings.ARC_HOST, settings.ARC_PORT)


class Command(AgentCommand):
    help = (
        "Post a message to a running hub as --agent (to --channel, default general; a direct message with --to) "
        "and print the stored message as JSON."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--channel", help="channel to post to (default general; direct with --to)")
        parser.add_argument("--to", metavar="AGENT", help="send as a direct message to this agent")
        parser.add_argument("--kind", default="chat", choices=KINDS, help="message kind (default chat)")
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
