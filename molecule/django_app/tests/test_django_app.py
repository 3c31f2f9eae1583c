"""What a Django app and the deploy role rely on from django_app, checked on the converged
hosts: the user, the layout, the environment file read by systemd and by a shell, and a real
Django project under the deploy role's settings overlay (roles/deploy/files/_prodready)
passing `manage.py check --deploy`."""

import base64
import json
import shlex
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

# The values converge.yml gives the role.
APP = "shop"
ROOT = f"/srv/{APP}"
ENV_FILE = f"/etc/{APP}/env"
SECRET_KEY = "molecule-Sk3y-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJ"
DB_PASSWORD = 'p@ss:w/rd "x" $y #z'
TRICKY = "two  spaces \"double\" 'single' $HOME ${USER} #not-a-comment back\\slash `uname` end"
OVERLAY = Path(__file__).resolve().parents[3] / "roles" / "deploy" / "files" / "_prodready"
VENV = "/opt/prodready-django-check"
PROJECT = "/opt/prodready-django-check-project"


def as_user(user, script):
    """`script` run by /bin/sh as `user` (the app user has no login shell)."""
    return f"runuser -u {user} -- /bin/sh -c {shlex.quote(script)}"


def shell_env(host, name, user=APP):
    """A variable as a POSIX shell sees it after `set -a; . env`."""
    script = f'set -a; . {ENV_FILE}; set +a; printf "%s" "${name}"'
    return host.check_output(as_user(user, script))


def systemd_env(host, name):
    """A variable as a systemd service with EnvironmentFile= sees it."""
    out = f"/tmp/prodready-envtest-{name}.out"
    unit = f"prodready-envtest-{name.lower().replace('_', '-')}"
    host.run(f"rm -f {out}; systemctl reset-failed {unit} 2>/dev/null")
    host.check_output(
        f"systemd-run --unit={unit} --collect --property=EnvironmentFile={ENV_FILE} --property=User={APP}"
        f" --property=StandardOutput=file:{out} /usr/bin/printenv {name}"
    )
    for _ in range(50):
        if host.run(f"systemctl is-active -q {unit}").rc != 0 and host.file(out).exists:
            break
        host.run("sleep 0.1")
    return host.file(out).content_string.rstrip("\n")


def test_app_user_has_no_login_shell(host):
    user = host.user(APP)
    assert user.exists
    assert user.shell == "/usr/sbin/nologin"
    assert user.home == ROOT
    assert user.group == APP
    assert user.uid < 1000, "a system user"


@pytest.mark.parametrize(
    "path, owner, group, mode",
    [
        (ROOT, "root", APP, 0o755),
        (f"{ROOT}/releases", "root", APP, 0o750),
        (f"{ROOT}/shared", "root", APP, 0o755),
        (f"{ROOT}/shared/static", APP, APP, 0o755),
        (f"{ROOT}/shared/media", APP, "www-data", 0o2755),
        (f"{ROOT}/shared/log", APP, APP, 0o750),
        (f"/etc/{APP}", "root", APP, 0o750),
    ],
)
def test_layout(host, path, owner, group, mode):
    d = host.file(path)
    assert d.is_directory
    assert (d.user, d.group, d.mode) == (owner, group, mode)
    assert not host.file(f"{ROOT}/current").exists, "`current` is the deploy role's"


def test_app_writes_media_and_logs_nginx_reads_static_and_media(host):
    # Gunicorn's UMask=0027, and a new directory below the media root, as Django's storage makes one.
    host.check_output(as_user(APP, f"umask 0027 && mkdir -p {ROOT}/shared/media/up/2026 && "
                                   f"echo nested > {ROOT}/shared/media/up/2026/n.txt"))
    assert host.check_output(as_user("www-data", f"cat {ROOT}/shared/media/up/2026/n.txt")) == "nested"
    host.check_output(as_user(APP, f"echo upload > {ROOT}/shared/media/t.txt && echo log > {ROOT}/shared/log/t.log"))
    host.check_output(as_user(APP, f"echo 'body{{}}' > {ROOT}/shared/static/t.css"))
    assert host.check_output(as_user("www-data", f"cat {ROOT}/shared/static/t.css")) == "body{}"
    assert host.check_output(as_user("www-data", f"cat {ROOT}/shared/media/t.txt")) == "upload"
    assert host.run(as_user("www-data", f"cat {ROOT}/shared/log/t.log")).rc != 0
    assert host.run(as_user(APP, f"touch {ROOT}/releases/x")).rc != 0, "code is not writable by the app"
    assert host.run(as_user(APP, f"touch {ENV_FILE}")).rc != 0


def test_packages_to_build_and_run_django(host):
    for package in ["python3", "python3-venv", "python3-dev", "build-essential", "libpq-dev", "git"]:
        assert host.package(package).is_installed, package
    host.check_output("python3 -m venv /tmp/prodready-venv-test && /tmp/prodready-venv-test/bin/python -c 'import ssl'")
    host.run("rm -rf /tmp/prodready-venv-test")


def test_env_file_is_private_to_the_app(host):
    env = host.file(ENV_FILE)
    assert (env.user, env.group, env.mode) == ("root", APP, 0o640)
    assert shell_env(host, "DJANGO_SECRET_KEY") == SECRET_KEY
    denied = host.run(as_user("nobody", f"cat {ENV_FILE}"))
    assert denied.rc != 0 and SECRET_KEY not in denied.stdout
    assert host.run(as_user("www-data", f"cat {ENV_FILE}")).rc != 0


def test_env_file_holds_the_settings_contract(host):
    expected = {
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "shop.example.com,www.shop.example.com",
        "DJANGO_CSRF_TRUSTED_ORIGINS": "https://shop.example.com",
        "CACHE_URL": "redis://:redis-pass@127.0.0.1:6379/0",
        "REDIS_URL": "redis://:redis-pass@127.0.0.1:6379/0",
        "DJANGO_SESSION_CACHE": "1",
        "DJANGO_STATIC_ROOT": f"{ROOT}/shared/static",
        "DJANGO_MEDIA_ROOT": f"{ROOT}/shared/media",
        "DJANGO_SECURE_SSL_REDIRECT": "1",
        "DJANGO_SESSION_COOKIE_SECURE": "1",
        "DJANGO_CSRF_COOKIE_SECURE": "1",
        "DJANGO_SECURE_HSTS_SECONDS": "31536000",
        "SENTRY_ENVIRONMENT": "molecule",
    }
    assert {name: shell_env(host, name) for name in expected} == expected
    url = urlsplit(shell_env(host, "DATABASE_URL"))
    assert (url.scheme, url.hostname, url.port, url.path) == ("postgres", "127.0.0.1", 5432, "/shop")
    assert (unquote(url.username), unquote(url.password)) == (APP, DB_PASSWORD)


@pytest.mark.parametrize("name, value", [("PRODREADY_TRICKY", TRICKY), ("DJANGO_SECRET_KEY", SECRET_KEY)])
def test_special_characters_survive_systemd_and_shell(host, name, value):
    assert systemd_env(host, name) == value
    assert shell_env(host, name) == value


def test_local_fact_has_the_layout_and_no_secret(host):
    fact = host.file("/etc/ansible/facts.d/prodready_django_app.fact")
    assert fact.mode == 0o644
    text = fact.content_string
    for secret in (SECRET_KEY, DB_PASSWORD, "redis-pass", "p%40ss"):
        assert secret not in text
    facts = json.loads(text)
    assert facts["root"] == ROOT and facts["current"] == f"{ROOT}/current"
    assert facts["releases"] == f"{ROOT}/releases" and facts["env_file"] == ENV_FILE
    assert facts["static_root"] == f"{ROOT}/shared/static" and facts["user"] == APP


# --- A real Django project under the settings overlay --------------------------------
# A project that knows nothing of the environment file: its settings are a package with
# a base module, and the overlay the deploy role puts into each release sets the rest.

BASE_SETTINGS = """
BASE_DIR = __import__("pathlib").Path(__file__).resolve().parent.parent
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.sessions",
                  "django.contrib.messages", "django.contrib.staticfiles"]
MIDDLEWARE = ["django.middleware.security.SecurityMiddleware",
              "django.contrib.sessions.middleware.SessionMiddleware",
              "django.middleware.common.CommonMiddleware",
              "django.middleware.csrf.CsrfViewMiddleware",
              "django.contrib.auth.middleware.AuthenticationMiddleware",
              "django.contrib.messages.middleware.MessageMiddleware",
              "django.middleware.clickjacking.XFrameOptionsMiddleware"]
ROOT_URLCONF = "proj.urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [], "APP_DIRS": True,
              "OPTIONS": {"context_processors": ["django.template.context_processors.request"]}}]
STATIC_URL = "static/"
MEDIA_URL = "media/"
STATIC_ROOT = BASE_DIR / "static"
STORAGES = {"default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"}}
SECRET_KEY = "django-insecure-of-the-project"
DEBUG = True
ALLOWED_HOSTS = ["*"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
"""

URLS = """
from django.http import HttpResponse
from django.urls import path
urlpatterns = [path("", lambda request: HttpResponse("ok"))]
"""

MANAGE = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings.base")
from django.core.management import execute_from_command_line
execute_from_command_line(sys.argv)
"""

PROBE = """
import json
from django.conf import settings
from django.core.cache import cache
from django.core.cache.backends.redis import RedisCache
from django.template import engines
from django.test import Client
from redis.exceptions import ConnectionError

cache.set("k", "v")  # nothing listens on 127.0.0.1:6379: an outage
result = {"cached": cache.get("k", "fallback"), "get_or_set": cache.get_or_set("g", "computed")}
plain = RedisCache(settings.CACHES["default"]["LOCATION"], {})
try:
    plain.get("k")
    result["plain_redis_raises"] = False
except ConnectionError:
    result["plain_redis_raises"] = True
result["loaders"] = [type(loader).__module__ + "." + type(loader).__name__
                     for loader in engines["django"].engine.template_loaders]
result["database"] = settings.DATABASES["default"]
result["session_engine"] = settings.SESSION_ENGINE
result["staticfiles"] = settings.STORAGES["staticfiles"]["BACKEND"]
client = Client()
plain_http = client.get("/", HTTP_HOST="shop.example.com")
https = client.get("/", HTTP_HOST="shop.example.com", HTTP_X_FORWARDED_PROTO="https")
other = client.get("/", HTTP_HOST="evil.example.net", HTTP_X_FORWARDED_PROTO="https")
result["http"] = [plain_http.status_code, plain_http.get("Location")]
result["https"] = [https.status_code, https.content.decode(), https.get("Strict-Transport-Security")]
result["other_host"] = other.status_code
# The built-in health check in front of the WSGI app, over plain HTTP with any host name:
# no PostgreSQL and no Redis here.
from wsgiref.util import setup_testing_defaults
from _prodready.wsgi import application
environ = {"PATH_INFO": "/healthz", "HTTP_HOST": "10.0.0.1:8001"}
setup_testing_defaults(environ)
answer = []
body = b"".join(application(environ, lambda status, headers: answer.append(status)))
result["health"] = [answer[0], json.loads(body)]
result["own"] = {"debug": settings.DEBUG, "static_root": str(settings.STATIC_ROOT),
                 "secret_is_the_hosts": settings.SECRET_KEY != "django-insecure-of-the-project"}
print("RESULT" + json.dumps(result))
"""


def put(host, path, text, mode="0644"):
    data = base64.b64encode(text.encode()).decode()
    host.check_output(f"install -d -m 0755 $(dirname {path}) && echo {data} | base64 -d > {path} && chmod {mode} {path}")


@pytest.fixture(scope="module")
def project(host):
    """Django, redis and psycopg in a venv (pip trusts the test bed's proxy through the common
    role's CA certificates), and a project with the deploy role's _prodready package beside manage.py."""
    if not host.file(f"{VENV}/bin/django-admin").exists:
        host.check_output(f"python3 -m venv {VENV}")
        pip = host.run(f"{VENV}/bin/pip install --disable-pip-version-check -q 'django>=4.2' redis 'psycopg[binary]'")
        assert pip.rc == 0, pip.stdout + pip.stderr
    put(host, f"{PROJECT}/manage.py", MANAGE)
    put(host, f"{PROJECT}/proj/__init__.py", "")
    put(host, f"{PROJECT}/proj/urls.py", URLS)
    put(host, f"{PROJECT}/proj/settings/__init__.py", "")
    put(host, f"{PROJECT}/proj/settings/base.py", BASE_SETTINGS)
    for module in OVERLAY.glob("*.py"):
        put(host, f"{PROJECT}/_prodready/{module.name}", module.read_text())
    return PROJECT


def manage(host, *args):
    """manage.py as the app user, with the environment file loaded by a shell and the
    settings module the deploy role writes into a release's .prodready-env."""
    script = (f"set -a; . {ENV_FILE}; DJANGO_SETTINGS_MODULE=_prodready.settings "
              f"PRODREADY_PROJECT_SETTINGS=proj.settings.base "
              f"PRODREADY_HEALTHCHECK_PATH=/healthz; set +a; cd {PROJECT} && {VENV}/bin/python manage.py ")
    script += " ".join(
        shlex.quote(a) for a in args
    )
    return host.run(as_user(APP, script))


def test_check_deploy_finds_no_issue(host, project):
    result = manage(host, "check", "--deploy", "--fail-level", "WARNING")
    assert result.rc == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_settings_overlay_sets_what_the_host_owns(host, project):
    result = manage(host, "shell", "-c", PROBE)
    assert result.rc == 0, result.stdout + result.stderr
    probe = json.loads(result.stdout.split("RESULT", 1)[1])
    # The cache ignores its own outage: a miss, not an error page; Django's own backend raises.
    assert probe["cached"] == "fallback" and probe["get_or_set"] == "computed"
    assert probe["plain_redis_raises"] is True
    assert probe["loaders"] == ["django.template.loaders.cached.Loader"]
    db = probe["database"]
    assert (db["ENGINE"], db["HOST"], db["PORT"], db["NAME"]) == ("django.db.backends.postgresql", "127.0.0.1", "5432", "shop")
    assert (db["USER"], db["PASSWORD"]) == (APP, DB_PASSWORD)
    assert db["CONN_MAX_AGE"] > 0 and db["CONN_HEALTH_CHECKS"] is True
    assert probe["session_engine"] == "django.contrib.sessions.backends.cached_db"
    assert probe["staticfiles"].endswith("ManifestStaticFilesStorage")
    # Requests: plain HTTP is redirected, HTTPS is answered with HSTS, other hosts are refused.
    assert probe["http"] == [301, "https://shop.example.com/"]
    assert probe["https"] == [200, "ok", "max-age=31536000; includeSubDomains; preload"]
    assert probe["other_host"] == 400
    # What the host owns replaces the project's values; the health check needs no host name.
    assert probe["own"] == {"debug": False, "static_root": f"{ROOT}/shared/static", "secret_is_the_hosts": True}
    assert probe["health"] == ["503 Service Unavailable", {"status": "error", "database": "error", "cache": "degraded"}]
