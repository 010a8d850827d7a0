"""``manage.py connect <client> --agent NAME``: put the hub into Claude Code's or Codex's configuration (docs/agents.md)."""

from __future__ import annotations

import shlex
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from coordination.management import clients
from coordination.process.cli import KEY_ENV, add_location_arguments, default_url

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _instance_at(url: str) -> str | None:
    """The instance id the hub at ``url`` answers with (``X-Arc-Instance``), ``None`` if it cannot be asked."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:  # a hub's own URL
            return response.headers.get("X-Arc-Instance")
    except (OSError, ValueError):
        return None


def targets(client: str, project: Path | None) -> dict[str, Path]:
    """The files ``connect``/``disconnect`` edit for ``client``: in ``project``, else in the user's home."""
    home = Path.home()
    if client == "claude-code":
        if project is not None:
            return {"mcp": project / ".mcp.json", "hooks": project / ".claude" / "settings.local.json"}
        return {"mcp": home / ".claude.json", "hooks": home / ".claude" / "settings.json"}
    codex = project / ".codex" if project is not None else Path(clients.codex_home())
    return {"mcp": codex / "config.toml", "hooks": codex / "hooks.json"}


def add_target_arguments(parser: CommandParser) -> None:
    add_location_arguments(parser)
    parser.add_argument("client", choices=("claude-code", "codex"), help="the coding agent client to configure")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--project",
        metavar="DIR",
        help="configure this project (claude-code: DIR/.mcp.json and DIR/.claude/settings.local.json; "
        "codex: DIR/.codex/); default for claude-code: the current directory",
    )
    where.add_argument(
        "--user",
        action="store_true",
        help="configure the user's own files instead (claude-code: ~/.claude.json and ~/.claude/settings.json; "
        "codex, the default for it: ~/.codex/ or $CODEX_HOME)",
    )
    parser.add_argument("--dry-run", action="store_true", help="show the changes, write nothing")


def project_of(options: dict[str, Any]) -> Path | None:
    if options["user"]:
        return None
    if options["project"]:
        return Path(options["project"]).expanduser().resolve()
    return None if options["client"] == "codex" else Path.cwd()


def show_and_apply(command: BaseCommand, changes: list[clients.Change], *, dry_run: bool) -> bool:
    """Print each change as a diff, then write them (not with ``dry_run``); whether anything changes."""
    pending = [change for change in changes if change.changed]
    for change in pending:
        command.stdout.write(change.diff())
    if not pending:
        command.stdout.write("nothing to change: the configuration already says this")
        return False
    if dry_run:
        command.stdout.write("(dry run: nothing written)")
        return True
    for change in pending:
        change.apply()
    for change in pending:
        command.stdout.write(f"{'removed' if change.after is None else 'wrote'} {change.path}")
    return True


class Command(BaseCommand):
    help = (
        "Connect a coding agent client to this hub as --agent: write (merging with what is there, showing the diff "
        "first) its MCP server entry (manage.py mcp) and its turn-boundary hooks (manage.py hook, or HTTP hooks "
        "with --http-hooks for claude-code). When the hub requires keys, a key is minted for the agent and kept in "
        "a file only you can read (never in argv, never in the project). `manage.py disconnect` undoes it."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        add_target_arguments(parser)
        parser.add_argument("--agent", required=True, help="the agent id the client's session acts as")
        parser.add_argument("--url", metavar="URL", help="hub URL (default: the running hub found through .arc.pid)")
        parser.add_argument(
            "--key",
            choices=("auto", "mint", "none"),
            default="auto",
            help="auto (default): mint a key when the hub requires keys (ARC_AUTH=required) or is not on this "
            "machine, reusing one minted before; mint: always; none: never",
        )
        parser.add_argument("--tools", choices=("core", "all"), default="all", help="MCP tool set (default all)")
        parser.add_argument("--strict", action="store_true", help="the edit hook refuses edits of files others lock")
        parser.add_argument(
            "--http-hooks",
            action="store_true",
            help=f"claude-code: HTTP hooks to the hub instead of command hooks (the key, if any, from ${KEY_ENV})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        client, agent = options["client"], str(options["agent"]).strip()
        if not agent:
            raise CommandError("--agent must name an agent")
        if options["http_hooks"] and client != "claude-code":
            raise CommandError("--http-hooks is for claude-code (Codex runs command hooks only)")
        url = (options["url"] or default_url()).rstrip("/")
        key_file = self._key_file(agent, url, options)
        files = targets(client, project_of(options))
        try:
            changes = self._changes(client, agent, url, key_file, files, options)
        except clients.ConfigError as exc:
            raise CommandError(str(exc)) from None
        changed = show_and_apply(self, changes, dry_run=options["dry_run"])
        if changed and not options["dry_run"]:
            project = project_of(options)
            scope = ["--project", str(project)] if project else ["--user"]
            undo = shlex.join(clients.manage_command("disconnect", client, *scope))
            self.stdout.write(
                f"\n{client} connects to {url} as {agent} from its next session.\nUndo: {undo}"
                + (f" (add --revoke-key to revoke the key in {key_file})" if key_file else "")
            )
            if options["http_hooks"] and key_file:
                self.stdout.write(f"HTTP hooks send ${KEY_ENV}: export it from {key_file} in the client's environment")

    def _key_file(self, agent: str, url: str, options: dict[str, Any]) -> Path | None:
        wanted = options["key"]
        host = urlsplit(url).hostname or ""
        if wanted == "none" or (wanted == "auto" and settings.ARC_AUTH != "required" and host in LOOPBACK):
            return None
        path = clients.key_path(agent, urlsplit(url).netloc)
        if path.exists() and wanted == "auto":
            return path  # minted by an earlier connect
        if options["dry_run"]:
            self.stdout.write(f"(would mint a key for {agent} into {path})")
            return path
        from coordination.core import hub, services
        from coordination.process.storage import storage_ready

        storage_ready()
        if host not in LOOPBACK and _instance_at(url) != hub.instance_id():
            raise CommandError(
                f"the hub at {url} is not the one whose storage this command opens, so a key minted here would not "
                f"work there: mint one on that hub's machine (manage.py invite {agent} --key-only), put it in {path} "
                "(chmod 600), and run connect again"
            )
        key, secret = services.key_mint(agent_id=agent, label=f"connect {options['client']}", created_by="connect")
        clients.key_write(path, secret)
        self.stdout.write(f"minted key {key.prefix} for {agent} into {path} (readable by you only)")
        return path

    @staticmethod
    def _changes(
        client: str, agent: str, url: str, key_file: Path | None, files: dict[str, Path], options: dict[str, Any]
    ) -> list[clients.Change]:
        strict, tools = options["strict"], options["tools"]
        command = clients.mcp_args(agent, url, key_file, tools)
        if client == "codex":
            block = (
                f"[mcp_servers.{clients.SERVER_NAME}]\n"
                f"command = {clients.toml_string(command[0])}\n"
                f"args = [{', '.join(clients.toml_string(a) for a in command[1:])}]\n"
            )
            return [
                clients.toml_block_set(files["mcp"], block),
                clients.edit_json(
                    files["hooks"],
                    clients.hooks_set(
                        client, clients.CODEX_HOOKS, clients.hook_command(client, agent, url, key_file, strict)
                    ),
                ),
            ]
        server = clients.server_set({"command": command[0], "args": command[1:]})
        if options["http_hooks"]:
            hooks = clients.http_hooks_set(agent, url, authorized=key_file is not None, strict=strict)
        else:
            hooks = clients.hooks_set(
                client, clients.CLAUDE_HOOKS, clients.hook_command(client, agent, url, key_file, strict)
            )
        return [clients.edit_json(files["mcp"], server), clients.edit_json(files["hooks"], hooks)]
