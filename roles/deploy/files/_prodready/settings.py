"""The settings overlay: the project's own settings, then what the host owns.

With deploy_django_settings: overlay (the default), the deploy role sets, in the
release's .prodready-env, DJANGO_SETTINGS_MODULE=_prodready.settings and
PRODREADY_PROJECT_SETTINGS to the project's own module (deploy_django_settings_module,
or the one manage.py names). That module is imported as it is, with everything it
defines (apps, middleware, templates, its own storages...); then the values of
/etc/<app>/env, written by the django_app role, replace the ones the host owns:
the secret key, debug, host names, the database, the default cache, sessions, where
static and media files live, HTTPS behind Nginx, errors in the journal, Celery's broker when CELERY_BROKER_URL
is set, and an error tracker when SENTRY_DSN is set.
Nothing is written into the project.
"""

import importlib
import os

from _prodready.environment import cache_from_url, database_from_url, env_bool, env_list

_DB_SESSIONS = "django.contrib.sessions.backends.db"  # Django's default

_project = importlib.import_module(os.environ["PRODREADY_PROJECT_SETTINGS"])
globals().update({name: value for name, value in vars(_project).items() if name.isupper()})

SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
DEBUG = env_bool("DJANGO_DEBUG")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

DATABASES = {**globals().get("DATABASES", {}), "default": database_from_url(os.environ["DATABASE_URL"])}
# A project written against SQLite now runs on PostgreSQL: apps with PostgreSQL fields
# (Wagtail's search index) need django.contrib.postgres, which has no models.
_apps = list(globals().get("INSTALLED_APPS", []))
if DATABASES["default"]["ENGINE"].endswith("postgresql") and "django.contrib.postgres" not in _apps:
    INSTALLED_APPS = [*_apps, "django.contrib.postgres"]
if os.environ.get("CACHE_URL"):
    # The host owns where the cache is; the project keeps how it names and times its keys.
    _own = {key: value for key, value in globals().get("CACHES", {}).get("default", {}).items()
            if key in {"KEY_PREFIX", "KEY_FUNCTION", "TIMEOUT", "VERSION"}}
    CACHES = {**globals().get("CACHES", {}), "default": {**_own, **cache_from_url(os.environ["CACHE_URL"])}}
    if env_bool("DJANGO_SESSION_CACHE") and globals().get("SESSION_ENGINE", _DB_SESSIONS) == _DB_SESSIONS:
        # Reads from the cache, writes through to the database: sessions survive a cache
        # outage. A project that chose its session engine keeps it.
        SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# Outside the release, which is read-only: shared by every release, kept across deploys.
STATIC_ROOT = os.environ["DJANGO_STATIC_ROOT"]
MEDIA_ROOT = os.environ["DJANGO_MEDIA_ROOT"]

# HTTPS: Nginx terminates TLS and sets X-Forwarded-Proto (roles/nginx).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", True)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", True)
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS")
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD")

# Django's errors to stderr, which systemd writes to the journal, unless the project
# configures logging itself.
if "LOGGING" not in globals():
    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"journal": {"class": "logging.StreamHandler"}},
        "root": {"handlers": ["journal"], "level": "WARNING"},
        "loggers": {"django": {"handlers": ["journal"], "level": "WARNING", "propagate": False}},
    }

# Celery's broker, when the host has one (django_app_celery_broker_password), for the
# projects that configure Celery from Django's settings (namespace CELERY).
if os.environ.get("CELERY_BROKER_URL"):
    CELERY_BROKER_URL = os.environ["CELERY_BROKER_URL"]

# An error tracker, when the environment names one (django_app_sentry_dsn) and the
# project has its SDK: errors and logged errors go there too, with no personal data.
if os.environ.get("SENTRY_DSN"):
    try:
        import sentry_sdk
    except ImportError:
        sentry_sdk = None
    if sentry_sdk is not None:
        sentry_sdk.init(dsn=os.environ["SENTRY_DSN"], send_default_pii=False)
