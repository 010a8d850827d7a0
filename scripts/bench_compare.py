#!/usr/bin/env python3
"""This hub beside arc.py on one machine: ``manage.py bench``'s measurements, medians of several runs.

    .venv/bin/python scripts/bench_compare.py [--runs 3] [--workers 1,2] [--postgres URL] [--only posts,push,...]
                                              [--mcp-peers agent-mailbox,mcp-agent-mail] [--json FILE] [--markdown FILE]
    .venv/bin/python scripts/bench_compare.py --from-json FILE     # re-print a saved run

Each run starts a fresh server with fresh SQLite storage, warms it up, measures it
(``coordination.bench``) and stops it: first arc.py 0.0.1 (from its PyPI sdist, cached
in .cache/arc-sdist; its server starts its file-spool relay on ``--spool-dir``), then
this hub (``manage.py up --quiet --spool-dir`` with a temporary ARC_HOME; its relay runs
inside ``up``), once per worker count in ``--workers`` (more than one worker uses Redis at
``--redis-url``, each run on a fresh database number's worth of keys: the hub prefixes them).
``--postgres URL`` runs the hub on a fresh PostgreSQL database (created and dropped per run)
instead of SQLite. The CPU time of the server's processes (arc.py; the hub's supervisor and
workers) over each post phase is read from /proc and reported per post. Both relays are measured on the spool directory the server was given;
a relay that never answers is reported as ``no response``. The two never run at the
same time, so neither shares the CPU with the other; the load generator does share it
with the hub under test. arc.py sleep-polls its database (250 ms long-poll and relay,
500 ms SSE), so its push messages, relay requests and relay bursts are spaced by random
pauses up to 500 ms: a fixed short pause would always land at the same point of its
sleep. This hub is pushed to, and gets pauses up to 50 ms.

The ``mcp`` measurement (two agents through MCP tools, over stdio and ``/mcp``) is this hub's
only: arc.py has no MCP door. Beside it, ``--mcp-peers`` runs other MCP mail servers from their
PyPI packages (``scripts/mcp_peers.py``: installed once into .cache/mcp-peers, started fresh on a
temporary directory each run), measured over stdio by the same code, in a table of their own.

Prints the medians side by side with the ratio hub/arc.py as JSON on stdout and as a
markdown table (for README's Performance section) on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mcp_peers  # noqa: E402  (scripts/, beside this file)

from coordination import bench, bench_mcp  # noqa: E402  (needs ROOT on sys.path)

CACHE = ROOT / ".cache" / "arc-sdist"
ARC = "arc.py"
HUB = "hub"  # "hub" is one worker; "hub-w2" two, and so on
SDIST = ("megastructure-arc==0.0.1", "-d")


def arc_py() -> Path:
    target = CACHE / "arc.py"
    if not target.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", *SDIST, str(CACHE)],
            check=True,
        )
        archive = sorted(CACHE.glob("megastructure_arc-*.tar.gz"))[-1]
        with tarfile.open(archive) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("/arc.py") and m.name.count("/") == 1)
            data = tar.extractfile(member)
            assert data is not None
            target.write_bytes(data.read())
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/v1/channels", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def hub_workers(kind: str) -> int:
    return int(kind.partition("-w")[2] or 1)


def label(kind: str, database: str) -> str:
    if kind == ARC:
        return "arc.py 0.0.1"
    if kind in mcp_peers.PEERS:
        return mcp_peers.PEERS[kind].name
    workers = hub_workers(kind)
    return f"this hub, {workers} worker{'s' if workers > 1 else ''} ({database})"


def gap_ms(kind: str) -> float:
    return 500.0 if kind == ARC else 50.0


def start(kind: str, workdir: Path, options: argparse.Namespace) -> tuple[str, subprocess.Popen[bytes], str]:
    """Start a fresh server; returns its URL, process and the spool directory its relay serves."""
    port = free_port()
    spool = workdir / "spool"
    if kind == ARC:
        command = [sys.executable, str(arc_py()), "--port", str(port), "--storage", str(workdir / "arc.sqlite3")]
        env = dict(os.environ)
    else:
        command = [sys.executable, str(ROOT / "manage.py"), "up", "--port", str(port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARC_")}
        env |= {"ARC_HOME": str(workdir), "ARC_WORKERS": str(hub_workers(kind))}
        if hub_workers(kind) > 1 or options.postgres:
            env["ARC_REDIS_URL"] = options.redis_url
        if options.postgres:
            env["ARC_DATABASE_URL"] = fresh_database(options.postgres, workdir.name)
    command += ["--spool-dir", str(spool), "--quiet"]  # the same flag on both; each starts its relay on it
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, proc)
    except BaseException:
        proc.kill()
        raise
    return url, proc, str(spool)


def server_pids(kind: str, proc: subprocess.Popen[bytes], workdir: Path) -> tuple[int, ...]:
    """The processes whose CPU counts: arc.py's one; the hub's supervisor and workers (its pidfile)."""
    if kind == ARC or hub_workers(kind) == 1:
        return (proc.pid,)
    info = json.loads((workdir / ".arc.pid").read_text())
    return (proc.pid, *info.get("workers", []))


def fresh_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    database = "arc_bench_" + "".join(c if c.isalnum() else "_" for c in name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def drop_database(url: str, name: str) -> None:
    import psycopg

    database = "arc_bench_" + "".join(c if c.isalnum() else "_" for c in name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def measure(kind: str, config: bench.BenchConfig, tmp: Path, run: int, options: argparse.Namespace) -> dict[str, Any]:
    if kind in mcp_peers.PEERS:
        return asyncio.run(
            mcp_peers.measure(kind, f"{kind}-{run}", config.mcp_round_trips, config.mcp_sends, config.wait_sec)
        )
    if kind == ARC:
        config = replace(config, only=tuple(name for name in config.only if name != "mcp"))  # no MCP door
    workdir = tmp / f"{kind}-{run}"
    workdir.mkdir()
    url, proc, spool = start(kind, workdir, options)
    try:
        warm = replace(config, url=url, only=("posts", "push", "relay"), concurrency=(8,), posts=300, spool_dir=spool)
        warm = replace(warm, push_transports=("longpoll", "sse"), push_messages=5, push_max_sec=5, relay_requests=3)
        bench.run(warm)
        measured = replace(config, url=url, spool_dir=spool, server_pids=server_pids(kind, proc, workdir))
        return bench.run(measured, log=lambda line: log(f"  {kind} {line}"), mcp_phase=bench_mcp.phase)
    finally:
        stop(proc)
        if options.postgres and kind != ARC:
            drop_database(options.postgres, workdir.name)


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def medians(reports: list[dict[str, Any]]) -> dict[str, tuple[str, bench.Value]]:
    """``key → (label, median over runs)`` for every figure the runs share."""
    rows = [{key: (label, value) for key, label, value in bench.metric_rows(r)} for r in reports]
    keys = [key for key in rows[0] if all(key in r for r in rows)]
    return {key: (rows[0][key][0], bench.median_value([r[key][1] for r in rows])) for key in keys}


def ratio(hub: bench.Value, arc: bench.Value) -> float | None:
    if isinstance(hub, bool) or isinstance(arc, bool):
        return None
    if isinstance(hub, int | float) and isinstance(arc, int | float) and arc:
        return round(hub / arc, 2)
    return None


def markdown(summary: dict[str, Any]) -> str:
    """The table beside arc.py; then, if measured, the MCP table beside the MCP peers."""
    date = summary["date"][:10]
    hubs = [kind for kind in summary["servers"] if kind != ARC and kind not in mcp_peers.PEERS]
    lines: list[str] = []
    if ARC in summary["servers"] and any(not key.startswith("mcp.") for key in summary["metrics"]):
        head = [f"median of {summary['runs']} runs ({date})", summary["labels"][ARC]]
        for kind in hubs:
            head += [summary["labels"][kind], "ratio"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for key, row in summary["metrics"].items():
            if key.startswith("mcp."):
                continue
            cells = [row["label"], bench.format_value(row.get(ARC))]
            for kind in hubs:
                r = row["ratio"].get(kind)
                cells += [bench.format_value(row.get(kind)), f"{r:g}x" if r else ""]
            lines.append("| " + " | ".join(cells) + " |")
    mcp_rows = {key: row for key, row in summary["metrics"].items() if key.startswith("mcp.")}
    if mcp_rows:
        peers = [kind for kind in summary["servers"] if kind in mcp_peers.PEERS]
        head = [f"MCP, median of {summary['runs']} runs ({date})"]
        head += [summary["labels"][kind] for kind in [*hubs, *peers]]
        lines += [*([""] if lines else []), "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for key, row in mcp_rows.items():
            if key.startswith("mcp.http.") and not any(row.get(kind) is not None for kind in hubs):
                continue
            label = (
                row["label"] if not key.startswith("mcp.stdio.") else row["label"].replace("MCP over stdio", "stdio")
            )
            lines.append("| " + " | ".join([label, *(bench.format_value(row.get(k)) for k in [*hubs, *peers])]) + " |")
    return "\n".join(lines)


def summarize(
    reports: dict[str, list[dict[str, Any]]], date: str, elapsed_sec: float, labels: dict[str, str]
) -> dict[str, Any]:
    found = {kind: medians(runs) for kind, runs in reports.items() if runs}
    # Rows in measurement order; within one, arc.py's order, then figures only this hub has.
    seen: list[str] = []
    for figures in found.values():
        seen += [k for k in figures if k not in seen]
    keys = sorted(seen, key=lambda k: (bench.MEASUREMENTS.index(k.split(".")[0]), seen.index(k)))
    metrics: dict[str, dict[str, Any]] = {}
    for key in keys:
        values = {kind: figures.get(key, ("", None))[1] for kind, figures in found.items()}
        comparable = key.endswith(("per_sec", "_ms", "ratio"))
        metrics[key] = {
            "label": next(figures[key][0] for figures in found.values() if key in figures),
            **values,
            "ratio": {
                kind: ratio(value, values.get(ARC)) if comparable else None
                for kind, value in values.items()
                if kind != ARC and kind not in mcp_peers.PEERS
            },
        }
    return {
        "date": date,
        "runs": max(len(runs) for runs in reports.values()),
        "servers": list(found),
        "labels": labels,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "gap_ms": {kind: gap_ms(kind) for kind in found},
        "elapsed_sec": elapsed_sec,
        "metrics": metrics,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per server (default 3); medians are reported")
    parser.add_argument("--only", default=",".join(bench.MEASUREMENTS), help="measurements, comma-separated")
    parser.add_argument("--workers", default="1", help="hub worker counts to measure, comma-separated (default 1)")
    parser.add_argument("--postgres", metavar="URL", help="run the hub on a fresh PostgreSQL database from this server")
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/5", help="Redis for hubs of several workers (default db 5)"
    )
    parser.add_argument(
        "--mcp-peers",
        default=",".join(mcp_peers.PEERS),
        help="MCP mail servers measured beside the hub's MCP phase, from PyPI (default: all: "
        f"{','.join(mcp_peers.PEERS)}; '' for none)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the full result (every run) here")
    parser.add_argument("--markdown", metavar="FILE", help="also write the markdown table here")
    parser.add_argument("--from-json", metavar="FILE", help="measure nothing: summarise a file written by --json")
    args = parser.parse_args()

    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        reports: dict[str, list[dict[str, Any]]] = saved["runs"]
        old = saved["summary"]
        summary = summarize(reports, old["date"], old["elapsed_sec"], old["labels"])
    else:
        bench.raise_fd_limit()  # the servers inherit it: 1,000 idle streams need as many descriptors
        arc_py()
        only = tuple(name.strip() for name in args.only.split(",") if name.strip())
        kinds = [ARC] + [HUB if n == "1" else f"{HUB}-w{n}" for n in (w.strip() for w in args.workers.split(",")) if n]
        peers = [name.strip() for name in args.mcp_peers.split(",") if name.strip()] if "mcp" in only else []
        unknown = set(peers) - set(mcp_peers.PEERS)
        if unknown:
            parser.error(f"unknown MCP peers: {', '.join(sorted(unknown))} (of {', '.join(mcp_peers.PEERS)})")
        kinds += peers
        database = "PostgreSQL + Redis" if args.postgres else "SQLite"
        labels = {kind: label(kind, database) for kind in kinds}
        reports = {kind: [] for kind in kinds}
        started = datetime.now(UTC)
        with tempfile.TemporaryDirectory(prefix="arc-bench-") as tmp:
            for run in range(args.runs):
                for kind in kinds:  # one at a time, alternating, each on a fresh server
                    log(f"run {run + 1}/{args.runs}: {labels[kind]}")
                    config = bench.BenchConfig(url="", only=only, gap_ms=gap_ms(kind))
                    reports[kind].append(measure(kind, config, Path(tmp), run, args))
        elapsed = round((datetime.now(UTC) - started).total_seconds())
        summary = summarize(reports, started.isoformat(timespec="seconds"), elapsed, labels)
    print(json.dumps(summary, indent=2))
    table = markdown(summary)
    log("\n" + table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "runs": reports}, indent=2))


if __name__ == "__main__":
    main()
