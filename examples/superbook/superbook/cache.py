"""A Redis cache backend that treats an unreachable Redis as an empty cache.

Django's built-in RedisCache raises redis.exceptions.ConnectionError when Redis is
down, which turns every page touching the cache into a 500. TolerantRedisCache
answers as an empty cache would instead (get -> default, set/add/delete -> False,
get_many -> {}, ...), so the site keeps working, slower, until Redis is back.

After a failure the backend does not try Redis again for RETRY_AFTER seconds
(per process and Redis location): a page making many cache calls then pays the
connection timeout once, not once per call, and the journal gets one warning per
outage window instead of one per call.
"""

import functools
import logging
import threading
import time

from django.core.cache.backends.redis import RedisCache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

# What an outage looks like (AuthenticationError and BusyLoadingError are
# ConnectionError subclasses, so a wrong password also degrades instead of failing).
OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)

# Seconds to skip Redis after a failed call.
RETRY_AFTER = 5.0

_down_until = {}  # location -> monotonic time before which Redis is not tried
_down_lock = threading.Lock()


class CacheUnavailable(Exception):
    """Raised internally while the circuit is open."""


def _tolerant(fallback):
    """Wrap a cache method: during an outage, return fallback(*args, **kwargs)."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            try:
                self._check_circuit()
                return method(self, *args, **kwargs)
            except CacheUnavailable:
                pass
            except OUTAGE_ERRORS as exc:
                self._open_circuit(method.__name__, exc)
            return fallback(*args, **kwargs)

        return wrapper

    return decorate


def _incr_fallback(key, delta=1, version=None):
    # Same answer as for a missing key: during an outage every key is missing.
    raise ValueError("Key '%s' not found (cache unavailable)." % key)


class TolerantRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._circuit_key = tuple(self._servers)

    def _check_circuit(self):
        until = _down_until.get(self._circuit_key)
        if until is not None:
            if time.monotonic() < until:
                raise CacheUnavailable
            with _down_lock:
                _down_until.pop(self._circuit_key, None)

    def _open_circuit(self, operation, exc):
        with _down_lock:
            first = self._circuit_key not in _down_until
            _down_until[self._circuit_key] = time.monotonic() + RETRY_AFTER
        if first:
            # No URL in the message: it may carry the Redis password.
            logger.warning(
                "cache %s failed (%s: %s); serving without the cache, next try in %.0fs",
                operation,
                type(exc).__name__,
                exc,
                RETRY_AFTER,
            )

    get = _tolerant(lambda key, default=None, version=None: default)(RedisCache.get)
    get_many = _tolerant(lambda keys, version=None: {})(RedisCache.get_many)
    has_key = _tolerant(lambda key, version=None: False)(RedisCache.has_key)
    add = _tolerant(lambda *args, **kwargs: False)(RedisCache.add)
    set = _tolerant(lambda *args, **kwargs: False)(RedisCache.set)
    set_many = _tolerant(lambda data, *args, **kwargs: list(data))(RedisCache.set_many)
    touch = _tolerant(lambda *args, **kwargs: False)(RedisCache.touch)
    delete = _tolerant(lambda *args, **kwargs: False)(RedisCache.delete)
    delete_many = _tolerant(lambda *args, **kwargs: None)(RedisCache.delete_many)
    incr = _tolerant(_incr_fallback)(RedisCache.incr)
    clear = _tolerant(lambda *args, **kwargs: False)(RedisCache.clear)
