"""Arc's smoke roles across HTTP and this hub's file-spool relay, and ``manage.py smoke`` (issue 6).

Every test runs a real hub (``manage.py up``) whose relay serves a spool inside the
test's temporary directory. Personas are Arc's smoke roles: ``smoke-a`` posts the task
(over HTTP), ``smoke-b`` the sandboxed worker that claims it (over the relay),
``smoke-c`` the verifier (over HTTP); ``alice`` (HTTP) and ``bob`` (relay) talk through
Arc's own relay clients.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.arcref import arc, arc_py_path
from tests.hubproc import ROOT, Hub, hub_env, mint_key, running_hub

ROLES = ("smoke-a", "smoke-b", "smoke-c")


@pytest.fixture
def spool_hub(tmp_path: Path) -> Iterator[tuple[Hub, Path]]:
    """A live hub whose relay serves ``<tmp>/spool`` (through ``ARC_SPOOL_DIR``, as a user would set it)."""
    spool = tmp_path / "spool"
    with running_hub(tmp_path / "hub", extra_env={"ARC_SPOOL_DIR": str(spool)}) as hub:
        yield hub, spool


def arc_smoke_agent(role: str, transport: str, hub: Hub, spool: Path, *extra: str) -> subprocess.Popen[str]:
    """``arc.py smoke-agent`` for one role, as its own process, with Arc's defaults for channel and thread."""
    return subprocess.Popen(
        [
            sys.executable,
            str(arc_py_path()),
            "smoke-agent",
            "--role",
            role,
            "--transport",
            transport,
            "--base-url",
            hub.url,
            "--relay-dir",
            str(spool),
            "--timeout-sec",
            "30",
            "--poll-interval-sec",
            "0.1",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def manage_smoke(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "smoke", *args],
        env=env,
        cwd=str(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(procs: dict[str, subprocess.Popen[str]], timeout: float = 90) -> dict[str, tuple[int, str]]:
    """Each process's exit status and output (stdout, then stderr when kept apart)."""
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=timeout)
        done[name] = (proc.returncode, out + (err or ""))
    return done


def assert_thread_completed(hub: Hub, thread_id: str, claim_key: str) -> list[dict[str, Any]]:
    """Every role left its messages on the thread, with the kinds Arc's roles look for; the claim is released."""
    status, thread = hub.call("GET", f"/v1/threads/{thread_id}")
    assert status == 200, thread
    messages = thread["result"]["messages"]
    kinds = {(m["from_agent"], m["kind"]) for m in messages}
    assert {
        ("smoke-a", "task"),
        ("smoke-a", "notice"),
        ("smoke-b", "artifact"),
        ("smoke-b", "notice"),
        ("smoke-c", "notice"),
    } <= kinds
    assert {m["channel"] for m in messages} == {"smoke-room"}
    verified = [m["body"] for m in messages if m["from_agent"] == "smoke-c"]
    # smoke-c may look between smoke-b's artifact and its release of the claim: either is right.
    assert len(verified) == 1
    assert re.fullmatch(
        r"smoke-c verified shared visibility across direct HTTP and relay mode \((released|held by smoke-b)\)",
        verified[0],
    )
    claims = [c for c in thread["result"]["claims"] if c["claim_key"] == claim_key]
    assert [(c["owner_agent_id"], c["released_at"] is not None) for c in claims] == [("smoke-b", True)]
    return list(messages)


def served_over_relay(spool: Path, agent: str) -> int:
    """How many of ``agent``'s requests the relay took (renamed to .work) and answered."""
    taken = {p.stem for p in (spool / "requests" / agent).glob("*.work")}
    answered = {p.stem for p in (spool / "responses" / agent).glob("*.json")}
    assert taken == answered, "every request the relay took has its response"
    return len(taken)


# ── Arc's own clients against this hub's relay ───────────────────────────────


@pytest.mark.live
def test_arcs_smoke_roles_pass_with_smoke_b_over_the_relay(spool_hub: tuple[Hub, Path]) -> None:
    """arc.py's smoke-a and smoke-c over HTTP and smoke-b over the relay, each its own process, all exit 0."""
    hub, spool = spool_hub
    procs = {
        "smoke-a": arc_smoke_agent("smoke-a", "http", hub, spool),
        "smoke-b": arc_smoke_agent("smoke-b", "relay", hub, spool),
        "smoke-c": arc_smoke_agent("smoke-c", "http", hub, spool),
    }
    for role, (status, output) in finish(procs).items():
        assert status == 0, f"arc.py {role} failed: {output}"

    assert_thread_completed(hub, "smoke-relay-001", "smoke-claim-001")
    assert served_over_relay(spool, "smoke-b") >= 6  # session, wait, claim, artifact, release, wait, notice
    assert not (spool / "requests" / "smoke-a").exists()  # the HTTP roles never touched the spool


@pytest.mark.live
def test_arcs_file_relay_client_and_arc_client_over_relay(spool_hub: tuple[Hub, Path]) -> None:
    """Arc's FileRelayClient (raw envelopes) and ArcClient.over_relay, unchanged: register, post, poll, claim."""
    hub, spool = spool_hub
    reference = arc()

    raw = reference.FileRelayClient(agent_id="bob", spool_dir=str(spool), timeout=10)
    opened = raw.call("POST", "/v1/sessions", {"agent_id": "bob", "replace": True})
    assert (opened["ok"], opened["status"]) == (True, 201)
    assert opened["body"]["result"]["agent_id"] == "bob"
    refused = raw.call("POST", "/v1/messages", {"from_agent": "bob"})
    assert (refused["ok"], refused["status"]) == (False, 400)
    assert refused["body"] == {"ok": False, "error": "body or attachments is required"}

    bob = reference.ArcClient.over_relay("bob", spool_dir=str(spool), timeout=10)
    alice = reference.ArcClient.quickstart("alice", hub.url)
    assert bob.register(capabilities=["code"])["capabilities"] == ["code"]
    bob.bootstrap()
    alice.post("general", "over to you, bob", thread_id="relay-1")
    assert [m["body"] for m in bob.poll(timeout=5)] == ["over to you, bob"]

    posted = bob.post("general", "on it", kind="artifact", thread_id="relay-1")
    assert posted["from_agent"] == "bob"
    assert [m["body"] for m in alice.poll(timeout=5, thread_id="relay-1")] == ["on it"]  # her own excluded

    claim = bob.claim("relay-claim", thread_id="relay-1")
    assert claim["owner_agent_id"] == "bob"
    assert alice.claim("relay-claim")["owner_agent_id"] == "bob"  # alice, over HTTP, loses to the relay's agent
    assert bob.release("relay-claim")["released_at"] is not None
    with pytest.raises(reference.ArcError, match="claim not found or not owned by agent_id"):
        bob.release("never-claimed")  # the hub's 404 comes back through the relay as Arc's ArcError
    assert served_over_relay(spool, "bob") >= 9


# ── manage.py smoke ──────────────────────────────────────────────────────────


@pytest.mark.live
def test_manage_py_smoke_runs_all_three_roles_and_each_run_has_its_own_thread(spool_hub: tuple[Hub, Path]) -> None:
    """With no flags, from the hub's directory: the hub found through .arc.pid, the spool from ARC_SPOOL_DIR."""
    hub, spool = spool_hub
    threads = []
    for _ in range(2):
        status, output = finish({"smoke": manage_smoke(env=hub.env, cwd=hub.home)})["smoke"]
        assert status == 0, output
        assert re.search(r"^smoke-a  http   ok ", output, re.M)
        assert re.search(r"^smoke-b  relay  ok ", output, re.M)
        assert re.search(r"^smoke-c  http   ok ", output, re.M)
        found = re.search(
            r"^smoke passed: .* on thread (smoke-relay-[0-9a-f]{8}) in smoke-room; hub (\S+),", output, re.M
        )
        assert found, output
        assert found.group(2) == hub.url
        threads.append(found.group(1))
        assert_thread_completed(hub, found.group(1), found.group(1).replace("smoke-relay-", "smoke-claim-"))

    assert threads[0] != threads[1]
    assert served_over_relay(spool, "smoke-b") >= 12
    assert not (spool / "requests" / "smoke-a").exists()


@pytest.mark.live
def test_our_smoke_b_over_the_relay_meets_arcs_smoke_a_and_smoke_c(spool_hub: tuple[Hub, Path]) -> None:
    """A single role of ours, at Arc's defaults (thread smoke-relay-001), interoperates with arc.py's roles."""
    hub, spool = spool_hub
    procs = {
        "arc smoke-a": arc_smoke_agent("smoke-a", "http", hub, spool),
        "ours smoke-b": manage_smoke(
            "--role",
            "smoke-b",
            "--transport",
            "relay",
            "--spool-dir",
            str(spool),
            "--timeout",
            "30",
            env=hub_env(hub.home),
            cwd=hub.home.parent,
        ),
        "arc smoke-c": arc_smoke_agent("smoke-c", "http", hub, spool),
    }
    results = finish(procs)
    for name, (status, output) in results.items():
        assert status == 0, f"{name} failed: {output}"
    assert "smoke passed: smoke-b (relay)" in results["ours smoke-b"][1]
    assert "on thread smoke-relay-001 in smoke-room" in results["ours smoke-b"][1]
    assert_thread_completed(hub, "smoke-relay-001", "smoke-claim-001")
    assert served_over_relay(spool, "smoke-b") >= 6


@pytest.mark.live
def test_our_smoke_a_and_smoke_c_meet_arcs_smoke_b_over_the_relay(spool_hub: tuple[Hub, Path]) -> None:
    hub, spool = spool_hub
    env = hub_env(hub.home)
    procs = {
        "ours smoke-a": manage_smoke("--role", "smoke-a", "--url", hub.url, "--timeout", "30", env=env, cwd=hub.home),
        "arc smoke-b": arc_smoke_agent("smoke-b", "relay", hub, spool),
        "ours smoke-c": manage_smoke("--role", "smoke-c", "--url", hub.url, "--timeout", "30", env=env, cwd=hub.home),
    }
    for name, (status, output) in finish(procs).items():
        assert status == 0, f"{name} failed: {output}"
    assert_thread_completed(hub, "smoke-relay-001", "smoke-claim-001")


@pytest.mark.live
def test_manage_py_smoke_with_agent_keys_on_a_hub_that_requires_them(tmp_path: Path) -> None:
    """ARC_AUTH=required: one key per role, sent as a Bearer header over HTTP and in the relay envelope."""
    spool = tmp_path / "spool"
    with running_hub(tmp_path / "hub", extra_env={"ARC_SPOOL_DIR": str(spool), "ARC_AUTH": "required"}) as hub:
        keys = [f"{role}={mint_key(hub, role)}" for role in ROLES]

        # --url: discovery's probe takes the 401 of a keyless request for "no hub here"
        url = ("--url", hub.url)
        without = finish({"smoke": manage_smoke(*url, "--timeout", "10", env=hub.env, cwd=hub.home)})["smoke"]
        keyed = finish({"smoke": manage_smoke(*url, *(f"--key={k}" for k in keys), env=hub.env, cwd=hub.home)})["smoke"]

    assert without[0] == 1
    assert 'smoke failed: smoke-a (http) at step "open session": ' in without[1]
    assert "key" in without[1].split('at step "open session": ', 1)[1].lower()  # refused for want of a key
    assert keyed[0] == 0, keyed[1]
    assert "smoke passed: smoke-a (http), smoke-b (relay), smoke-c (http)" in keyed[1]


# ── failures ─────────────────────────────────────────────────────────────────


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_manage_py_smoke_fails_fast_naming_role_and_step_when_no_hub_listens(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = manage_smoke(
        "--url", url, "--spool-dir", str(tmp_path / "no-relay"), "--timeout", "5", env=hub_env(tmp_path), cwd=tmp_path
    )
    status, output = finish({"smoke": proc})["smoke"]
    elapsed = time.monotonic() - started

    assert status == 1
    assert elapsed < 5 + 3 + 5  # its timeout, the grace for the others to stop, and Python's start-up
    assert (
        f'CommandError: smoke failed: smoke-a (http) at step "open session": connection error: cannot reach the hub at {url}'
        in output
    )
    assert re.search(
        r"^smoke-b  relay  stopped .* at \"open session\": stopped because another role failed", output, re.M
    )


def test_a_relay_role_with_no_relay_on_the_spool_times_out_naming_the_spool(tmp_path: Path) -> None:
    spool = tmp_path / "nobody-serves-this"
    started = time.monotonic()
    proc = manage_smoke(
        "--role", "smoke-b", "--spool-dir", str(spool), "--timeout", "2", env=hub_env(tmp_path), cwd=tmp_path
    )
    status, output = finish({"smoke": proc})["smoke"]
    elapsed = time.monotonic() - started

    assert status == 1
    assert elapsed < 2 + 3 + 5
    assert 'smoke failed: smoke-b (relay) at step "open session": relay: no response in ' in output
    assert f"is the hub running with its relay on this spool dir? (`manage.py up --spool-dir {spool}`" in output


def test_one_key_for_all_three_roles_is_refused_before_anything_runs() -> None:
    with pytest.raises(CommandError, match="--key KEY needs --role"):
        call_command("smoke", "--key", "arc_abc_secret", "--url", "http://127.0.0.1:1", stdout=StringIO())
