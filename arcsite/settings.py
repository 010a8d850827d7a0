"""Settings for the Arc hub: one module, driven by typed environment helpers.

Every ``ARC_*`` variable is read and validated here, once, at start. A bad value
raises ``ImproperlyConfigured`` with a message that names the variable, so a
typo fails loudly instead of silently falling back to a default.

Defaults run after a fresh checkout: SQLite (WAL) in ``ARC_HOME`` (a per-user data directory,
``$XDG_DATA_HOME/arc-hub`` or ``~/.local/share/arc-hub``, whatever directory a command runs in),
the in-memory channel layer, loopback only. ``ARC_DATABASE_URL`` switches to
PostgreSQL and ``ARC_REDIS_URL`` to the Redis channel layer.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envstr(name: str, default: str) -> str:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def envint(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be <= {maximum}, got {value}")
    return value


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no, on/off), got {raw!r}")


def envchoice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = envstr(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


# ── Hub configuration (docs/configuration.md) ────────────────────────────────────
def _default_home() -> Path:
    """The per-user data directory: the hub's home must not depend on where a client happens to run."""
    base = envstr("XDG_DATA_HOME", "") or str(Path.home() / ".local" / "share")
    return Path(base) / "arc-hub"


ARC_HOME = Path(envstr("ARC_HOME", str(_default_home()))).expanduser().absolute()
# Commands that are clients of a running hub (`mcp` over HTTP, `post`, `poll`, `whoami`, ...) create
# no hub state: no data directory, no secret key, no database (manage.py says which these are).
ARC_CLIENT_ONLY = envbool("ARC_CLIENT_ONLY", False)
# The SQLite file (Arc's --storage); ignored when ARC_DATABASE_URL names PostgreSQL.
ARC_STORAGE = Path(envstr("ARC_STORAGE", str(ARC_HOME / "arc.sqlite3"))).expanduser().absolute()
ARC_DATABASE_URL = envstr("ARC_DATABASE_URL", "")
ARC_REDIS_URL = envstr("ARC_REDIS_URL", "")
if ARC_REDIS_URL and not ARC_REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(f"ARC_REDIS_URL must be a redis://, rediss:// or unix:// URL, got {ARC_REDIS_URL!r}")
# Worker processes serving the port (`up --workers`): a number, or "auto" for the CPU count.
ARC_WORKERS = envstr("ARC_WORKERS", "1").strip().lower()
if ARC_WORKERS != "auto" and not (ARC_WORKERS.isdigit() and 1 <= int(ARC_WORKERS) <= 64):
    raise ImproperlyConfigured(f"ARC_WORKERS must be a number from 1 to 64 or 'auto', got {ARC_WORKERS!r}")
ARC_HOST = envstr("ARC_HOST", "127.0.0.1")
ARC_PORT = envint("ARC_PORT", 6969, minimum=0, maximum=65535)
ARC_ALLOW_REMOTE = envbool("ARC_ALLOW_REMOTE", False)
# loopback-open: loopback clients without a key act as any agent (Arc's behaviour);
# required: every /v1 request needs an agent key. Remote clients always need one.
ARC_AUTH = envchoice("ARC_AUTH", "loopback-open", ("loopback-open", "required"))


def envrate(name: str, default: str) -> tuple[int, float, int]:
    """``<count>/<seconds>[,<burst>]`` → (count, seconds, burst); ``0`` or ``off`` disables."""
    raw = envstr(name, default)
    if raw.lower() in {"0", "off"}:
        return (0, 1.0, 0)
    try:
        limit, _, burst = raw.partition(",")
        count, _, seconds = limit.partition("/")
        parsed = (int(count), float(seconds or 60), int(burst) if burst else max(1, int(count) // 4))
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"{name} must look like 120/60,30 (posts per seconds, burst) or off, got {raw!r}"
        ) from exc
    if parsed[0] < 0 or parsed[1] <= 0 or parsed[2] < 1:
        raise ImproperlyConfigured(f"{name} needs a positive count, period and burst, got {raw!r}")
    return parsed


# Posts per agent key: 120 per minute with bursts of 30 (docs/access.md).
ARC_RATE_LIMIT = envrate("ARC_RATE_LIMIT", "120/60,30")
ARC_PRESENCE_TTL_SEC = envint("ARC_PRESENCE_TTL_SEC", 120, minimum=5)
# How long the first answer to a request sent with an idempotency key is kept for its retries (24 h).
ARC_IDEMPOTENCY_TTL_SEC = envint("ARC_IDEMPOTENCY_TTL_SEC", 86_400, minimum=60)
ARC_MAX_BODY_CHARS = envint("ARC_MAX_BODY_CHARS", 128_000, minimum=1)
ARC_MAX_ATTACHMENT_CHARS = envint("ARC_MAX_ATTACHMENT_CHARS", 256_000, minimum=1)
ARC_MAX_ATTACHMENTS = envint("ARC_MAX_ATTACHMENTS", 32, minimum=0)
ARC_MAX_QUERY_LIMIT = envint("ARC_MAX_QUERY_LIMIT", 500, minimum=1)
# WebSocket idle handling (/v1/ws): the hub sends a {"type": "ping"} frame after
# ARC_WS_PING_SEC without client frames and closes the socket (4408) after ARC_WS_IDLE_SEC.
ARC_WS_PING_SEC = envint("ARC_WS_PING_SEC", 30, minimum=1)
ARC_WS_IDLE_SEC = envint("ARC_WS_IDLE_SEC", 90, minimum=2)
if ARC_WS_IDLE_SEC <= ARC_WS_PING_SEC:
    raise ImproperlyConfigured(
        f"ARC_WS_IDLE_SEC ({ARC_WS_IDLE_SEC}) must be greater than ARC_WS_PING_SEC ({ARC_WS_PING_SEC})"
    )
# Arc's clients default to ./.arc-relay; so do we, so `ArcClient.over_relay(agent)` works unchanged.
ARC_SPOOL_DIR = Path(envstr("ARC_SPOOL_DIR", str(Path.cwd() / ".arc-relay"))).expanduser().absolute()

# A2A agents elsewhere (docs/a2a.md, outbound): the networks their URLs may lead to besides the public
# internet (loopback, private and link-local targets are refused unless listed here: CIDRs, comma-separated),
# how long a task sent there may take when it names no deadline, how often a failed send is tried, and how
# often their cards are fetched again.
try:
    ARC_A2A_ALLOW_NETWORKS = [
        str(ipaddress.ip_network(item.strip(), strict=False))
        for item in envstr("ARC_A2A_ALLOW_NETWORKS", "").split(",")
        if item.strip()
    ]
except ValueError as exc:
    raise ImproperlyConfigured(f"ARC_A2A_ALLOW_NETWORKS must be CIDRs, comma-separated: {exc}") from exc
ARC_A2A_TIMEOUT_SEC = envint("ARC_A2A_TIMEOUT_SEC", 300, minimum=1)
ARC_A2A_ATTEMPTS = envint("ARC_A2A_ATTEMPTS", 3, minimum=1, maximum=10)
ARC_A2A_CARD_REFRESH_SEC = envint("ARC_A2A_CARD_REFRESH_SEC", 300, minimum=5)
# A2A push notifications (an A2A client's webhook told of its task's changes): off unless switched on; their
# URLs pass the same guard (ARC_A2A_ALLOW_NETWORKS); a failed delivery is tried this often in all.
ARC_A2A_PUSH = envbool("ARC_A2A_PUSH", False)
ARC_A2A_PUSH_ATTEMPTS = envint("ARC_A2A_PUSH_ATTEMPTS", 3, minimum=1, maximum=10)
# A request's line and headers must arrive within ARC_HEADER_TIMEOUT_SEC (the connection is closed
# after) and its body within ARC_BODY_TIMEOUT_SEC (408 after): a stalled or trickling client costs
# a socket, never a worker.
ARC_HEADER_TIMEOUT_SEC = envint("ARC_HEADER_TIMEOUT_SEC", 10, minimum=1)
ARC_BODY_TIMEOUT_SEC = envint("ARC_BODY_TIMEOUT_SEC", 30, minimum=1)
# Arc's request-body hard cap: the largest message a client may legitimately send
# (body + every attachment at its cap) plus 64 KiB of JSON framing.
ARC_MAX_REQUEST_BYTES = ARC_MAX_BODY_CHARS + ARC_MAX_ATTACHMENT_CHARS * ARC_MAX_ATTACHMENTS + 65_536


def home_ensure(home: Path) -> None:
    """Create the data directory (mode 0700), with a ``.gitignore`` that ignores all of it.

    ``ARC_HOME`` may well be set inside someone's repository: nothing the hub keeps there
    (its secret key, its database) may end up in a commit.
    """
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        ignore = home / ".gitignore"
        if not ignore.exists():
            ignore.write_text(
                "# The Arc hub's data: a secret key and a database. Never commit it.\n*\n", encoding="utf-8"
            )
    except OSError as exc:
        raise ImproperlyConfigured(f"ARC_HOME {home} cannot be created: {exc}") from exc


def _secret_key(home: Path) -> str:
    """Read the hub's SECRET_KEY from ARC_HOME, creating it (mode 0600) on first run.

    A client-only command never creates it: it uses the hub's if one exists, else a key of its
    own that lives only in its process (it signs nothing anyone keeps).
    """
    explicit = os.environ.get("DJANGO_SECRET_KEY")
    if explicit:
        return explicit
    path = home / "secret_key"
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    except OSError:
        if not ARC_CLIENT_ONLY:
            raise
    if ARC_CLIENT_ONLY:
        return secrets.token_urlsafe(50)
    home_ensure(home)
    key = secrets.token_urlsafe(50)
    # O_EXCL: if two processes race on first start, one writes and both read the same key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key)
    return key


SECRET_KEY = _secret_key(ARC_HOME)
DEBUG = envbool("ARC_DEBUG", False)


def envlist(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in envstr(name, default).split(",") if item.strip()]


# ── Production (ARC_PRODUCTION=1): the hub behind HTTPS on a real host name ──
# Locally the hub answers any Host on 127.0.0.1 over plain HTTP; who may act is decided
# per request by coordination.core.access (loopback rules, agent keys, remote toggle).
ARC_PRODUCTION = envbool("ARC_PRODUCTION", False)
ALLOWED_HOSTS = envlist("ARC_ALLOWED_HOSTS", "" if ARC_PRODUCTION else "*")
CSRF_TRUSTED_ORIGINS = envlist("ARC_CSRF_TRUSTED_ORIGINS")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if ARC_PRODUCTION:
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured(
            "ARC_PRODUCTION=1 needs ARC_ALLOWED_HOSTS (the hub's public host names, comma-separated)"
        )
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = envbool("ARC_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = envint("ARC_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    if envbool("ARC_BEHIND_PROXY", True):
        # A TLS-terminating proxy in front says the original scheme in X-Forwarded-Proto.
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    # Daphne's app only makes `runserver` serve ASGI (WebSockets included); importing it loads
    # Twisted, half a second of every command, so it is installed for `runserver` alone.
    # `up` (the way to serve the hub) starts Daphne's server itself.
    *(["daphne"] if sys.argv[1:2] == ["runserver"] else []),
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",  # the OpenAPI document at /v1/schema (coordination.api.schema)
    "drf_spectacular_sidecar",  # Swagger UI's files, served by the hub itself (offline)
    "channels",
    "django_htmx",
    "template_partials",  # {% partialdef %}: the dashboard's live regions (built into Django 6 only)
    "arcsite",  # the site: its `up` command starts the hub (arcsite.management.commands.up)
    "coordination",
    "relay",
    "dashboard",
    "gateway",  # A2A: its `a2a` command registers agents elsewhere (gateway.management.commands.a2a)
    "mcpserver",
]

MIDDLEWARE = [
    "arcsite.middleware.ArcEdgeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# /v1/ (the JSON API) runs only this: see arcsite.asgi.ApiASGIHandler.
ARC_API_MIDDLEWARE = ["arcsite.middleware.ArcEdgeMiddleware"]

ROOT_URLCONF = "arcsite.urls"
# The dashboard (docs/dashboard.md): Django auth; `manage.py login` prints a one-time link.
LOGIN_URL = "dashboard:login"
LOGIN_REDIRECT_URL = "dashboard:overview"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "arcsite.asgi.application"


def _database() -> dict[str, Any]:
    if ARC_DATABASE_URL:
        try:
            # Keep the connection (checked before reuse): opening one per request, as Django does by
            # default, costs a PostgreSQL backend's start-up and more of the hub's CPU than the request.
            config: dict[str, Any] = dict(
                dj_database_url.parse(ARC_DATABASE_URL, conn_max_age=None, conn_health_checks=True)
            )
        except Exception as exc:  # dj_database_url raises a bare ValueError-ish for unknown schemes
            raise ImproperlyConfigured(f"ARC_DATABASE_URL is not a usable database URL: {exc}") from exc
        if config.get("ENGINE") != "django.db.backends.postgresql":
            raise ImproperlyConfigured("ARC_DATABASE_URL must be a postgres:// or postgresql:// URL")
        test_name = os.environ.get("ARC_TEST_DATABASE_NAME")
        if test_name:
            config["TEST"] = {"NAME": test_name}
        return config
    if ARC_STORAGE.is_dir():
        raise ImproperlyConfigured(f"ARC_STORAGE must be a file, not a directory: {ARC_STORAGE}")
    if not ARC_CLIENT_ONLY:
        if ARC_STORAGE.parent == ARC_HOME:
            home_ensure(ARC_HOME)
        try:
            ARC_STORAGE.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ImproperlyConfigured(f"cannot create the storage directory {ARC_STORAGE.parent}: {exc}") from exc
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(ARC_STORAGE),
        "OPTIONS": {
            # Busy timeout (seconds) so concurrent writers wait instead of failing;
            # BEGIN IMMEDIATE so a read-then-write transaction never deadlocks on upgrade;
            # WAL + synchronous=NORMAL: readers never block the writer, a commit is one
            # WAL append, and a process crash (kill -9) loses no committed transaction.
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": (
                "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;PRAGMA busy_timeout=20000;PRAGMA foreign_keys=ON"
            ),
        },
        # A file, not :memory:, so tests with real concurrent connections share one database; in
        # this checkout (ignored by git), so that two checkouts' suites never share one.
        "TEST": {"NAME": os.environ.get("ARC_TEST_DATABASE_NAME") or str(BASE_DIR / ".cache" / "test_arc.sqlite3")},
        # Keep the connection: opening one (and running the PRAGMAs) per request costs more
        # than the request. Sync views share one thread under ASGI, so this is one connection.
        "CONN_MAX_AGE": None,
        "CONN_HEALTH_CHECKS": True,
    }


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Each serving process holds one channel in the event group (coordination.core.events), so
# capacity is per process: a burst of posts must not overflow it. A lost event is
# still recovered (readers see the gap in message ids and read the database).
# One Redis may serve several hubs: each hub's keys are prefixed by its database (the same for all of
# its workers, different for another hub's), so two hubs never hear each other's events.
_DATABASE_IDENTITY = DATABASES["default"]["NAME"] + "@" + str(DATABASES["default"].get("HOST", ""))
ARC_REDIS_PREFIX = "arc:" + hashlib.sha256(_DATABASE_IDENTITY.encode()).hexdigest()[:12]
if ARC_REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py waits 5 s on a socket by default, which is exactly how long channels-redis
                # blocks waiting for a message: an idle receive then fails. Give the socket longer.
                "hosts": [{"address": ARC_REDIS_URL, "socket_timeout": 15}],
                "prefix": ARC_REDIS_PREFIX,
                "capacity": 10_000,
                "expiry": 60,
                "group_expiry": 86_400,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 10_000, "expiry": 60}}
    }

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [],  # bodies are parsed by coordination.api.params (any content type, as Arc)
    "EXCEPTION_HANDLER": "coordination.api.errors.arc_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The edge middleware answers 413 before Django reads a body past ARC_MAX_REQUEST_BYTES;
# Django's own cap must not be lower than ours.
DATA_UPLOAD_MAX_MEMORY_SIZE = ARC_MAX_REQUEST_BYTES + 1024

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = ARC_HOME / "static"
# The hub serves /static/ itself, from the installed apps (arcsite.asgi.StaticFiles): no CDN, no collectstatic.

# The API description (coordination.api.schema): Swagger UI at /docs from the sidecar's files, never a CDN.
SPECTACULAR_SETTINGS = {
    "TITLE": "Arc hub API",
    "SCHEMA_PATH_PREFIX": "/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Its deploy check builds a schema with the stock generator, not ours (tests/test_manifest_schema.py checks ours).
    "ENABLE_DJANGO_DEPLOY_CHECK": False,
    # validatorUrl null: Swagger UI would otherwise send the schema to validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None, "displayOperationId": False},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "[arc %(asctime)s] %(levelname)s %(name)s: %(message)s"}},
    "filters": {"client_mistake": {"()": "arcsite.logfilters.ClientMistakeOneLine"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "a2a": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["client_mistake"]},
    },
    "loggers": {
        "arc": {"handlers": ["console"], "level": envstr("ARC_LOG_LEVEL", "INFO"), "propagate": False},
        "django.request": {"handlers": ["console"], "level": "ERROR"},
        # The A2A SDK: its warnings and errors, a client's unparsable request as one line (arcsite.logfilters).
        "a2a": {"handlers": ["a2a"], "level": "WARNING", "propagate": False},
    },
}
