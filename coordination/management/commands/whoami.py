from __future__ import annotations

import json
from typing import Any

from coordination.client import ArcClient
from coordination.management.cli import AgentCommand


class Command(AgentCommand):
    help = (
        "Register --agent with a running hub and print its bootstrap as JSON (GET /v1/bootstrap: its session, "
        "the live agents and the id of the latest message it can see)."
    )

    def run(self, client: ArcClient, options: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(client.bootstrap(), indent=2))
