"""ASGI entry point: Django (REST, long-poll, SSE, dashboard) behind the request-size guard.

The WebSocket protocol joins this router with the push work (SPEC section 4).
"""

from __future__ import annotations

import os

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arcsite.settings")

django_app = get_asgi_application()

from coordination.middleware import BodyLimit  # noqa: E402  (needs Django set up first)

application = ProtocolTypeRouter({"http": BodyLimit(django_app)})
