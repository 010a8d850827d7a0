"""Arc's file spool, the server's side: find request files, take them, write responses.

Layout and envelopes exactly as Arc's ``FileRelayClient`` writes and reads them
(docs/relay.md)::

    <spool>/requests/<agent>/<request_id>.json   → taken by renaming it to <request_id>.work
    <spool>/responses/<agent>/<request_id>.json  ← written atomically (temp file, then rename)

The spool is append-only, as in Arc: nothing is deleted (some sandbox mounts refuse
deletes). Everything here holds against a hostile spool:

- an agent directory is served only if its name is already what Arc's sanitiser
  makes of an agent id (``[A-Za-z0-9._-]``, not ``.``/``..``), and never through a
  symlink: directories are opened with ``O_NOFOLLOW`` and files relative to them;
- request files that are symlinks are skipped; reads are capped before reading;
- responses are created with ``O_EXCL | O_NOFOLLOW`` inside the opened directory,
  so no name in the spool can make the relay write anywhere else.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def safe_agent_dir(agent_id: str) -> str:
    """The directory name Arc uses for ``agent_id`` (``_safe_agent_id`` in arc.py)."""
    cleaned = _UNSAFE.sub("_", str(agent_id or "").strip())
    return cleaned or "agent"


def is_safe_name(name: str) -> bool:
    return bool(SAFE_NAME.fullmatch(name)) and name not in (".", "..")


def is_one_name(name: str) -> bool:
    """A single, real directory entry name: nothing that names the spool itself or reaches outside it."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\x00" not in name


def iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def error_envelope(request_id: str, status: int, error: str) -> dict[str, Any]:
    """A relay-level error response, shaped like Arc's ``_error_response``.

    ``body`` carries the hub's usual error envelope too, so Arc's ``_RelayTransport``
    (which reads ``body``) and plain readers of ``error`` both see the message.
    """
    return {
        "request_id": request_id,
        "ok": False,
        "status": status,
        "body": {"ok": False, "error": error},
        "completed_at": iso_now(),
        "error": error,
    }


@dataclass(frozen=True)
class Ticket:
    """One request taken from the spool: its agent directory, its id (file stem) and where it now lies.

    ``refusal`` says why the relay will not serve it (an agent directory no Arc client makes):
    it is answered with that error instead, never left waiting unanswered.
    """

    agent_dir: str
    request_id: str
    work_name: str
    refusal: str | None = None


class Spool:
    # Agent directories are listed again only when their modification time changes,
    # and all of them at least this often (for file systems with coarse timestamps).
    FULL_SCAN_SEC = 0.25

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.requests = self.root / "requests"
        self.responses = self.root / "responses"
        self._seen: dict[str, int] = {}  # agent directory → mtime_ns when last listed
        self._full_scan_at = 0.0

    def ensure(self) -> None:
        for path in (self.requests, self.responses):
            path.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                raise OSError(f"{path} is a symlink; the relay does not follow symlinks in its spool")
        # Request files may carry agent keys, and the spool often sits in a project (Arc's default
        # is ./.arc-relay): keep it out of any commit.
        ignore = self.root / ".gitignore"
        if not ignore.exists() and not ignore.is_symlink():
            with contextlib.suppress(OSError):
                ignore.write_text("# The relay's spool: requests may carry agent keys. Never commit it.\n*\n")

    # ── taking requests ─────────────────────────────────────────────────────

    def take_new(self) -> Iterator[Ticket]:
        """Rename each waiting ``*.json`` request to ``*.work`` and yield it (oldest name first per agent).

        A request another relay took first (the rename failed) is skipped, so two relays
        on one spool never serve a request twice.
        """
        now = time.monotonic()
        full = now >= self._full_scan_at
        if full:
            self._full_scan_at = now + self.FULL_SCAN_SEC
        try:
            agents = sorted(
                (entry.name, entry.stat(follow_symlinks=False).st_mtime_ns)
                for entry in os.scandir(self.requests)
                if entry.is_dir(follow_symlinks=False) and is_one_name(entry.name)
            )
        except FileNotFoundError:
            return
        for agent, mtime in agents:
            if not full and self._seen.get(agent) == mtime:
                continue  # nothing was added or renamed there since we last listed it
            self._seen[agent] = mtime
            refusal = None
            if not is_safe_name(agent):
                refusal = (
                    f"the agent directory {agent!r} is not a name Arc's clients make of an agent id "
                    "([A-Za-z0-9._-]); write requests under requests/<sanitised agent id>/"
                )
            with self._agent_dir(self.requests, agent, create=False, strict=refusal is None) as fd:
                if fd is None:
                    continue
                names = sorted(
                    (entry.name, entry.is_symlink())
                    for entry in os.scandir(fd)
                    if entry.name.endswith(".json")
                    and not entry.name.startswith(".")
                    and (entry.is_symlink() or entry.is_file(follow_symlinks=False))
                )
                for name, linked in names:
                    request_id = name[: -len(".json")]
                    work_name = request_id + ".work"
                    try:
                        os.rename(name, work_name, src_dir_fd=fd, dst_dir_fd=fd)  # renames a link, never its target
                    except OSError:
                        continue  # taken by another relay, or vanished
                    why = refusal or (
                        "the request file is a symbolic link; the relay never follows one" if linked else None
                    )
                    yield Ticket(agent, request_id, work_name, why)

    def read(self, ticket: Ticket, limit: int) -> bytes:
        """The request file's bytes; ``ValueError`` past ``limit`` bytes (checked before reading)."""
        with self._agent_dir(self.requests, ticket.agent_dir, create=False) as dir_fd:
            if dir_fd is None:
                raise FileNotFoundError(ticket.agent_dir)
            fd = os.open(ticket.work_name, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dir_fd=dir_fd)
            with os.fdopen(fd, "rb") as handle:
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise ValueError("request is not a regular file")
                if info.st_size > limit:
                    raise OverflowError(
                        f"request body exceeds max size ({limit} bytes): the request file is {info.st_size}"
                    )
                data = handle.read(limit + 1)
                if len(data) > limit:
                    raise OverflowError(f"request body exceeds max size ({limit} bytes)")
                return data

    # ── writing responses ───────────────────────────────────────────────────

    def respond(self, ticket: Ticket, payload: dict[str, Any]) -> None:
        """Write ``responses/<agent>/<request_id>.json`` atomically, never through a symlink."""
        data = json.dumps(payload, ensure_ascii=False, indent=2).encode("utf-8")
        with self._agent_dir(self.responses, ticket.agent_dir, create=True, strict=ticket.refusal is None) as dir_fd:
            if dir_fd is None:
                raise OSError(f"responses/{ticket.agent_dir} is not a directory the relay may write to")
            tmp = f".{ticket.request_id}.json.{uuid.uuid4().hex}.tmp"
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                0o644,
                dir_fd=dir_fd,
            )
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, f"{ticket.request_id}.json", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    @contextlib.contextmanager
    def _agent_dir(self, parent: Path, name: str, *, create: bool, strict: bool = True) -> Iterator[int | None]:
        """An open descriptor of ``parent/name`` if it is a real directory (not a symlink), else ``None``.

        ``strict``: only names in Arc's sanitised form; otherwise any single entry name (to answer
        a request the relay refuses where its agent reads).
        """
        if not (is_safe_name(name) if strict else is_one_name(name)):
            yield None
            return
        try:
            parent_fd = os.open(parent, DIR_FLAGS)
        except OSError:
            yield None
            return
        try:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=parent_fd)
            try:
                fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
            except OSError:  # missing, a symlink (ELOOP) or not a directory
                yield None
                return
            try:
                yield fd
            finally:
                os.close(fd)
        finally:
            os.close(parent_fd)
