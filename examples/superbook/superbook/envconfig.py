"""Turn the environment variables of the settings contract into Django settings.

Only the standard library is used: DATABASE_URL and CACHE_URL are parsed with
urllib.parse, so the app needs no dj-database-url / django-environ dependency.
"""

import os
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

TRUE_VALUES = {"1", "true", "yes", "on"}
FALSE_VALUES = {"0", "false", "no", "off", ""}

# Short timeouts (seconds) for the cache servers: a dead cache must cost a request
# a fraction of a second at most, never the gunicorn worker timeout.
CACHE_CONNECT_TIMEOUT = 0.25
CACHE_SOCKET_TIMEOUT = 0.5


def env_str(name, default=None, environ=None):
    environ = os.environ if environ is None else environ
    value = environ.get(name)
    return default if value is None else value


def env_required(name, environ=None):
    value = env_str(name, environ=environ)
    if value is None or not value.strip():
        raise ImproperlyConfigured(f"The environment variable {name} is required and is empty or unset.")
    return value


def env_bool(name, default=False, environ=None):
    value = env_str(name, environ=environ)
    if value is None:
        return default
    value = value.strip().lower()
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise ImproperlyConfigured(f"{name}={value!r}: expected 0 or 1.")


def env_int(name, default=0, environ=None):
    value = env_str(name, environ=environ)
    if value is None or not value.strip():
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: expected an integer.") from None


def env_list(name, environ=None):
    """Comma-separated list; blanks and empty items are dropped."""
    value = env_str(name, "", environ=environ)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_path(name, default=None, environ=None):
    """An absolute filesystem path, or default when unset/empty."""
    value = env_str(name, environ=environ)
    if value is None or not value.strip():
        return default
    value = value.strip()
    if not os.path.isabs(value):
        raise ImproperlyConfigured(f"{name}={value!r}: expected an absolute path.")
    return value


def _split_hostport(netloc):
    """'user:pw@host:5432' -> 'host' (percent-decoded; IPv6 brackets removed)."""
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):
        return hostport[1 : hostport.index("]")]
    return unquote(hostport.split(":", 1)[0])


def database_from_url(url, conn_max_age=60):
    """DATABASE_URL -> one DATABASES entry.

    postgres://user:password@host:5432/name?sslmode=require  (also postgresql://)
    postgres://user@/name?host=/run/postgresql               (Unix socket directory)
    postgres://user@%2Frun%2Fpostgresql/name                 (the same, older form)
    sqlite:////absolute/path.db   sqlite:///:memory:
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        name = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": name or ":memory:",
            "CONN_MAX_AGE": conn_max_age,
            "CONN_HEALTH_CHECKS": True,
        }
    if scheme in {"postgres", "postgresql", "pgsql"}:
        try:
            port = parts.port
        except ValueError:
            raise ImproperlyConfigured("DATABASE_URL has an invalid port.") from None
        options = dict(parse_qsl(parts.query))
        # Fail fast when the server is unreachable (health checks answer 503 quickly).
        options.setdefault("connect_timeout", "5")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path[1:]),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": _split_hostport(parts.netloc) or options.pop("host", ""),
            "PORT": str(port or ""),
            "OPTIONS": options,
            # Persistent connections, checked before reuse so a restarted PostgreSQL
            # costs one failed check instead of one failed request per worker.
            "CONN_MAX_AGE": conn_max_age,
            "CONN_HEALTH_CHECKS": True,
        }
    # Never echo the URL: it carries the password.
    raise ImproperlyConfigured(
        f"DATABASE_URL: unsupported scheme {scheme!r} (use postgres://, postgresql:// or sqlite://)."
    )


def cache_from_url(url):
    """CACHE_URL -> one CACHES entry whose backend survives an outage of its server.

    redis://[:password@]host:6379/0   rediss://... (TLS)
    memcached://host:11211[,host2:11211]  memcached:///run/memcached/memcached.sock
    locmem://[name]   dummy://
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme in {"redis", "rediss"}:
        return {
            # Django's RedisCache raises when Redis is down; this subclass answers "miss".
            "BACKEND": "superbook.cache.TolerantRedisCache",
            "LOCATION": url.strip(),
            "KEY_PREFIX": "superbook",
            "OPTIONS": {
                "socket_connect_timeout": CACHE_CONNECT_TIMEOUT,
                "socket_timeout": CACHE_SOCKET_TIMEOUT,
            },
        }
    if scheme == "memcached":
        if parts.netloc:
            location = parts.netloc.split(",")
        else:
            location = ["unix:" + parts.path]
        return {
            "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
            "LOCATION": location if len(location) > 1 else location[0],
            "KEY_PREFIX": "superbook",
            "OPTIONS": {
                # pymemcache answers "miss" instead of raising when memcached is down.
                "ignore_exc": True,
                "no_delay": True,
                "connect_timeout": CACHE_CONNECT_TIMEOUT,
                "timeout": CACHE_SOCKET_TIMEOUT,
                "use_pooling": True,
            },
        }
    if scheme == "locmem":
        return {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": parts.netloc or "superbook",
        }
    if scheme == "dummy":
        return {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}
    raise ImproperlyConfigured(
        f"CACHE_URL: unsupported scheme {scheme!r} (use redis://, rediss://, memcached://, locmem:// or dummy://)."
    )


def session_engine(session_in_cache, cache_backend):
    """SESSION_ENGINE for DJANGO_SESSION_CACHE and the configured cache backend.

    DJANGO_SESSION_CACHE=1: sessions live in the cache only (fast, but every user is
    logged out when the cache server dies or is flushed; accepted for the demo).
    Otherwise: cached_db (database-backed, cache-accelerated) with a shared cache
    server, plain db with a per-process cache (locmem/dummy), where cached_db would
    serve stale sessions from one gunicorn worker's memory.
    """
    if session_in_cache:
        return "django.contrib.sessions.backends.cache"
    if cache_backend.endswith(("RedisCache", "PyMemcacheCache")):
        return "django.contrib.sessions.backends.cached_db"
    return "django.contrib.sessions.backends.db"
