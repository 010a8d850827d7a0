"""Shared fixtures: named agents, the REST client, and live hub processes.

Personas used across the suite:
- ``alice``: an agent that posts tasks and coordinates;
- ``bob``: a worker agent that claims and completes work;
- ``carol``: a second worker, used to prove races have one winner.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from coordination.core import hub as hub_module
from tests.hubproc import Hub, running_hub


def pytest_configure(config: pytest.Config) -> None:
    """The SQLite test database lives in ``.cache/`` of this checkout: make sure the directory exists."""
    from django.conf import settings

    test_name = settings.DATABASES["default"].get("TEST", {}).get("NAME")
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3") and test_name:
        Path(test_name).parent.mkdir(parents=True, exist_ok=True)


class ApiClient:
    """Django's test client speaking Arc JSON, returning ``(status, envelope)``."""

    def __init__(self, key: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = Client(headers=headers)

    def get(self, path: str, **params: Any) -> tuple[int, dict[str, Any]]:
        response = self.client.get(path, params)
        return response.status_code, response.json()

    def post(
        self, path: str, payload: Any = None, *, raw: bytes | str | None = None, content_type: str = "application/json"
    ) -> tuple[int, dict[str, Any]]:
        import json

        body = raw if raw is not None else json.dumps(payload if payload is not None else {})
        response = self.client.post(path, body, content_type=content_type)
        return response.status_code, response.json()

    def delete(self, path: str) -> tuple[int, dict[str, Any]]:
        response = self.client.delete(path)
        return response.status_code, response.json()


class Persona(ApiClient):
    """An ``ApiClient`` holding one agent key: ``agent`` is who it acts as, ``key`` its row, ``secret`` the key."""

    def __init__(self, agent_id: str, **mint: Any) -> None:
        from coordination.core import services

        self.key, self.secret = services.key_mint(agent_id=agent_id, **mint)
        self.agent = agent_id
        super().__init__(key=self.secret)


def staff_client(username: str, *permissions: str) -> Client:
    """A browser signed in as a new staff user (not a superuser) holding these ``coordination`` permissions."""
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user(username, f"{username}@example.com", "pw", is_staff=True)
    user.user_permissions.add(*(Permission.objects.get(codename=codename) for codename in permissions))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def api(db: None) -> ApiClient:
    hub_module.forget_instance_id()
    return ApiClient()


@pytest.fixture
def admin_api(api: ApiClient) -> ApiClient:
    """``root``, holding an admin key: may toggle the network, shut down, mint and revoke keys."""
    from coordination.core import services

    _, plaintext = services.key_mint(agent_id="root", admin=True, label="test admin")
    return ApiClient(key=plaintext)


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> None:
    """Each test gets a fresh database, so the per-process caches start empty too."""
    from coordination.core import access, selectors, services

    access.rate_limiter.reset()
    services.caches_clear()
    selectors.live_agents_changed()


@pytest.fixture
def live_hub(tmp_path: Path) -> Iterator[Hub]:
    """A real hub process (``manage.py up``) on SQLite, or on a fresh PostgreSQL database on the PostgreSQL run."""
    with running_hub(tmp_path / "hub") as hub:
        yield hub


Published = list[tuple[str, dict[str, Any]]]


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> Published:
    """Every event the services publish (recorded when published; sent after commit)."""
    from coordination.core import events

    seen: Published = []
    real = events.publish

    def record(event: str, data: dict[str, Any]) -> None:
        seen.append((event, data))
        real(event, data)

    monkeypatch.setattr(events, "publish", record)
    return seen
