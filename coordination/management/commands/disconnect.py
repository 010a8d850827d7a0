"""``manage.py disconnect <client>``: take the hub out of Claude Code's or Codex's configuration (docs/agents.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from coordination.management import clients
from coordination.management.commands.connect import add_target_arguments, project_of, show_and_apply, targets


class Command(BaseCommand):
    help = (
        "Undo `manage.py connect`: remove the hub's MCP server entry and its hooks from the client's files (the "
        "same --project or --user), keeping everything else as it was, showing the diff first. --revoke-key also "
        "revokes the agent keys connect minted (their files name them) and deletes those files."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        add_target_arguments(parser)
        parser.add_argument(
            "--revoke-key",
            metavar="AGENT",
            help="also revoke the keys connect minted for AGENT (kept in ~/.config/arc-hub/keys) and delete them",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        client = options["client"]
        files = targets(client, project_of(options))
        try:
            if client == "codex":
                changes = [clients.toml_block_set(files["mcp"], None)]
            else:
                changes = [clients.edit_json(files["mcp"], clients.server_remove)]
            changes.append(clients.edit_json(files["hooks"], clients.hooks_remove(client)))
        except clients.ConfigError as exc:
            raise CommandError(str(exc)) from None
        show_and_apply(self, changes, dry_run=options["dry_run"])
        if options["revoke_key"]:
            self._revoke(str(options["revoke_key"]), dry_run=options["dry_run"])

    def _revoke(self, agent: str, *, dry_run: bool) -> None:
        found = sorted(clients.key_dir().glob(f"{clients.key_path(agent, '*').name}"))
        if not found:
            self.stdout.write(f"no key of {agent} in {clients.key_dir()}")
            return
        if dry_run:
            self.stdout.write("(would revoke and delete " + ", ".join(str(p) for p in found) + ")")
            return
        from coordination.core import services
        from coordination.core.errors import ArcError
        from coordination.process.storage import storage_ready

        storage_ready()
        for path in found:
            try:
                key = services.key_find(reference=Path(path).read_text(encoding="utf-8").strip())
            except ArcError as exc:
                self.stdout.write(f"{path}: {exc.message} (not revoked here: it may be another hub's)")
                continue
            if key.agent_id != agent:
                self.stdout.write(f"{path} holds a key of {key.agent_id}, not {agent}: left alone")
                continue
            services.key_revoke(key_id=key.prefix)
            self.stdout.write(f"revoked key {key.prefix} of {key.agent_id}")
            path.unlink()
            self.stdout.write(f"removed {path}")
