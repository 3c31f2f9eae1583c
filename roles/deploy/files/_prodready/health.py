"""The built-in health check: GET or HEAD of PRODREADY_HEALTHCHECK_PATH.

For a project without a health view of its own (deploy_healthcheck_builtin), whatever
its settings. _prodready.wsgi puts it in front of the project's WSGI app, so it
answers before Django's URLs, middleware, host name check and HTTPS redirect: the
gunicorn role checks a new instance through its own socket, and Varnish probes the
live one, both in plain HTTP with a host name of their own. 200 when the app loaded
and its database answers, 503 when the database does not; the cache only reports
"degraded" (the site works without it, slower).
"""

import json
import logging
import uuid

from django.core.cache import cache
from django.db import close_old_connections, connection
from django.urls import get_resolver

logger = logging.getLogger(__name__)


def database_ok():
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception as exc:  # any driver error means "not healthy", never a 500
        logger.warning("health check: database error: %s", exc)
        return False


def cache_ok():
    key, token = f"prodready:health:{uuid.uuid4().hex}", uuid.uuid4().hex
    try:
        cache.set(key, token, 10)
        found = cache.get(key) == token
        cache.delete(key)
        return found
    except Exception as exc:  # a backend that raises on an outage: degraded, not down
        logger.warning("health check: cache error: %s", exc)
        return False


class HealthCheck:
    """WSGI middleware: answers path itself, passes everything else to app."""

    def __init__(self, app, path):
        self.app, self.path = app, path

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != self.path or environ.get("REQUEST_METHOD") not in {"GET", "HEAD"}:
            return self.app(environ, start_response)
        # Outside Django's request cycle: manage the connection the way it would.
        close_old_connections()
        try:
            # Loads the project's URLs once per worker, so the warm-up call of the health
            # path (the gunicorn role's) leaves nothing for the first real request to load.
            get_resolver().url_patterns  # noqa: B018
            database = database_ok()
            body = {
                "status": "ok" if database else "error",
                "database": "ok" if database else "error",
                "cache": "ok" if cache_ok() else "degraded",
            }
        finally:
            close_old_connections()
        data = json.dumps(body).encode()
        start_response("200 OK" if database else "503 Service Unavailable", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(data))), ("Cache-Control", "no-store"),
        ])
        return [data]
