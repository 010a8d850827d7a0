"""Nothing acknowledged is lost: kill -9 the hub while clients post, restart, find every 201."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.hubproc import live_database, start_hub

pytestmark = pytest.mark.live

WRITERS = 8


def _post(url: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    request = urllib.request.Request(
        url + "/v1/messages",
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (OSError, ValueError):
        return None  # the hub died mid-request: not acknowledged


def test_every_acknowledged_message_survives_sigkill(tmp_path: Path) -> None:
    with live_database() as database_url:
        hub = start_hub(tmp_path / "hub", database_url=database_url)
        acknowledged: list[dict[str, Any]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def writer(n: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                payload = {
                    "from_agent": f"writer-{n}",
                    "channel": "general",
                    "body": f"writer {n} message {i} " + "x" * (i % 50),
                    "thread_id": f"t-{n}",
                    "metadata": {"n": n, "i": i},
                    "attachments": [{"type": "json", "content": {"seq": i}}],
                }
                answer = _post(hub.url, payload)
                if answer is None:
                    return
                status, body = answer
                if status == 201:
                    with lock:
                        acknowledged.append(body["result"])

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        hub.proc.send_signal(signal.SIGKILL)  # no shutdown path runs
        hub.proc.wait(10)
        stop.set()
        for thread in threads:
            thread.join(10)
        assert len(acknowledged) > 50, "the writers should have been acknowledged many times before the kill"

        restarted = start_hub(tmp_path / "hub", database_url=database_url)
        try:
            stored: dict[int, dict[str, Any]] = {}
            since = 0
            while True:
                status, page = restarted.call("GET", f"/v1/messages?channel=general&since_id={since}&limit=500")
                assert status == 200
                if not page["result"]:
                    break
                for message in page["result"]:
                    stored[message["id"]] = message
                since = page["result"][-1]["id"]
        finally:
            restarted.stop()
        missing = [m["id"] for m in acknowledged if m["id"] not in stored]
        assert missing == []
        changed = [m["id"] for m in acknowledged if stored[m["id"]] != m]
        assert changed == []
