"""SuperBook's background tasks (Celery)."""

import os
import time

from celery import shared_task
from django.conf import settings
from django.core.cache import cache

from .views import POPULAR_CACHE_KEY, _popular_summary


@shared_task
def warm_popular():
    """Beat's periodic task: computes /popular/'s summary ahead of the visitors, so that
    none of them waits for it. Kept until two runs later."""
    summary = _popular_summary()
    summary["warmed_by"] = "celery"
    cache.set(POPULAR_CACHE_KEY, summary, 2 * settings.SUPERBOOK_WARM_SECONDS)
    return summary["count"]


@shared_task
def long_job(token, max_seconds=300):
    """Stands for a long job (a report, an import): it runs until the cache holds
    long-job:<token>:go (or max_seconds have passed), then records that it finished and
    in which release (the folder its worker started in)."""
    cache.set(f"long-job:{token}:started", time.time(), 3600)
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline and cache.get(f"long-job:{token}:go") is None:
        time.sleep(0.5)
    result = {"finished": time.time(), "release": os.path.basename(os.getcwd()), "pid": os.getpid()}
    cache.set(f"long-job:{token}:done", result, 3600)
    return result
