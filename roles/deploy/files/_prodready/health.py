"""The built-in health check: GET or HEAD of PRODREADY_HEALTHCHECK_PATH.

For a project without a health view of its own (deploy_healthcheck_builtin). It
answers 200 when the app loads and its database answers, 503 when the database does
not; the cache only reports "degraded" (the site works without it, slower). It runs
first in the middleware, before the host name check and the HTTPS redirect: the
gunicorn role checks a new instance through its own socket, and Varnish probes the
live one, both in plain HTTP with a host name of their own.
"""

import json
import logging
import os
import uuid

from django.core.cache import cache
from django.db import connection
from django.http import HttpResponse

logger = logging.getLogger(__name__)
PATH = os.environ.get("PRODREADY_HEALTHCHECK_PATH", "")


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


class HealthCheckMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info != PATH or request.method not in {"GET", "HEAD"}:
            return self.get_response(request)
        database = database_ok()
        body = {
            "status": "ok" if database else "error",
            "database": "ok" if database else "error",
            "cache": "ok" if cache_ok() else "degraded",
        }
        response = HttpResponse(json.dumps(body), content_type="application/json", status=200 if database else 503)
        response["Cache-Control"] = "no-store"
        return response
