"""Several hub processes on one port: a supervisor and its workers (``manage.py up --workers N``).

The supervisor opens the listening socket and starts N workers (``manage.py up`` again,
each told the socket's file descriptor), so the kernel spreads connections over them;
each worker is a whole hub process (its own event loop, synchronous thread and database
connection) serving every door. Push crosses workers over Redis (the channel layer); the
sweeper and the relay run in one worker at a time (``coordination.process.duty``).

The supervisor writes the pidfile (its own pid; ``stop`` signals it), restarts a worker
that dies (giving up if they keep dying at start), and at SIGTERM or Ctrl-C tells every
worker to drain and waits for them.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from coordination.process import discovery
from coordination.process.server import DRAIN_SEC, listen_socket

log = logging.getLogger("arc.up")

# A worker that dies this soon after starting, this many times in a row, is not restarted again.
QUICK_DEATH_SEC = 5.0
MAX_QUICK_DEATHS = 5
READY_TIMEOUT_SEC = 60.0
WORKER_FD_ENV = "ARC_WORKER_FD"
READY_FD_ENV = "ARC_WORKER_READY_FD"


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen[bytes]
    started: float
    ready_fd: int | None


def worker_count(raw: str | None) -> int:
    """``N`` or ``auto`` (the CPU count) as a worker count; ``ValueError`` says what is wrong."""
    value = (raw or "1").strip().lower()
    if value == "auto":
        return max(1, os.cpu_count() or 1)
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise ValueError(f"workers must be a number from 1 to 64 or 'auto', got {raw!r}")
    return int(value)


def worker_socket() -> object | None:
    """In a worker: the supervisor's listening socket (``None`` in a hub of one process).

    A worker also asks the kernel for SIGTERM when its supervisor dies (Linux), so a killed
    supervisor never leaves workers serving on its port.
    """
    import socket

    fd = os.environ.get(WORKER_FD_ENV)
    if not fd:
        return None
    _die_with_parent()
    return socket.socket(fileno=int(fd))


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        log.warning("cannot ask to be stopped with the supervisor; a killed supervisor leaves this worker running")
        return
    if os.getppid() == 1:  # the supervisor died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


def worker_ready() -> None:
    """In a worker: tell the supervisor this worker serves (a byte on the pipe it was given)."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd:
        try:
            os.write(int(fd), b"r")
        except OSError:
            pass  # the supervisor stopped listening (a restarted worker): nothing to tell
        finally:
            os.close(int(fd))


def supervise(
    *, count: int, host: str, port: int, worker_argv: list[str], on_ready: Callable[[str, list[int]], None]
) -> str | None:
    """Serve ``host:port`` from ``count`` workers until SIGINT/SIGTERM; the URL, ``None`` if it could not listen.

    ``worker_argv``: the command that starts one worker (``manage.py up ...``); it finds the
    socket and the readiness pipe in its environment.
    """
    try:
        sock = listen_socket(host, port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", host, port, exc)
        return None
    os.set_inheritable(sock.fileno(), True)
    bound_port = sock.getsockname()[1]
    url = discovery.base_url(host, bound_port)
    stopping = False

    def on_signal(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    workers: list[Worker] = []
    try:
        workers = [_spawn(index, worker_argv, sock.fileno()) for index in range(count)]
        if not _all_ready(workers, lambda: stopping):
            return url if stopping else None
        pids = [w.proc.pid for w in workers]
        discovery.pidfile_write(port=bound_port, url=url, workers=pids)
        on_ready(url, pids)
        quick_deaths = 0
        while not stopping:
            time.sleep(0.2)
            for slot, worker in enumerate(workers):
                code = worker.proc.poll()
                if code is None or stopping:
                    continue
                lived = time.monotonic() - worker.started
                quick_deaths = quick_deaths + 1 if lived < QUICK_DEATH_SEC else 0
                if quick_deaths >= MAX_QUICK_DEATHS:
                    log.error("workers keep dying at start (last exit %s); stopping the hub", code)
                    stopping = True
                    break
                log.warning(
                    "worker %d (pid %d) exited with %s after %.0fs; starting another",
                    slot,
                    worker.proc.pid,
                    code,
                    lived,
                )
                workers[slot] = replacement = _spawn(worker.index, worker_argv, sock.fileno())
                if replacement.ready_fd is not None:  # (the others serve meanwhile: no need to wait for it)
                    os.close(replacement.ready_fd)
                    replacement.ready_fd = None
                discovery.pidfile_write(port=bound_port, url=url, workers=[w.proc.pid for w in workers])
        return url
    finally:
        sock.close()
        _stop_all(workers)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        discovery.pidfile_remove(port=bound_port)


def _spawn(index: int, argv: list[str], listen_fd: int) -> Worker:
    read_end, write_end = os.pipe()
    env = {**os.environ, WORKER_FD_ENV: str(listen_fd), READY_FD_ENV: str(write_end), "ARC_WORKER_INDEX": str(index)}
    # A session of its own: a terminal's Ctrl-C reaches the supervisor alone, which tells each worker once.
    proc = subprocess.Popen(argv, env=env, pass_fds=(listen_fd, write_end), start_new_session=True)
    os.close(write_end)
    return Worker(index=index, proc=proc, started=time.monotonic(), ready_fd=read_end)


def _all_ready(workers: list[Worker], stopping: Callable[[], bool]) -> bool:
    """Wait until every worker said it serves; ``False`` if one died first, the time ran out, or a signal came."""
    deadline = time.monotonic() + READY_TIMEOUT_SEC
    waiting = {w.ready_fd: w for w in workers if w.ready_fd is not None}
    try:
        while waiting and time.monotonic() < deadline and not stopping():
            readable, _, _ = select.select(list(waiting), [], [], 0.2)
            for fd in readable:
                worker = waiting.pop(fd)
                if not os.read(fd, 1):  # the pipe closed without a word: the worker died starting
                    log.error("worker %d exited before it served (exit %s)", worker.index, worker.proc.wait())
                    return False
        return not waiting
    finally:
        for worker in workers:
            if worker.ready_fd is not None:
                os.close(worker.ready_fd)
                worker.ready_fd = None


def _stop_all(workers: list[Worker]) -> None:
    """SIGTERM every worker (each drains: streams told to reconnect, requests answered), then wait; SIGKILL late ones."""
    for worker in workers:
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + DRAIN_SEC + 5
    for worker in workers:
        try:
            worker.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker pid %d did not stop in time; killing it", worker.proc.pid)
            worker.proc.kill()
            worker.proc.wait()
