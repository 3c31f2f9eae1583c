"""Django settings from the environment file the django_app role writes (/etc/<app>/env).

Only the standard library: DATABASE_URL and CACHE_URL are parsed here, so a project
needs neither dj-database-url nor django-environ (both read the same URLs).
"""

import os
from urllib.parse import parse_qsl, unquote, urlsplit


def env_bool(name, default=False):
    return os.environ.get(name, "1" if default else "0").strip().lower() in {"1", "true", "yes", "on"}


def env_list(name):
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def database_from_url(value):
    """postgres://user:password@host:port/name?sslmode=require -> a DATABASES entry.

    A Unix socket directory is the query's host (postgres://app@/app?host=/run/postgresql),
    the form dj-database-url and django-environ read too; the older percent-encoded
    host (postgres://app@%2Frun%2Fpostgresql/app) is still understood.
    """
    url = urlsplit(value)
    if url.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(url.path[1:]) or ":memory:"}
    if url.scheme not in {"postgres", "postgresql", "pgsql"}:
        # Never echo the URL: it may carry a password.
        raise ValueError(f"DATABASE_URL: unknown scheme {url.scheme!r} (postgres:// or sqlite://)")
    options = dict(parse_qsl(url.query))
    hostport = url.netloc.rpartition("@")[2]
    if hostport.startswith("["):  # [IPv6]:port
        host = hostport[1:hostport.index("]")]
    else:
        host = unquote(hostport.split(":", 1)[0])
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(url.path[1:]),
        "USER": unquote(url.username or ""),
        "PASSWORD": unquote(url.password or ""),
        "HOST": host or options.pop("host", ""),
        "PORT": str(url.port or ""),
        "OPTIONS": options,
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
            "BACKEND": "_prodready.cache.TolerantRedisCache",
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
