from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from coordination import bench, bench_mcp
from coordination.process import discovery
from coordination.process.cli import default_url


def _local_hub_pids(url: str) -> tuple[int, ...]:
    """The processes of the hub at ``url`` if it is this machine's (its pidfile names it): its CPU is then measured."""
    info = discovery.pidfile_discover()
    if info is None or info["url"].rstrip("/") != url.rstrip("/"):
        return ()
    return (info["pid"], *info.get("workers", []))


def _ints(raw: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise CommandError(f"expected comma-separated integers, got {raw!r}") from None


def _names(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


class Command(BaseCommand):
    help = (
        "Measure a running hub (this one or arc.py) over HTTP: post throughput at concurrency 1/8/32, push "
        "latency over long-poll, SSE and WebSocket, SSE fan-out, relay round trip (one at a time, and bursts "
        "of 20 agents x 5 requests at once), claim races, idle connections, and two agents over MCP (stdio and "
        "/mcp: a DM round trip and DMs in a row, with the official SDK's client) (docs/performance.md). When the hub is this machine's "
        "(its .arc.pid names the URL), the CPU time of its processes (the supervisor and every worker) per post "
        "is measured too. Prints the result as JSON on stdout and a table on stderr."
    )
    requires_system_checks: list[str] = []  # a hub client: it never opens the database itself

    def add_arguments(self, parser: CommandParser) -> None:
        d = bench.BenchConfig(url="")
        parser.add_argument("--url", metavar="URL", help="hub URL (default: the running hub found through .arc.pid)")
        parser.add_argument("--token", metavar="KEY", help="sent as Authorization: Bearer KEY on every request")
        parser.add_argument(
            "--only", default=",".join(bench.MEASUREMENTS), help=f"comma-separated, of {','.join(bench.MEASUREMENTS)}"
        )
        parser.add_argument("--json-only", action="store_true", help="print the JSON only, no table")
        g = parser.add_argument_group("sizes")
        g.add_argument("--concurrency", default="1,8,32", help="post concurrency levels (default 1,8,32)")
        g.add_argument("--posts", type=int, default=d.posts, help=f"posts per level (default {d.posts})")
        g.add_argument("--post-max-sec", type=float, default=d.post_max_sec, help="time cap per level")
        g.add_argument("--push-transports", default=",".join(bench.PUSH_TRANSPORTS), help="longpoll,sse,ws")
        g.add_argument("--push-messages", type=int, default=d.push_messages, help="messages per push transport")
        g.add_argument("--push-max-sec", type=float, default=d.push_max_sec, help="time cap per push transport")
        g.add_argument(
            "--gap-ms",
            type=float,
            default=d.gap_ms,
            help="random pause 0..GAP before each push message or relay request (use the hub's poll interval "
            f"or more for a sleep-polling hub such as arc.py; default {d.gap_ms:g})",
        )
        g.add_argument("--fanout", default="50,200", help="SSE receivers per fan-out round (default 50,200)")
        g.add_argument("--fanout-messages", type=int, default=d.fanout_messages)
        g.add_argument("--fanout-spacing-ms", type=float, default=d.fanout_spacing_ms)
        g.add_argument("--spool-dir", metavar="DIR", help="relay spool to time (without it: 'not implemented')")
        g.add_argument("--relay-requests", type=int, default=d.relay_requests, help="requests one at a time")
        g.add_argument("--burst-agents", type=int, default=d.relay_burst_agents, help="agents writing at once")
        g.add_argument("--burst-per-agent", type=int, default=d.relay_burst_per_agent, help="requests each, per burst")
        g.add_argument("--bursts", type=int, default=d.relay_bursts, help="relay bursts, latencies pooled")
        g.add_argument("--racers", type=int, default=d.racers, help="clients per claim race")
        g.add_argument("--races", type=int, default=d.races)
        g.add_argument("--idle", type=int, default=d.idle_connections, help="idle connections to hold open")
        g.add_argument("--idle-transports", default="sse,ws", help="kinds of idle streams, each in turn (sse,ws)")
        g.add_argument("--idle-posts", type=int, default=d.idle_posts, help="posts at concurrency 8, with and without")
        g.add_argument("--mcp-transports", default="stdio,http", help="MCP transports to time (stdio,http)")
        g.add_argument("--mcp-round-trips", type=int, default=d.mcp_round_trips, help="MCP DM round trips")
        g.add_argument("--mcp-sends", type=int, default=d.mcp_sends, help="MCP DMs sent in a row")
        g.add_argument("--a2a-round-trips", type=int, default=d.a2a_round_trips, help="blocking A2A SendMessage calls")
        g.add_argument("--seed", type=int, help="seed for the random pauses")

    def handle(self, *args: Any, **options: Any) -> None:
        url = options["url"] or default_url()
        config = bench.BenchConfig(
            url=url,
            token=options["token"],
            only=_names(options["only"]),
            concurrency=_ints(options["concurrency"]),
            posts=options["posts"],
            post_max_sec=options["post_max_sec"],
            push_transports=_names(options["push_transports"]),
            push_messages=options["push_messages"],
            push_max_sec=options["push_max_sec"],
            gap_ms=options["gap_ms"],
            fanout_receivers=_ints(options["fanout"]),
            fanout_messages=options["fanout_messages"],
            fanout_spacing_ms=options["fanout_spacing_ms"],
            spool_dir=options["spool_dir"],
            relay_requests=options["relay_requests"],
            relay_burst_agents=options["burst_agents"],
            relay_burst_per_agent=options["burst_per_agent"],
            relay_bursts=options["bursts"],
            racers=options["racers"],
            races=options["races"],
            idle_connections=options["idle"],
            idle_transports=_names(options["idle_transports"]),
            idle_posts=options["idle_posts"],
            mcp_transports=_names(options["mcp_transports"]),
            mcp_round_trips=options["mcp_round_trips"],
            mcp_sends=options["mcp_sends"],
            a2a_round_trips=options["a2a_round_trips"],
            seed=options["seed"],
            server_pids=_local_hub_pids(url),
        )
        quiet = options["json_only"] or options["verbosity"] < 1
        try:
            report = bench.run(
                config, log=None if quiet else lambda line: print(line, file=sys.stderr), mcp_phase=bench_mcp.phase
            )
        except (bench.BenchError, OSError) as exc:
            raise CommandError(f"bench failed: {exc}") from None
        self.stdout.write(json.dumps(report, indent=2))
        if not options["json_only"]:
            self.stderr.write(bench.format_table(report))
