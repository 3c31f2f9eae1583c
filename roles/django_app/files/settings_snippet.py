"""Production settings that read the environment written by prodready.django.django_app.

Copy this file to <project>/settings/production.py (next to base.py) and copy
prodready_cache.py next to manage.py. The service loads /etc/<app>/env with
EnvironmentFile=; for manage.py in a shell run `set -a; . /etc/<app>/env; set +a` first.
No dependency beyond Django (4.2 or later) itself; redis (for redis://) or pymemcache
(for memcached://) only when the cache URL asks for them.
"""

import os
from urllib.parse import parse_qsl, unquote, urlsplit

from .base import *  # noqa: F403  (INSTALLED_APPS, MIDDLEWARE, TEMPLATES... of the project)


def env_bool(name, default=False):
    return os.environ.get(name, "1" if default else "0").strip().lower() in {"1", "true", "yes", "on"}


def env_list(name):
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def database_from_url(value):
    """postgres://user:password@host:port/name?sslmode=require -> a DATABASES entry.

    The host may be a percent-encoded Unix socket directory (%2Frun%2Fpostgresql).
    """
    url = urlsplit(value)
    engines = {
        "postgres": "django.db.backends.postgresql",
        "postgresql": "django.db.backends.postgresql",
        "pgsql": "django.db.backends.postgresql",
        "sqlite": "django.db.backends.sqlite3",
    }
    if url.scheme == "sqlite":
        return {"ENGINE": engines["sqlite"], "NAME": unquote(url.path[1:]) or ":memory:"}
    hostport = url.netloc.rpartition("@")[2]
    if hostport.startswith("["):  # [IPv6]:port
        host = hostport[1:hostport.index("]")]
    else:
        host = hostport.split(":", 1)[0]
    return {
        "ENGINE": engines[url.scheme],
        "NAME": unquote(url.path[1:]),
        "USER": unquote(url.username or ""),
        "PASSWORD": unquote(url.password or ""),
        "HOST": unquote(host),
        "PORT": str(url.port or ""),
        "OPTIONS": dict(parse_qsl(url.query)),
        # Keep connections for a minute, and check them before reuse after an outage.
        "CONN_MAX_AGE": int(os.environ.get("DJANGO_CONN_MAX_AGE", "60")),
        "CONN_HEALTH_CHECKS": True,
    }


def cache_from_url(value):
    """redis://, rediss://, memcached:// or locmem:// -> a CACHES entry that survives an
    outage of the cache server: a miss, never an error page."""
    url = urlsplit(value)
    if url.scheme in {"redis", "rediss"}:
        return {
            # RedisCache raises when Redis is down; this subclass answers "miss" instead.
            "BACKEND": "prodready_cache.TolerantRedisCache",
            "LOCATION": value,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    if url.scheme == "memcached":
        return {
            "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
            "LOCATION": url.netloc,
            "OPTIONS": {"ignore_exc": True, "connect_timeout": 0.5, "timeout": 0.5},
        }
    if url.scheme == "locmem":
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": url.netloc}
    raise ValueError(f"CACHE_URL: unknown scheme {url.scheme!r}")


SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
DEBUG = env_bool("DJANGO_DEBUG")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

DATABASES = {"default": database_from_url(os.environ["DATABASE_URL"])}
CACHES = {"default": cache_from_url(os.environ.get("CACHE_URL", "locmem://"))}
if env_bool("DJANGO_SESSION_CACHE"):
    # Reads from the cache, writes through to the database: sessions survive a cache outage.
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

STATIC_ROOT = os.environ["DJANGO_STATIC_ROOT"]
MEDIA_ROOT = os.environ["DJANGO_MEDIA_ROOT"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed file names: nginx can cache them for a year, and a rollback finds its files.
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
}

# HTTPS: nginx terminates TLS and sets X-Forwarded-Proto (roles/nginx).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", True)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", True)
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS")
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD")

# Templates: with DEBUG off and no "loaders" in TEMPLATES[...]["OPTIONS"], Django wraps the
# loaders in django.template.loaders.cached.Loader by itself; do not set "loaders" here.
