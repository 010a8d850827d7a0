#!/usr/bin/env python3
"""POST /v1/messages throughput, this hub beside arc.py, on the same machine in one run.

    .venv/bin/python scripts/bench_posts.py [--concurrency 8] [--posts 2000] [--rounds 3]

Starts arc.py (from its PyPI sdist, cached in .cache/arc-sdist) and this hub
(`manage.py up`, SQLite) each on a free port with fresh storage, warms both up,
then alternates rounds: N client threads, each with a keep-alive session
(arc.py closes every connection, so its clients reconnect per request), post as
fast as answers come. Prints per-round figures and the medians as JSON.
The load generator shares the machine's cores with the hub under test.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "arc-sdist"


def arc_py() -> Path:
    target = CACHE / "arc.py"
    if not target.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                "megastructure-arc==0.0.1",
                "-d",
                str(CACHE),
            ],
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
            if requests.get(url + "/v1/channels", timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def start_arc(workdir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(arc_py()),
            "--port",
            str(port),
            "--storage",
            str(workdir / "arc.sqlite3"),
            "--spool-dir",
            str(workdir / "spool"),
            "--quiet",
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_up(url, proc)
    return url, proc


def start_hub(workdir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARC_")}
    env["ARC_HOME"] = str(workdir)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "up", "--port", str(port), "--quiet"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_up(url, proc)
    return url, proc


def post_round(url: str, concurrency: int, posts: int) -> dict[str, Any]:
    per_thread = posts // concurrency
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)

    def worker(n: int) -> None:
        nonlocal errors
        session = requests.Session()
        mine: list[float] = []
        bad = 0
        barrier.wait()
        for i in range(per_thread):
            started = time.perf_counter()
            response = session.post(
                url + "/v1/messages",
                json={"from_agent": f"bench-{n}", "channel": "general", "body": f"message {i} from {n}"},
            )
            mine.append(time.perf_counter() - started)
            bad += response.status_code != 201
        with lock:
            latencies.extend(mine)
            errors += bad

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "posts": len(latencies),
        "errors": errors,
        "per_sec": round(len(latencies) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--posts", type=int, default=2000, help="posts per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        arc_dir, hub_dir = Path(tmp) / "arc", Path(tmp) / "hub"
        arc_dir.mkdir()
        hub_dir.mkdir()
        arc_url, arc_proc = start_arc(arc_dir)
        hub_url, hub_proc = start_hub(hub_dir)
        try:
            for url in (arc_url, hub_url):
                post_round(url, args.concurrency, 200)  # warm-up: imports, caches, first connections
            rounds: dict[str, list[dict[str, Any]]] = {"arc.py": [], "hub": []}
            for r in range(args.rounds):
                for name, url in (("arc.py", arc_url), ("hub", hub_url)):
                    result = post_round(url, args.concurrency, args.posts)
                    rounds[name].append(result)
                    print(f"round {r + 1} {name:7s} {json.dumps(result)}", file=sys.stderr)
        finally:
            for proc in (arc_proc, hub_proc):
                proc.terminate()
                proc.wait(10)
    summary = {
        name: {key: statistics.median(r[key] for r in results) for key in ("per_sec", "p50_ms", "p99_ms")}
        | {"errors": sum(r["errors"] for r in results)}
        for name, results in rounds.items()
    }
    summary["ratio_hub_to_arc"] = round(summary["hub"]["per_sec"] / summary["arc.py"]["per_sec"], 2)
    summary["concurrency"] = args.concurrency
    summary["posts_per_round"] = args.posts
    summary["rounds"] = args.rounds
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
