from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from coordination.core import services
from coordination.core.errors import ArcError
from coordination.core.models import AgentKey
from coordination.management.cli import HubCommand
from coordination.process import discovery
from coordination.process.cli import add_location_arguments

BRIEF = """\
You are agent "{agent}" on an Arc coordination hub: {url}
Your agent key{scope}{expiry}:

    {key}

This key is a secret and is shown only now. Keep it out of command lines (other programs
can read those) and out of files others can read. Put it in a file of your own first:

    umask 077; printf 'Authorization: Bearer %s\\n' '{key}' > ~/.arc-auth-{agent}

Then send that header with every request:

    curl -sH @$HOME/.arc-auth-{agent} {url}/v1/hub-info
    curl -sH @$HOME/.arc-auth-{agent} -X POST {url}/v1/sessions -d '{{"agent_id": "{agent}"}}'
    curl -sH @$HOME/.arc-auth-{agent} '{url}/v1/events?agent_id={agent}&exclude_self=1&timeout=30'

From Python (the hub's client, coordination/client.py, needs only `requests`):

    key = open(os.path.expanduser("~/.arc-auth-{agent}")).read().split()[-1]
    hub = ArcClient("{agent}", base_url="{url}", key=key)

Everything you send acts as "{agent}": agent fields you leave out are filled in, and
another agent's id is refused (403).
"""


class Command(HubCommand):
    help = (
        "Mint an agent key and print a paste-ready brief for the agent: hub URL, the key (shown once; only its "
        "hash is stored), and how to send it without putting it on a command line. "
        "--rooms limits it to rooms, --expires sets its lifetime, --admin makes it an admin key."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_location_arguments(parser)
        parser.add_argument("agent", help="the agent id the key acts as")
        parser.add_argument("--rooms", default="", help="comma-separated rooms the key may use (default: all)")
        parser.add_argument("--expires", default="never", choices=list(AgentKey.EXPIRY_CHOICES), help="lifetime")
        parser.add_argument(
            "--admin", action="store_true", help="may toggle the network, shut down, mint and revoke keys"
        )
        parser.add_argument("--label", default="", help="a note to recognise the key by in `manage.py keys`")
        parser.add_argument(
            "--url", help="hub URL to put in the brief (default: the running hub, else ARC_HOST:ARC_PORT)"
        )
        parser.add_argument("--key-only", action="store_true", help="print only the key (for scripts)")

    def handle(self, *args: Any, **options: Any) -> None:
        rooms = [room for room in options["rooms"].split(",") if room.strip()]
        try:
            key, plaintext = services.key_mint(
                agent_id=options["agent"],
                rooms=rooms,
                expires=options["expires"],
                admin=options["admin"],
                label=options["label"],
                created_by="manage.py invite",
            )
        except ArcError as exc:
            raise CommandError(exc.message) from None
        if options["key_only"]:
            self.stdout.write(plaintext)
            return
        url = options["url"] or discovery.running_hub(settings.ARC_HOST, settings.ARC_PORT)[0]
        url = url or discovery.base_url(settings.ARC_HOST, settings.ARC_PORT)
        scope = f" (rooms: {', '.join(key.rooms)})" if key.rooms else ""
        if key.is_admin:
            scope += " (admin)"
        expiry = f", valid until {key.expires_at:%Y-%m-%d %H:%M} UTC" if key.expires_at else ""
        self.stdout.write(BRIEF.format(agent=key.agent_id, url=url, key=plaintext, scope=scope, expiry=expiry))
        self.stderr.write(f"minted key {key.prefix} for {key.agent_id}; revoke with: manage.py revoke {key.prefix}")
