"""Settings of the SuperBook demo.

Every value that differs between machines comes from the environment (the
settings contract of prodready.django's django_app role, which writes
/etc/<app>/env); nothing here is specific to one server. See README.md.
"""

from pathlib import Path

from .envconfig import (
    cache_from_url,
    database_from_url,
    env_bool,
    env_int,
    env_list,
    env_path,
    env_required,
    env_str,
    session_engine,
)

BASE_DIR = Path(__file__).resolve().parent.parent

# --- Core ----------------------------------------------------------------------
SECRET_KEY = env_required("DJANGO_SECRET_KEY")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "posts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "superbook.urls"
WSGI_APPLICATION = "superbook.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        # APP_DIRS is replaced by the explicit loader list below: templates are
        # compiled once per process (the cached loader), also with DEBUG on.
        "APP_DIRS": False,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            "loaders": [
                (
                    "django.template.loaders.cached.Loader",
                    [
                        "django.template.loaders.filesystem.Loader",
                        "django.template.loaders.app_directories.Loader",
                    ],
                ),
            ],
        },
    },
]

# --- Database: DATABASE_URL -------------------------------------------------------
DATABASES = {
    "default": database_from_url(
        env_required("DATABASE_URL"),
        conn_max_age=env_int("DJANGO_CONN_MAX_AGE", 60),
    ),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache: CACHE_URL; an outage of the cache server is a cache miss, not an error --
CACHES = {"default": cache_from_url(env_str("CACHE_URL", "locmem://"))}

# --- Sessions: DJANGO_SESSION_CACHE=1 keeps them in the cache only -----------------
# (they are lost, i.e. users are logged out, when the cache server dies or restarts
# without persistence: accepted for the demo.)
SESSION_ENGINE = session_engine(
    env_bool("DJANGO_SESSION_CACHE", False),
    CACHES["default"]["BACKEND"],
)

# --- Auth ------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "me"
LOGOUT_REDIRECT_URL = "home"

# --- Internationalization ----------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and media files: nginx serves /static/ from DJANGO_STATIC_ROOT ----------
STATIC_URL = "/static/"
STATIC_ROOT = env_path("DJANGO_STATIC_ROOT")
MEDIA_URL = "/media/"
MEDIA_ROOT = env_path("DJANGO_MEDIA_ROOT", "")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # collectstatic writes site.<hash>.css and staticfiles.json; templates link the
    # hashed names, so nginx may cache /static/ forever and old releases keep theirs.
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
}

# --- HTTPS behind nginx (TLS) -> varnish -> gunicorn ----------------------------------
# nginx sets X-Forwarded-Proto; trust it (gunicorn only listens on loopback).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
USE_X_FORWARDED_HOST = False
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
# Probes (monitoring, load balancer, deploy checks) may call these over plain HTTP
# on loopback: answer them instead of redirecting to https://.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^version$"]
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", True)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", True)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

# --- Celery: CELERY_BROKER_URL (a Redis database of its own) ---------------------------
# Without a broker, tasks run in the calling process (.delay() too): tests, one-off runs.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
# Seconds between two runs of beat's warm_popular (posts/tasks.py).
SUPERBOOK_WARM_SECONDS = env_int("SUPERBOOK_WARM_SECONDS", 60)
CELERY_BEAT_SCHEDULE = {
    "warm-popular": {"task": "posts.tasks.warm_popular", "schedule": float(SUPERBOOK_WARM_SECONDS)},
}

# --- Logging: everything to stderr, which systemd sends to the journal ---------------
LOG_LEVEL = env_str("DJANGO_LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        # No timestamp: the journal adds its own.
        "journal": {"format": "%(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "journal",
        },
    },
    "root": {"handlers": ["stderr"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["stderr"], "level": LOG_LEVEL, "propagate": False},
    },
}
