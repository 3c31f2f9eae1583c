import logging
import os
import socket
import time
import uuid

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .models import Post

logger = logging.getLogger(__name__)

# Seconds a shared cache (Varnish) and browsers may keep anonymous pages.
PUBLIC_MAX_AGE = 60
# Seconds /popular/ keeps its computed summary in the cache backend.
POPULAR_TTL = 30
POPULAR_CACHE_KEY = "posts:popular:v1"


def _cache_headers(request, response):
    """Anonymous pages are public (Varnish caches them); a user's are private."""
    if request.user.is_authenticated:
        patch_cache_control(response, private=True, no_cache=True)
    else:
        patch_cache_control(response, public=True, max_age=PUBLIC_MAX_AGE)
    return response


@require_GET
def home(request):
    # No session write and no CSRF token here: an anonymous response carries no
    # Set-Cookie, so Varnish may cache it. (Reading request.user only adds Vary: Cookie.)
    posts = Post.objects.select_related("author")[:20]
    return _cache_headers(request, render(request, "posts/list.html", {"posts": posts}))


def _popular_summary():
    """Something worth caching: a few aggregate queries over all posts."""
    started = time.perf_counter()
    posts = list(Post.objects.values_list("title", "body"))
    words = sum(len(body.split()) for _title, body in posts)
    longest = max(posts, key=lambda p: len(p[1].split()), default=(None, ""))[0]
    return {
        "count": len(posts),
        "words": words,
        "longest": longest,
        "computed_at": timezone.now(),
        "compute_ms": round((time.perf_counter() - started) * 1000, 2),
    }


@require_GET
def popular(request):
    # get_or_set computes the value when the cache has none, and also when the
    # cache server is down (the tolerant backend answers "miss"): slower, never broken.
    summary = cache.get_or_set(POPULAR_CACHE_KEY, _popular_summary, POPULAR_TTL)
    return _cache_headers(request, render(request, "posts/popular.html", {"summary": summary}))


@login_required
@never_cache
def me(request):
    visits = request.session.get("me_visits", 0) + 1
    request.session["me_visits"] = visits
    response = render(request, "posts/me.html", {"visits": visits})
    patch_cache_control(response, private=True, no_store=True)
    return response


def _database_ok():
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return True
    except DatabaseError as exc:
        logger.error("health check: database unreachable: %s", exc)
        # Drop the broken connection so the next request reconnects.
        connection.close_if_unusable_or_obsolete()
        return False


def _cache_ok():
    key = "healthz:probe:%s" % uuid.uuid4().hex
    token = uuid.uuid4().hex
    try:
        cache.set(key, token, 10)
        ok = cache.get(key) == token
        cache.delete(key)
    except Exception as exc:  # a backend that is not tolerant: report, do not crash
        logger.warning("health check: cache error: %s", exc)
        ok = False
    return ok


@never_cache
@require_GET
def healthz(request):
    database_ok = _database_ok()
    body = {
        "status": "ok" if database_ok else "error",
        "database": "ok" if database_ok else "error",
        "cache": "ok" if _cache_ok() else "degraded",
    }
    response = JsonResponse(body, status=200 if database_ok else 503)
    patch_cache_control(response, no_store=True)
    return response


def current_release():
    """The release this code is: RELEASE file > APP_RELEASE > releases/<name>/ > unknown."""
    release_file = settings.BASE_DIR / "RELEASE"
    try:
        value = release_file.read_text(encoding="utf-8").strip()
    except OSError:
        value = ""
    if value:
        return value
    value = os.environ.get("APP_RELEASE", "").strip()
    if value:
        return value
    if settings.BASE_DIR.parent.name == "releases":
        return settings.BASE_DIR.name
    return "unknown"


@never_cache
@require_GET
def version(request):
    # Which host and Gunicorn instance answered (prodready.django's blue/green instances
    # set PRODREADY_GUNICORN_INSTANCE) and its master process: the deploy tests follow the
    # switch, and on several app hosts which one answered.
    response = JsonResponse({
        "release": current_release(),
        "host": socket.gethostname(),
        "instance": os.environ.get("PRODREADY_GUNICORN_INSTANCE", ""),
        "master_pid": os.getppid(),
    })
    patch_cache_control(response, no_store=True)
    return response
