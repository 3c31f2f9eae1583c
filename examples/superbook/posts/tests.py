"""Tests of the SuperBook demo.

Run from examples/superbook with, for instance:
    DJANGO_SECRET_KEY=test DATABASE_URL=sqlite:////tmp/superbook-test.db CACHE_URL=locmem:// \
        python manage.py test
"""

import io
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

from django.contrib.auth import get_user_model
from django.core.cache import cache, caches
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError
from django.test import SimpleTestCase, TestCase, override_settings

from superbook import cache as tolerant_cache
from superbook.envconfig import cache_from_url, database_from_url, env_bool, env_list, session_engine

from .models import Post
from .views import POPULAR_CACHE_KEY

SEEDED_TITLES = ["Welcome to SuperBook", "Cached for everyone", "Still up when the cache is down"]

# The production storage needs `collectstatic` first; most tests use the plain one.
PLAIN_STATIC = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# A Redis that is not there: port 1 on loopback refuses connections at once.
DEAD_REDIS = {
    "default": {
        "BACKEND": "superbook.cache.TolerantRedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.5},
    }
}
DEAD_MEMCACHED = {"default": cache_from_url("memcached://127.0.0.1:1")}
LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "tests"}}


def reset_circuit():
    tolerant_cache._down_until.clear()


@override_settings(STORAGES=PLAIN_STATIC, SECURE_SSL_REDIRECT=False, CACHES=LOCMEM)
class AppTestCase(TestCase):
    def setUp(self):
        cache.clear()
        reset_circuit()


class EnvConfigTests(SimpleTestCase):
    def test_postgres_url(self):
        db = database_from_url("postgres://app:p%40ss@127.0.0.1:5432/superbook?sslmode=require", conn_max_age=60)
        self.assertEqual(db["ENGINE"], "django.db.backends.postgresql")
        self.assertEqual(
            (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]),
            ("superbook", "app", "p@ss", "127.0.0.1", "5432"),
        )
        self.assertEqual(db["OPTIONS"]["sslmode"], "require")
        self.assertEqual(db["CONN_MAX_AGE"], 60)
        self.assertIs(db["CONN_HEALTH_CHECKS"], True)

    def test_postgresql_scheme_and_unix_socket(self):
        db = database_from_url("postgresql://django@%2Frun%2Fpostgresql:5432/django")
        self.assertEqual((db["HOST"], db["PORT"], db["USER"], db["PASSWORD"]), ("/run/postgresql", "5432", "django", ""))

    def test_unix_socket_in_the_query(self):
        db = database_from_url("postgres://superbook@/superbook?host=/run/postgresql")
        self.assertEqual((db["HOST"], db["PORT"], db["NAME"]), ("/run/postgresql", "", "superbook"))
        self.assertNotIn("host", db["OPTIONS"])

    def test_ipv6_host(self):
        self.assertEqual(database_from_url("postgres://u:p@[::1]:5433/d")["HOST"], "::1")

    def test_sqlite_url(self):
        db = database_from_url("sqlite:////var/lib/app/db.sqlite3")
        self.assertEqual((db["ENGINE"], db["NAME"]), ("django.db.backends.sqlite3", "/var/lib/app/db.sqlite3"))

    def test_unknown_database_scheme(self):
        with self.assertRaises(ImproperlyConfigured) as raised:
            database_from_url("mysql://root:secret@db/x")
        self.assertNotIn("secret", str(raised.exception))

    def test_redis_cache_url(self):
        conf = cache_from_url("redis://:secret@127.0.0.1:6379/0")
        self.assertEqual(conf["BACKEND"], "superbook.cache.TolerantRedisCache")
        self.assertEqual(conf["LOCATION"], "redis://:secret@127.0.0.1:6379/0")
        self.assertLessEqual(conf["OPTIONS"]["socket_connect_timeout"], 0.5)
        self.assertLessEqual(conf["OPTIONS"]["socket_timeout"], 0.5)

    def test_memcached_cache_url(self):
        conf = cache_from_url("memcached://127.0.0.1:11211")
        self.assertEqual(conf["BACKEND"], "django.core.cache.backends.memcached.PyMemcacheCache")
        self.assertEqual(conf["LOCATION"], "127.0.0.1:11211")
        self.assertIs(conf["OPTIONS"]["ignore_exc"], True)
        self.assertIs(conf["OPTIONS"]["no_delay"], True)
        self.assertEqual(cache_from_url("memcached:///run/memcached/memcached.sock")["LOCATION"], "unix:/run/memcached/memcached.sock")

    def test_locmem_cache_url(self):
        self.assertEqual(cache_from_url("locmem://")["BACKEND"], "django.core.cache.backends.locmem.LocMemCache")

    def test_unknown_cache_scheme(self):
        with self.assertRaises(ImproperlyConfigured):
            cache_from_url("mongodb://x")

    def test_session_engine(self):
        redis_backend = "superbook.cache.TolerantRedisCache"
        locmem_backend = "django.core.cache.backends.locmem.LocMemCache"
        self.assertEqual(session_engine(True, redis_backend), "django.contrib.sessions.backends.cache")
        self.assertEqual(session_engine(False, redis_backend), "django.contrib.sessions.backends.cached_db")
        self.assertEqual(session_engine(False, locmem_backend), "django.contrib.sessions.backends.db")

    def test_env_helpers(self):
        self.assertEqual(env_list("X", environ={"X": " a.test, ,b.test "}), ["a.test", "b.test"])
        self.assertIs(env_bool("X", environ={"X": "1"}), True)
        self.assertIs(env_bool("X", environ={"X": "0"}), False)
        self.assertIs(env_bool("X", True, environ={}), True)
        with self.assertRaises(ImproperlyConfigured):
            env_bool("X", environ={"X": "maybe"})


class HomeTests(AppTestCase):
    def test_lists_seeded_posts(self):
        response = self.client.get("/")
        self.assertEqual(response.status_code, 200)
        for title in SEEDED_TITLES:
            self.assertContains(response, title)
        self.assertEqual(Post.objects.count(), 3)

    def test_anonymous_home_is_cacheable(self):
        response = self.client.get("/")
        cache_control = response["Cache-Control"]
        self.assertIn("public", cache_control)
        self.assertIn("max-age=60", cache_control)
        self.assertNotIn("private", cache_control)
        self.assertFalse(response.cookies, "an anonymous page must not set cookies")
        self.assertNotIn("Set-Cookie", response)
        self.assertNotIn("csrfmiddlewaretoken", response.content.decode())

    def test_home_for_a_user_is_private(self):
        user = get_user_model().objects.create_user("carol", password="a-long-test-password")
        self.client.force_login(user)
        response = self.client.get("/")
        self.assertIn("private", response["Cache-Control"])
        self.assertContains(response, "carol")

    def test_static_link_is_hashed_after_collectstatic(self):
        with tempfile.TemporaryDirectory() as static_root:
            manifest = {
                "default": PLAIN_STATIC["default"],
                "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
            }
            with override_settings(STATIC_ROOT=static_root, STORAGES=manifest):
                call_command("collectstatic", interactive=False, verbosity=0)
                hashed = [p.name for p in (Path(static_root) / "posts").glob("site.*.css")]
                self.assertEqual(len(hashed), 1, hashed)
                response = self.client.get("/")
                self.assertContains(response, "/static/posts/%s" % hashed[0])


class LoginAndSessionTests(AppTestCase):
    password = "correct-horse-battery-staple"

    def setUp(self):
        super().setUp()
        self.user = get_user_model().objects.create_user("alice", password=self.password)

    def test_login_page_renders(self):
        response = self.client.get("/accounts/login/")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, 'name="password"')

    def test_me_requires_login(self):
        response = self.client.get("/me/")
        self.assertEqual(response.status_code, 302)
        self.assertTrue(response["Location"].startswith("/accounts/login/"))

    def test_login_then_session_counter_increases(self):
        response = self.client.post("/accounts/login/", {"username": "alice", "password": self.password})
        self.assertRedirects(response, "/me/", fetch_redirect_response=False)
        self.assertIn("sessionid", response.cookies)
        for expected in (1, 2, 3):
            response = self.client.get("/me/")
            self.assertEqual(response.status_code, 200)
            self.assertContains(response, "alice")
            self.assertContains(response, '<strong id="visits">%d</strong>' % expected, html=False)
            cache_control = response["Cache-Control"]
            self.assertIn("private", cache_control)
            self.assertIn("no-store", cache_control)

    def test_wrong_password_is_refused(self):
        response = self.client.post("/accounts/login/", {"username": "alice", "password": "nope"})
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "did not match")

    def test_logout_is_post(self):
        self.client.force_login(self.user)
        response = self.client.post("/accounts/logout/")
        self.assertRedirects(response, "/", fetch_redirect_response=False)
        self.assertEqual(self.client.get("/me/").status_code, 302)

    @override_settings(SESSION_ENGINE="django.contrib.sessions.backends.cache")
    def test_sessions_in_the_cache(self):
        self.client.post("/accounts/login/", {"username": "alice", "password": self.password})
        self.assertContains(self.client.get("/me/"), '<strong id="visits">1</strong>')
        session_key = self.client.cookies["sessionid"].value
        self.assertTrue(cache.has_key("django.contrib.sessions.cache" + session_key))


class HealthTests(AppTestCase):
    def test_healthz_ok(self):
        response = self.client.get("/healthz")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"status": "ok", "database": "ok", "cache": "ok"})
        self.assertIn("no-store", response["Cache-Control"])

    @override_settings(CACHES=DEAD_REDIS)
    def test_healthz_with_redis_down_is_degraded_but_up(self):
        started = time.monotonic()
        with self.assertLogs("superbook.cache", "WARNING"):
            response = self.client.get("/healthz")
        self.assertLess(time.monotonic() - started, 3)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"status": "ok", "database": "ok", "cache": "degraded"})

    @override_settings(CACHES=DEAD_MEMCACHED)
    def test_healthz_with_memcached_down_is_degraded_but_up(self):
        response = self.client.get("/healthz")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["cache"], "degraded")

    def test_healthz_with_database_down_is_503(self):
        broken = mock.Mock()
        broken.cursor.side_effect = OperationalError("connection refused")
        with mock.patch("posts.views.connection", broken), self.assertLogs("posts.views", "ERROR"):
            with self.assertLogs("django.request", "ERROR"):  # the 503 is logged
                response = self.client.get("/healthz")
        self.assertEqual(response.status_code, 503)
        self.assertEqual(response.json()["database"], "error")
        self.assertIn("no-store", response["Cache-Control"])

    @override_settings(SECURE_SSL_REDIRECT=True)
    def test_probes_are_not_redirected_to_https(self):
        self.assertEqual(self.client.get("/healthz").status_code, 200)
        self.assertEqual(self.client.get("/version").status_code, 200)
        self.assertEqual(self.client.get("/").status_code, 301)
        self.assertEqual(self.client.get("/", headers={"X-Forwarded-Proto": "https"}).status_code, 200)


class PopularTests(AppTestCase):
    def test_popular_is_cached(self):
        response = self.client.get("/popular/")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, '<dd id="post-count">3</dd>', html=False)
        self.assertEqual(cache.get(POPULAR_CACHE_KEY)["count"], 3)
        Post.objects.create(title="New", body="one two three")
        # Still the cached summary until it expires.
        self.assertContains(self.client.get("/popular/"), '<dd id="post-count">3</dd>', html=False)

    @override_settings(CACHES=DEAD_REDIS)
    def test_popular_works_with_the_cache_down(self):
        logging.disable(logging.WARNING)  # the outage warning is tested elsewhere
        self.addCleanup(logging.disable, logging.NOTSET)
        for _ in range(2):
            with self.assertNoLogs("django.request", "ERROR"):
                response = self.client.get("/popular/")
            self.assertEqual(response.status_code, 200)
            self.assertContains(response, '<dd id="post-count">3</dd>', html=False)

    @override_settings(CACHES=DEAD_MEMCACHED)
    def test_popular_works_with_memcached_down(self):
        response = self.client.get("/popular/")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, '<dd id="post-count">3</dd>', html=False)


@override_settings(CACHES=DEAD_REDIS)
class TolerantRedisCacheTests(SimpleTestCase):
    def setUp(self):
        reset_circuit()
        self.cache = caches["default"]

    def tearDown(self):
        reset_circuit()

    def test_operations_answer_as_an_empty_cache(self):
        c = self.cache
        logging.disable(logging.WARNING)
        self.addCleanup(logging.disable, logging.NOTSET)
        self.assertIsNone(c.get("k"))
        self.assertEqual(c.get("k", "fallback"), "fallback")
        self.assertFalse(c.set("k", 1))
        self.assertFalse(c.add("k", 1))
        self.assertFalse(c.has_key("k"))
        self.assertFalse(c.delete("k"))
        self.assertFalse(c.touch("k"))
        self.assertEqual(c.get_many(["a", "b"]), {})
        self.assertEqual(sorted(c.set_many({"a": 1, "b": 2})), ["a", "b"])
        c.delete_many(["a", "b"])
        c.clear()
        with self.assertRaises(ValueError):
            c.incr("counter")
        with self.assertRaises(ValueError):
            c.decr("counter")
        self.assertEqual(c.get_or_set("k", lambda: "computed"), "computed")

    def test_first_failure_is_logged_then_redis_is_skipped(self):
        with self.assertLogs("superbook.cache", "WARNING") as logs:
            self.cache.get("k")
            started = time.monotonic()
            for _ in range(50):
                self.assertIsNone(self.cache.get("k"))
            self.assertLess(time.monotonic() - started, 0.5)
        self.assertEqual(len(logs.records), 1)

    def test_retries_after_the_window(self):
        with self.assertLogs("superbook.cache", "WARNING") as logs:
            self.cache.get("k")
            later = time.monotonic() + tolerant_cache.RETRY_AFTER + 1
            with mock.patch.object(tolerant_cache.time, "monotonic", return_value=later):
                self.cache.get("k")  # tries Redis again, fails again, logs again
        self.assertEqual(len(logs.records), 2)


class VersionTests(AppTestCase):
    def get_release(self):
        response = self.client.get("/version")
        self.assertEqual(response.status_code, 200)
        self.assertIn("no-store", response["Cache-Control"])
        return json.loads(response.content)["release"]

    def test_release_file_wins(self):
        with tempfile.TemporaryDirectory() as base:
            Path(base, "RELEASE").write_text("20250101T120000-abc1234\n")
            with override_settings(BASE_DIR=Path(base)), mock.patch.dict(os.environ, {"APP_RELEASE": "from-env"}):
                self.assertEqual(self.get_release(), "20250101T120000-abc1234")

    def test_app_release_env(self):
        with tempfile.TemporaryDirectory() as base:
            with override_settings(BASE_DIR=Path(base)), mock.patch.dict(os.environ, {"APP_RELEASE": "from-env"}):
                self.assertEqual(self.get_release(), "from-env")

    def test_release_directory_name(self):
        with tempfile.TemporaryDirectory() as root:
            release_dir = Path(root, "releases", "20250102T000000")
            release_dir.mkdir(parents=True)
            with override_settings(BASE_DIR=release_dir), mock.patch.dict(os.environ, {"APP_RELEASE": ""}):
                self.assertEqual(self.get_release(), "20250102T000000")

    def test_unknown(self):
        with tempfile.TemporaryDirectory() as base:
            with override_settings(BASE_DIR=Path(base)), mock.patch.dict(os.environ, {"APP_RELEASE": ""}):
                self.assertEqual(self.get_release(), "unknown")


class CreateDemoAdminTests(TestCase):
    def run_command(self, **env):
        out = io.StringIO()
        with mock.patch.dict(os.environ, env):
            call_command("create_demo_admin", stdout=out)
        return out.getvalue().strip()

    def test_create_update_unchanged(self):
        env = {"DJANGO_ADMIN_USERNAME": "admin", "DJANGO_ADMIN_PASSWORD": "s3cret-pass-for-tests"}
        self.assertEqual(self.run_command(**env), "superuser admin: created")
        self.assertEqual(self.run_command(**env), "superuser admin: unchanged")
        env["DJANGO_ADMIN_PASSWORD"] = "another-s3cret-pass"
        output = self.run_command(**env)
        self.assertEqual(output, "superuser admin: updated")
        self.assertNotIn("s3cret", output)
        user = get_user_model().objects.get(username="admin")
        self.assertTrue(user.is_superuser and user.is_staff and user.is_active)
        self.assertTrue(user.check_password("another-s3cret-pass"))

    def test_missing_env_is_an_error(self):
        with mock.patch.dict(os.environ, {"DJANGO_ADMIN_USERNAME": "", "DJANGO_ADMIN_PASSWORD": ""}):
            with self.assertRaises(CommandError):
                call_command("create_demo_admin")


class BenchStaticViewTests(SimpleTestCase):
    """SUPERBOOK_BENCH_STATIC_VIEW=1 (make bench only) lets Django serve /static/; off by default."""

    def urlconf(self, **env):
        import importlib

        import superbook.urls

        from django.urls import clear_url_caches

        with mock.patch.dict(os.environ, env):
            module = importlib.reload(superbook.urls)
        clear_url_caches()
        return module

    def tearDown(self):
        self.urlconf(SUPERBOOK_BENCH_STATIC_VIEW="0")

    def test_off_by_default(self):
        from django.urls import Resolver404, resolve

        module = self.urlconf(SUPERBOOK_BENCH_STATIC_VIEW="0")
        with self.assertRaises(Resolver404):
            resolve("/static/posts/site.css", urlconf=module)

    def test_on_serves_from_static_root(self):
        with tempfile.TemporaryDirectory() as static_root:
            (Path(static_root) / "site.abc123.css").write_text("body {}\n")
            with override_settings(STATIC_ROOT=static_root, SECURE_SSL_REDIRECT=False):
                self.urlconf(SUPERBOOK_BENCH_STATIC_VIEW="1")  # reads STATIC_ROOT
                response = self.client.get("/static/site.abc123.css")
                self.assertEqual(response.status_code, 200)
                self.assertEqual(b"".join(response.streaming_content), b"body {}\n")


class TaskTests(AppTestCase):
    """The Celery tasks, run in the test process (no broker: CELERY_TASK_ALWAYS_EAGER)."""

    def test_warm_popular_fills_the_page_ahead_of_visitors(self):
        from .tasks import warm_popular

        self.assertEqual(warm_popular.delay().get(), 3)
        response = self.client.get("/popular/")
        self.assertContains(response, '<dd id="computed-by">Celery beat, ahead of visitors</dd>', html=False)
        self.assertContains(response, '<dd id="post-count">3</dd>', html=False)

    def test_a_visitor_computes_the_page_when_no_task_did(self):
        response = self.client.get("/popular/")
        self.assertContains(response, '<dd id="computed-by">this request</dd>', html=False)

    def test_long_job_runs_until_told_to_finish(self):
        from .tasks import long_job

        cache.set("long-job:t1:go", 1)
        result = long_job.delay("t1", max_seconds=5).get()
        self.assertEqual(cache.get("long-job:t1:done"), result)
        self.assertIsNotNone(cache.get("long-job:t1:started"))
