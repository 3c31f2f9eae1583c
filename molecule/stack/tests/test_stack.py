"""The whole stack on one host, as `make demo` builds it: real HTTPS requests
through Nginx -> Varnish -> Gunicorn -> PostgreSQL/Redis, then deploys, a rollback
and outages under a bounded load sent from inside the container to 127.0.0.1:443.

The tests run in file order and build on each other: release r1 (examples/superbook
as converged), r2 (a new migration, deployed under load), back to r1 (rollback), two
broken releases that must not go live, a release with new requirements (deployed during a
long Celery task), 20 000 requests
with workers replaced one at a time, then Redis and Gunicorn outages. Each deploy under
load is followed request by request: which Gunicorn instance answered /version, against
the moment prodready-gunicorn recorded the switch.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
import yaml
from prodready_testinfra import (assert_running, alert_state, copy_release, journal_tail, save_upload, start_transient,
                                wait_for_alert, wait_for_port)
from prodready_testinfra import under_load as shared_under_load

ROOT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
APP = ROOT / "examples" / "superbook"
INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
# Request counts of the load tests, for the closing note and docs (one JSON line each).
FIGURES = ROOT / ".cache" / "logs" / "stack-load.jsonl"
MANAGE = "/usr/local/sbin/superbook-manage"
CURRENT = "/srv/superbook/current"
UNIT = "gunicorn-superbook"
INSTANCES = "/var/lib/prodready-gunicorn/superbook"
THREADS = 20
MIN_REQUESTS = 3000
# Seconds between two requests of one client: 20 clients send at most 200 requests/s,
# a busy site's rate that leaves most of the 2 test cores to the deploy (at 400/s the
# load took about as much of them as the deploy did, and every test under load twice as
# long). The recycling test sends its 20 000 requests at up to 400/s.
INTERVAL = 0.1
RECYCLING_INTERVAL = 0.05


# --- helpers ------------------------------------------------------------------------
def hostname(host) -> str:
    return host.backend.get_hostname()


def get_raw(host, path: str, *curl_args: str) -> tuple[int, list[tuple[str, str]], str]:
    """GET https://127.0.0.1{path} for Host localhost, in the container: (status, header lines, body)."""
    args = " ".join(shlex.quote(a) for a in curl_args)
    out = host.check_output(
        f"curl -ksS --max-time 30 -D - -H 'Host: localhost' {args} {shlex.quote('https://127.0.0.1' + path)}"
    )
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines()
    status = int(lines[0].split()[1])
    return status, [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])], body


def get(host, path: str, *curl_args: str) -> tuple[int, dict, str]:
    """Like get_raw, with the headers as a dict (the last of a repeated header wins)."""
    status, lines, body = get_raw(host, path, *curl_args)
    return status, dict(lines), body


def release_of(host) -> str:
    return json.loads(get(host, "/version")[2])["release"]


def current_release(host) -> str:
    return host.check_output(f"readlink {CURRENT}").rsplit("/", 1)[-1]


def gunicorn_status(host) -> dict:
    return json.loads(host.check_output("prodready-gunicorn superbook status"))


def live_unit(host) -> str:
    return f"{UNIT}@{gunicorn_status(host)['live']}"


def switch_events(host) -> list[dict]:
    """What prodready-gunicorn recorded (healthy, switched, stopped), on the shared monotonic clock."""
    text = host.run(f"cat {INSTANCES}/events.jsonl").stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def psql(host, sql: str) -> str:
    return host.check_output(f"runuser -u superbook -- psql -d superbook -Atc {shlex.quote(sql)}")


def redis_cli(host, *args: str) -> str:
    password = host.check_output("awk '$1 == \"requirepass\" {print $2}' /etc/redis/redis.conf").strip('"')
    return host.check_output(
        f"REDISCLI_AUTH={shlex.quote(password)} redis-cli --no-auth-warning {' '.join(shlex.quote(a) for a in args)}"
    )


def playbook(host, name: str, *extra: str) -> subprocess.CompletedProcess:
    """Run one of the collection's playbooks on this host alone, as a user would."""
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(INVENTORY), str(ROOT / "playbooks" / name),
         "--limit", hostname(host), "-e", "deploy_serial=1", *extra],
        cwd=ROOT, env=dict(os.environ, ANSIBLE_FORCE_COLOR="0", NO_COLOR="1"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,  # ansible-core 2.19 prints task errors on stderr
        text=True, timeout=900, check=False,
    )


def changed(proc: subprocess.CompletedProcess, host) -> int | None:
    """The host's changed= count in the play recap."""
    recap = re.search(rf"^{re.escape(hostname(host))}\s*:.*changed=(\d+)", proc.stdout, re.M)
    return int(recap.group(1)) if recap else None


def flat(output: str) -> str:
    return " ".join(output.replace("│", " ").split())


def make_release(tmp_path: Path, label: str, edit=None) -> Path:
    """A copy of the demo app (a different release id: the label is in the tree), changed by edit(path)."""
    return copy_release(APP, tmp_path, label, edit)


def add_migration(target: Path, name: str, operations: str, model_field: str = "") -> None:
    (target / "posts" / "migrations" / f"{name}.py").write_text(
        "from django.db import migrations, models\n\n\n"
        + "def fail(apps, schema_editor):\n    raise RuntimeError('this migration fails on purpose')\n\n\n"
        + "class Migration(migrations.Migration):\n"
        + "    dependencies = [('posts', '0002_seed_posts')]\n"
        + f"    operations = [{operations}]\n"
    )
    if model_field:
        models = target / "posts" / "models.py"
        text = models.read_text()
        models.write_text(text.replace("    created = models.DateTimeField(", f"    {model_field}\n    created = models.DateTimeField(", 1))


def css_path(host) -> str:
    return re.search(r'href="(/static/posts/site\.[0-9a-f]{12}\.css)"', get(host, "/")[2]).group(1)


def load_paths(host) -> list[str]:
    return ["/version", "/", "/popular/", css_path(host)]


def under_load(host, action, label: str, max_seconds: int = 420):
    """Run action() under the stack's bounded load; return (action's result, results, t0, t1)."""
    return shared_under_load(host, action, label, load_paths(host), THREADS, INTERVAL, MIN_REQUESTS, max_seconds)


def failures(results) -> list:
    return [r for r in results if r[5] or not 200 <= r[3] < 400]


def record(host, label: str, results, t0: float, t1: float) -> dict:
    span = max(r[1] for r in results) - min(r[0] for r in results)
    during = [r for r in results if r[0] < t1 and r[1] > t0]
    figure = {
        "concurrency": THREADS, "requests": len(results),
        "requests_during_action": len(during), "failed": len(failures(results)),
        "retried_on_a_new_connection": sum(1 for r in results if r[6]),
        "action_seconds": round(t1 - t0, 1), "load_seconds": round(span, 1),
        "requests_per_second": round(len(results) / span, 1) if span else None,
    }
    return note(host, label, **figure)


def note(host, label: str, **values) -> dict:
    """Append a measured figure to FIGURES (what the closing notes and docs quote)."""
    figure = {"test": label, "host": hostname(host), **values}
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a") as handle:
        handle.write(json.dumps(figure) + "\n")
    return figure


def assert_no_failure(host, results, figure) -> None:
    failed = failures(results)
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:5]}\n{journal_tail(host, UNIT + '@*')}"
    assert len(results) >= MIN_REQUESTS, figure
    assert figure["requests_during_action"] > 0, figure


# Between a request's start at the client and Varnish's connection to Gunicorn.
PROXY_SLACK = 0.2


def assert_switches_once(host, results, t0: float, old: str, new: str) -> None:
    """/version answered release `old` from one Gunicorn instance until the switch and
    release `new` from another after it: every request that started before the switch
    (less PROXY_SLACK) by the old instance, every one after it (plus PROXY_SLACK) by the
    new one, and the new instance nothing before prodready-gunicorn had found it healthy
    and moved the front to it. No request failed (assert_no_failure): at no moment did
    neither instance accept."""
    versions = sorted((r for r in results if r[2] == "/version"), key=lambda r: r[0])
    assert {r[4] for r in versions if r[1] < t0} == {old}
    assert {r[4] for r in versions} == {old, new}
    instances = {r[7] for r in versions}
    first, last = versions[0][7], versions[-1][7]
    assert instances == {first, last} and first != last, f"instances that answered: {sorted(instances)}"
    switched = [e for e in switch_events(host) if e["event"] == "switched" and t0 <= e["monotonic"]]
    assert len(switched) == 1, f"switches during the action: {switched}"
    healthy = [e for e in switch_events(host) if e["event"] == "healthy" and t0 <= e["monotonic"]]
    moment = switched[0]["monotonic"]
    assert healthy and healthy[-1]["monotonic"] <= moment
    early_new = [r for r in versions if r[7] == last and r[0] < moment - PROXY_SLACK]
    assert not early_new, f"the new instance answered requests started before the switch: {early_new[:3]}"
    late_old = [r for r in versions if r[7] == first and r[0] > moment + PROXY_SLACK]
    assert not late_old, f"the old instance answered requests started after the switch: {late_old[:3]}"
    assert {r[4] for r in versions if r[7] == last} == {new}


# --- fixtures -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """The release trees the tests deploy, made once on the controller."""
    tmp = tmp_path_factory.mktemp("releases")

    def r2(path):
        add_migration(path, "0003_post_subtitle",
                      "migrations.AddField('post', 'subtitle', models.CharField(max_length=200, null=True, blank=True))",
                      "subtitle = models.CharField(max_length=200, null=True, blank=True)")

    def broken_migration(path):
        add_migration(path, "0003_fails", "migrations.RunPython(fail, migrations.RunPython.noop)")

    def broken_under_gunicorn(path):
        """Healthy when the deploy calls it before the switch, unhealthy once Gunicorn serves it:
        stands for what only shows under the server (its config, a worker that cannot boot)."""
        views = path / "posts" / "views.py"
        views.write_text(views.read_text().replace(
            "def healthz(request):\n",
            "def healthz(request):\n"
            "    if request.META.get('SERVER_SOFTWARE', '').startswith('gunicorn'):\n"
            "        return JsonResponse({'status': 'broken under gunicorn on purpose'}, status=503)\n", 1))

    def new_requirements(path):
        requirements = path / "requirements.txt"
        requirements.write_text(requirements.read_text() + "# r3: another requirements file, another virtualenv\n")

    return {
        "r2": make_release(tmp, "r2", r2),
        "new_requirements": make_release(tmp, "new-requirements", new_requirements),
        "broken_migration": make_release(tmp, "broken-migration", broken_migration),
        "broken_under_gunicorn": make_release(tmp, "broken-under-gunicorn", broken_under_gunicorn),
    }


@pytest.fixture(scope="module")
def login():
    """A function that logs a user in with curl on the host; returns its cookie jar path."""
    def do_login(host) -> str:
        password = uuid.uuid4().hex
        host.check_output(
            f"DJANGO_ADMIN_USERNAME=stackuser DJANGO_ADMIN_PASSWORD={password} {MANAGE} create_demo_admin"
        )
        jar = f"/tmp/jar-{uuid.uuid4().hex}"
        status, _, page = get(host, "/accounts/login/", "-c", jar)
        assert status == 200
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        status, headers, _ = get(
            host, "/accounts/login/", "-b", jar, "-c", jar, "-H", "Referer: https://localhost/accounts/login/",
            "-H", "Origin: https://localhost", "--data-urlencode", "username=stackuser",
            "--data-urlencode", f"password={password}", "--data-urlencode", f"csrfmiddlewaretoken={token}",
        )
        assert status == 302, f"login answered {status}"
        return jar
    return do_login


def session_id(host, jar: str) -> str:
    return host.check_output(f"awk '$6 == \"sessionid\" {{print $7}}' {jar}")


# --- the stack as converged -----------------------------------------------------------
def test_every_service_runs(host):
    for unit in ["nginx", "varnish", f"{live_unit(host)}.socket", f"{live_unit(host)}.service",
                 "redis-server", "memcached", "postgresql"]:
        assert_running(host, unit)
    # A oneshot for boot (the gunicorn scenario restarts it and sees the front come back).
    assert host.service(f"{UNIT}-front.service").is_enabled


def test_home_page_lists_posts_from_postgresql(host):
    title = f"Written straight into PostgreSQL {uuid.uuid4().hex}"
    psql(host, f"INSERT INTO posts_post (title, body, created) VALUES ('{title}', 'from the test', now())")
    status, headers, body = get(host, f"/?fresh={uuid.uuid4().hex}")
    assert status == 200
    assert title in body
    assert headers.get("strict-transport-security", "").startswith("max-age=")


def configured_security_headers() -> dict[str, str]:
    """The four headers Nginx owns, with the values the demo inventory gives the nginx role."""
    values = yaml.safe_load((ROOT / "roles" / "nginx" / "defaults" / "main.yml").read_text())
    values.update(yaml.safe_load((ROOT / "inventories" / "demo" / "group_vars" / "all.yml").read_text()))
    hsts = f"max-age={values['nginx_hsts_max_age']}" + ("; includeSubDomains" if values["nginx_hsts_include_subdomains"] else "")
    return {
        "strict-transport-security": hsts,
        "x-content-type-options": "nosniff",
        "x-frame-options": values["nginx_x_frame_options"],
        "referrer-policy": values["nginx_referrer_policy"],
    }


def test_each_security_header_is_sent_once_with_the_configured_value(host, login):
    """Django's middleware sends all four too, with other values: Nginx must drop them."""
    expected = configured_security_headers()
    jar = login(host)
    page = f"/?headers={uuid.uuid4().hex}"
    responses = {
        "anonymous page, Varnish MISS": (page,),
        "anonymous page, Varnish HIT": (page,),
        "logged-in page (Gunicorn)": ("/me/", "-b", jar),
        "admin (Django's clickjacking middleware)": ("/admin/", "-b", jar),
        "Django 404": (f"/no-such-page-{uuid.uuid4().hex}/",),
        "hashed static file (Nginx)": (css_path(host),),
    }
    wrong = []
    for label, (path, *args) in responses.items():
        status, lines, _ = get_raw(host, path, *args)
        assert status in (200, 404), f"{label}: {path} answered {status}"
        for name, value in expected.items():
            sent = [v for k, v in lines if k == name]
            if sent != [value]:
                wrong.append(f"{label} ({path}): {name} sent {sent}, expected once as {value!r}")
    assert not wrong, "\n".join(wrong)


def test_plain_http_redirects_to_https(host):
    out = host.check_output("curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' -H 'Host: localhost' http://127.0.0.1/")
    assert out == "301 https://localhost/"


def test_second_anonymous_get_is_a_varnish_hit(host):
    path = f"/?visit={uuid.uuid4().hex}"
    first = get(host, path)
    second = get(host, path)
    assert (first[0], second[0]) == (200, 200)
    assert first[1]["x-cache"] == "MISS"
    assert second[1]["x-cache"] == "HIT"
    assert "public" in second[1]["cache-control"]


def test_logged_in_pages_are_never_cached(host, login):
    jar = login(host)
    for path in ["/me/", "/me/", "/", "/"]:
        status, headers, body = get(host, path, "-b", jar)
        assert status == 200, path
        assert headers["x-cache"] == "MISS", f"{path} came from the cache for a logged-in user"
        assert "private" in headers["cache-control"] or "no-cache" in headers["cache-control"]
    assert "stackuser" in get(host, "/me/", "-b", jar)[2]
    status, headers, _ = get(host, "/admin/", "-b", jar)
    assert status == 200 and headers["x-cache"] == "MISS"


def test_sessions_live_in_the_cache(host, login):
    jar = login(host)
    sid = session_id(host, jar)
    assert sid
    keys = redis_cli(host, "--scan", "--pattern", f"*django.contrib.sessions.cache{sid}")
    assert keys.strip(), "the session is not in Redis"
    assert psql(host, "SELECT count(*) FROM django_session") == "0"


def test_hashed_static_file_is_cached_for_a_year(host):
    status, headers, body = get(host, css_path(host))
    assert status == 200 and "body" in body
    assert headers["cache-control"] == "public, max-age=31536000, immutable"


def test_an_upload_saved_under_gunicorns_umask_is_served_by_nginx(host):
    """Django's storage makes the upload's directories with the process umask (Gunicorn's
    UMask=0027 gives 0750): Nginx (www-data) must still read them."""
    saved = save_upload(host, MANAGE, "uploaded")
    mode = host.file(f"/srv/superbook/shared/media/{saved.rsplit('/', 1)[0]}").mode
    assert mode & 0o007 == 0, f"the umask did not apply ({oct(mode)}): the test would prove nothing"
    status, _, body = get(host, f"/media/{saved}")
    assert (status, body) == (200, "uploaded"), f"/media/{saved} answered {status}"


def test_check_deploy_reports_nothing(host):
    out = host.check_output(f"{MANAGE} check --deploy --fail-level WARNING 2>&1")
    assert out.strip() == "System check identified no issues (0 silenced)."


# The monitoring role's exporters, Nginx's status page, Prometheus, Alertmanager and the
# blackbox exporter: on loopback, Prometheus being on this host.
MONITORING_PORTS = {"9100", "9187", "9121", "9113", "9131", "3903", "8080", "9090", "9093", "9115"}


def test_backends_listen_only_on_loopback(host):
    """PostgreSQL, Redis, Memcached, Gunicorn (its live instance: the front 8000 leads to
    8001 or 8002), Varnish and the monitoring (MONITORING_PORTS): 127.0.0.1, ::1 or Unix
    sockets only."""
    sockets = host.check_output("ss -Htlnup").splitlines()
    seen, exposed = set(), []
    for line in sockets:
        fields = line.split()
        local = fields[4]
        address, port = local.rsplit(":", 1)
        owners = set(re.findall(r'\("([^"]+)"', line))
        backend = owners & {"postgres", "redis-server", "memcached", "gunicorn", "varnishd", "cache-main"} or \
            port in {"5432", "6379", "11211", "8000", "8001", "8002", "6081", "6082"} | MONITORING_PORTS
        if backend:
            seen.add(port)
            if address not in {"127.0.0.1", "[::1]"}:
                exposed.append(line)
    assert not exposed, "\n".join(exposed)
    assert {"5432", "6379", "11211", "6081"} | MONITORING_PORTS <= seen and seen & {"8001", "8002"}, seen


def test_deploy_fact_records_the_release(host):
    fact = json.loads(host.file("/etc/ansible/facts.d/prodready_deploy.fact").content_string)
    assert fact["current"] == current_release(host) == release_of(host)
    assert fact["history"][0] == fact["current"]


# --- deploys, rollback, broken releases under load --------------------------------------
def test_deploy_with_a_migration_under_load_drops_nothing(host, releases):
    old = current_release(host)
    proc, results, t0, t1 = under_load(
        host, lambda: playbook(host, "deploy.yml", "-e", f"deploy_source={releases['r2']}"), "deploy")
    assert proc.returncode == 0, proc.stdout[-4000:]
    new = current_release(host)
    assert new != old
    figure = record(host, "deploy with a migration", results, t0, t1)
    assert_no_failure(host, results, figure)
    assert_switches_once(host, results, t0, old, new)
    assert psql(host, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'posts_post' "
                      "AND column_name = 'subtitle'") == "1"
    fact = json.loads(host.file("/etc/ansible/facts.d/prodready_deploy.fact").content_string)
    assert fact["history"][:2] == [new, old]
    # Only code changed: the new release shares the virtualenv of the old one.
    assert host.file(f"/srv/superbook/releases/{new}/.venv").linked_to == \
        host.file(f"/srv/superbook/releases/{old}/.venv").linked_to


def test_deploying_the_same_release_again_changes_nothing(host, releases):
    proc = playbook(host, "deploy.yml", "-e", f"deploy_source={releases['r2']}")
    assert proc.returncode == 0 and changed(proc, host) == 0, proc.stdout[-3000:]


def test_rollback_under_load_drops_nothing(host):
    fact = json.loads(host.file("/etc/ansible/facts.d/prodready_deploy.fact").content_string)
    new, old = fact["history"][0], fact["history"][1]
    proc, results, t0, t1 = under_load(host, lambda: playbook(host, "rollback.yml"), "rollback")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "Database migrations are NOT reversed" in flat(proc.stdout)
    assert current_release(host) == old
    figure = record(host, "rollback", results, t0, t1)
    assert_no_failure(host, results, figure)
    assert_switches_once(host, results, t0, new, old)


def test_failing_migration_stops_the_deploy_before_the_switch(host, releases):
    before = current_release(host)
    proc, results, t0, t1 = under_load(
        host, lambda: playbook(host, "deploy.yml", "-e", f"deploy_source={releases['broken_migration']}"),
        "broken-migration")
    assert proc.returncode != 0
    output = flat(proc.stdout)
    assert "failed before the switch" in output and "Apply the migrations" in output, output[-3000:]
    assert f"current still points to {before}" in output
    assert current_release(host) == before
    figure = record(host, "failing migration", results, t0, t1)
    assert_no_failure(host, results, figure)
    assert {r[4] for r in results if r[2] == "/version"} == {before}


def assert_never_served(host, proc, results, before: str) -> None:
    """The deploy failed at the new instance's health check and no request reached it."""
    assert proc.returncode != 0
    output = flat(proc.stdout)
    assert "did not go live" in output and "Start the release beside the live instance" in output, output[-3000:]
    assert "GET /healthz answered 503" in output
    assert f"current still points to {before}, which keeps serving" in output
    assert current_release(host) == before
    instance = {r[7] for r in results if r[2] == "/version"}
    assert {r[4] for r in results if r[2] == "/version"} == {before} and len(instance) == 1, instance
    assert not [e for e in switch_events(host) if e["event"] == "switched" and e["monotonic"] >= results[0][0]]


# A release that fails before the switch is the failing migration above; one that fails
# its health check at the switch is below (and, with a put-back of the first app host,
# the cluster scenario's rolling deploy whose release fails on the second).


def test_release_failing_only_under_gunicorn_never_serves(host, releases):
    """Healthy in a one-off process, unhealthy under Gunicorn: the check through the new
    instance's own socket catches it before the front moves."""
    before = current_release(host)
    proc, results, t0, t1 = under_load(
        host, lambda: playbook(host, "deploy.yml", "-e", f"deploy_source={releases['broken_under_gunicorn']}"),
        "broken-under-gunicorn")
    assert "broken under gunicorn on purpose" in flat(proc.stdout)
    figure = record(host, "failing only under gunicorn", results, t0, t1)
    assert_no_failure(host, results, figure)
    assert_never_served(host, proc, results, before)


def test_deploy_from_a_git_tag(host):
    """A git repository and a tag: here a bare repository on the host (file://), holding
    the project in a subfolder, made from the running release's code."""
    host.check_output(
        "rm -rf /tmp/gitwork /srv/gitsrc.git && mkdir -p /tmp/gitwork/app && "
        f"tar -C {CURRENT}/ --exclude=./.venv --exclude=./.static --exclude=./RELEASE --exclude=./.prodready-ready "
        "--exclude=__pycache__ -cf - . | tar -C /tmp/gitwork/app -xf - && cd /tmp/gitwork && "
        "echo 'the app is in app/' > README && git init -q -b main && git add -A && "
        "git -c user.name=test -c user.email=test@localhost commit -qm 'release from git' && git tag v1 && "
        "git clone -q --bare /tmp/gitwork /srv/gitsrc.git"
    )
    commit = host.check_output("git -C /srv/gitsrc.git rev-parse v1")
    args = ("-e", "deploy_git_repo=file:///srv/gitsrc.git", "-e", "deploy_git_ref=v1", "-e", "deploy_source_subdir=app")
    proc = playbook(host, "deploy.yml", *args)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert current_release(host) == release_of(host) == commit[:12]
    fact = json.loads(host.file("/etc/ansible/facts.d/prodready_deploy.fact").content_string)
    assert fact["source"] == "file:///srv/gitsrc.git v1"
    again = playbook(host, "deploy.yml", *args)
    assert again.returncode == 0 and changed(again, host) == 0, again.stdout[-3000:]


# --- scheduled jobs --------------------------------------------------------------------
def test_scheduled_jobs_run_from_their_timers_as_the_app(host):
    """django_app_jobs of inventories/demo: each job's timer is waiting for its next run;
    started as its timer would, the job runs manage.py in the live release as the app
    user, with the app's environment, and its output is in the journal."""
    for job in ["clearsessions", "deploy-check"]:
        timer = host.service(f"superbook-job-{job}.timer")
        assert timer.is_enabled and timer.is_running, journal_tail(host, f"superbook-job-{job}.timer")
        assert host.check_output(f"systemctl show -P NextElapseUSecRealtime superbook-job-{job}.timer")
    since = host.check_output("date +%s")
    host.run_expect([0], "systemctl start superbook-job-clearsessions.service superbook-job-deploy-check.service")
    for job in ["clearsessions", "deploy-check"]:
        shown = host.check_output(f"systemctl show -p Result -p ExecMainStatus superbook-job-{job}.service")
        assert shown.split() == ["Result=success", "ExecMainStatus=0"], (job, shown, journal_tail(host, f"superbook-job-{job}"))
    log = host.check_output(f"journalctl -u superbook-job-deploy-check --since @{since} --no-pager -o cat")
    assert "System check identified no issues (0 silenced)." in log, log
    entries = [json.loads(line) for line in host.check_output(
        f"journalctl -u superbook-job-deploy-check --since @{since} --no-pager -o json").splitlines()]
    uids = {e["_UID"] for e in entries if "System check" in str(e.get("MESSAGE", ""))}
    assert uids == {host.check_output("id -u superbook")}, uids


# --- Celery ------------------------------------------------------------------------------
WORKER = "superbook-celery-worker"
BEAT = "superbook-celery-beat"


def django_shell(host, code: str) -> str:
    """Python run by manage.py shell in the live release, as the app, with its environment:
    the last line it printed (Django's shell first says what it imported)."""
    out = host.check_output(f"{MANAGE} shell -c {shlex.quote(code)}")
    return out.splitlines()[-1] if out else ""


def cache_value(host, key: str):
    return json.loads(django_shell(host, f"import json; from django.core.cache import cache; print(json.dumps(cache.get({key!r})))"))


def test_celery_beat_warms_the_popular_page(host):
    """Beat (SUPERBOOK_WARM_SECONDS 5 in molecule/stack/inventory) queues warm_popular, a
    worker runs it, and /popular/ shows the summary it computed ahead of visitors, each
    run newer. Both run as the app, and reach Redis as the broker's own user, on its
    own database."""
    for unit in [WORKER, BEAT]:
        assert_running(host, f"{unit}.service")
        assert host.check_output(f"systemctl show -P User {unit}.service") == "superbook"
    seen = []
    deadline = time.monotonic() + 60
    while len(set(seen)) < 2:
        assert time.monotonic() < deadline, f"/popular/ was not warmed by Celery twice in 60 s: {seen}\n{journal_tail(host, WORKER)}"
        status, _, body = get(host, f"/popular/?fresh={uuid.uuid4().hex}")
        assert status == 200
        if '<dd id="computed-by">Celery beat, ahead of visitors</dd>' in body:
            seen.append(re.search(r'<time datetime="([^"]+)"', body).group(1))
        time.sleep(2)
    log = host.check_output(f"journalctl -u {WORKER} --no-pager -o cat -n 200")
    assert re.search(r"Task posts\.tasks\.warm_popular\[[0-9a-f-]+\] succeeded", log), log[-2000:]
    clients = redis_cli(host, "CLIENT", "LIST")
    broker = [line for line in clients.splitlines() if " user=celery " in f" {line} "]
    assert broker and all(" db=1 " in f" {line} " for line in broker), clients
    assert "CELERY_BROKER_URL" in host.check_output("cat /etc/superbook/env | cut -d= -f1")
    assert "redis://celery:" not in host.check_output(f"ps -eo args | grep -e celery -e gunicorn")


# --- metrics and alerts ---------------------------------------------------------------
PROMETHEUS_JOBS = {"prometheus", "alertmanager", "node", "postgres", "redis", "nginx", "varnish", "mtail", "site"}
# The tests' Alertmanager receiver (prometheus_alert_webhook_urls of molecule/stack/inventory),
# and their error tracker (django_app_sentry_dsn): what each was sent.
ALERT_SINK = "/tmp/alerts.jsonl"
ERROR_SINK = "/tmp/errors.jsonl"


def sink_code(path: str, port: int) -> str:
    """A listener on the container's loopback that appends every POST body (gunzipped) to
    path, one line each: the tests' Alertmanager receiver and error tracker."""
    return f"""
import gzip, http.server
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        if self.headers.get('Content-Encoding') == 'gzip':
            body = gzip.decompress(body)
        with open({path!r}, 'ab') as out:
            out.write(body.replace(b'\\n', b' ') + b'\\n')
        self.send_response(200)
        self.end_headers()
http.server.HTTPServer(('127.0.0.1', {port}), Sink).serve_forever()
"""


def prometheus_api(host, path: str) -> dict:
    return json.loads(host.check_output(f"curl -sS --max-time 10 {shlex.quote('http://127.0.0.1:9090/api/v1/' + path)}"))["data"]


def promql(host, query: str) -> list:
    return prometheus_api(host, f"query?query={urllib.parse.quote(query)}")["result"]


def test_prometheus_scrapes_every_exporter_and_the_site(host):
    """Every exporter of the host's tiers, Prometheus, Alertmanager and the blackbox probe
    of the site are up; the app's requests are counted from Nginx's log; the Redis
    exporter's password is in no command line and in no world-readable file."""
    deadline, targets = time.monotonic() + 60, []
    while time.monotonic() < deadline:
        targets = prometheus_api(host, "targets")["activeTargets"]
        if {t["labels"]["job"] for t in targets if t["health"] == "up"} == PROMETHEUS_JOBS:
            break
        time.sleep(2)
    health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in targets}
    assert {job for job, (state, _) in health.items() if state == "up"} == PROMETHEUS_JOBS, health
    for query in ["pg_up", "redis_up", "nginx_up", "probe_success"]:
        values = [r["value"][1] for r in promql(host, query)]
        assert values and set(values) == {"1"}, (query, values)
    expiry = float(promql(host, "probe_ssl_earliest_cert_expiry")[0]["value"][1])
    assert expiry > time.time(), expiry
    for _ in range(5):
        get(host, f"/?metrics={uuid.uuid4().hex}")
    deadline, counted = time.monotonic() + 30, []
    while time.monotonic() < deadline and not counted:
        counted = promql(host, 'sum(prodready_http_requests_total{code="200"}) > 0')
        time.sleep(2)
    assert counted, "Nginx's log of the app's requests is not in Prometheus"
    assert promql(host, "sum(prodready_http_request_seconds_count) > 0")
    password = host.check_output("awk '$1 == \"requirepass\" {print $2}' /etc/redis/redis.conf").strip('"')
    assert password and password not in host.check_output("ps -eo args")
    settings = host.file("/etc/default/prometheus-redis-exporter")
    assert settings.mode & 0o007 == 0 and settings.user == "root", oct(settings.mode)
    assert host.file("/etc/prometheus/alertmanager.yml").mode & 0o007 == 0


def test_redis_down_fires_its_alert_through_alertmanager(host):
    """Redis stopped: RedisDown is pending at the next evaluation (5 s), firing once it has
    lasted prometheus_alert_down_for (20 s), and Alertmanager sends it to the webhook;
    Redis back, the alert is resolved."""
    host.run(f"rm -f {ALERT_SINK}")
    start_transient(host, "prodready-alert-sink", f"python3 -c {shlex.quote(sink_code(ALERT_SINK, 9999))}")
    wait_for_port(host, 9999)
    assert alert_state(host, "RedisDown") == "inactive"
    host.check_output("systemctl stop redis-server")
    try:
        pending = wait_for_alert(host, "RedisDown", "pending", 30)
        firing = wait_for_alert(host, "RedisDown", "firing", 60) + pending
        deadline, sent = time.monotonic() + 30, []
        while time.monotonic() < deadline and not sent:
            lines = host.run(f"cat {ALERT_SINK}").stdout.splitlines()
            sent = [a for line in lines for a in json.loads(line)["alerts"]
                    if a["labels"]["alertname"] == "RedisDown" and a["status"] == "firing"]
            time.sleep(1)
        note(host, "RedisDown", seconds_to_pending=round(pending, 1), seconds_to_firing=round(firing, 1))
        assert sent, f"Alertmanager sent nothing about RedisDown: {host.run(f'cat {ALERT_SINK}').stdout[-2000:]}"
        assert sent[0]["labels"]["instance"] == hostname(host)
    finally:
        host.check_output("systemctl start redis-server")
    wait_for_alert(host, "RedisDown", "inactive", 60)
    host.run("systemctl stop prodready-alert-sink")


def test_an_old_backup_fires_backup_too_old(host):
    """The dumps made to look three days old: BackupTooOld fires at the next evaluation;
    a real backup brings it back to inactive."""
    host.check_output("systemctl start prodready-postgresql-backup.service")
    wait_for_alert(host, "BackupTooOld", "inactive", 30)
    host.check_output("find /var/backups/postgresql -name '*.pgc' -exec touch -d '3 days ago' {} +")
    host.check_output("/bin/sh /usr/local/sbin/prodready-postgresql-backup-metric")
    seconds = wait_for_alert(host, "BackupTooOld", "firing", 60)
    note(host, "BackupTooOld", seconds_to_firing=round(seconds, 1))
    host.check_output("systemctl start prodready-postgresql-backup.service")
    wait_for_alert(host, "BackupTooOld", "inactive", 60)


def test_an_error_the_app_logs_reaches_the_error_tracker(host):
    """django_app_sentry_dsn (molecule/stack/inventory) names a tracker on the container's
    loopback: an error logged by the app, run with its environment, is sent there by the
    demo's sentry-sdk, which the settings overlay started."""
    host.run(f"rm -f {ERROR_SINK}")
    start_transient(host, "prodready-error-sink", f"python3 -c {shlex.quote(sink_code(ERROR_SINK, 9998))}")
    wait_for_port(host, 9998)
    token = uuid.uuid4().hex
    code = f"import logging; logging.getLogger('stack.test').error('tracked error %s', '{token}')"
    host.check_output(f"{MANAGE} shell -c {shlex.quote(code)}")
    deadline, sent = time.monotonic() + 15, ""
    while time.monotonic() < deadline and token not in sent:
        sent = host.run(f"cat {ERROR_SINK}").stdout
        time.sleep(0.5)
    host.run("systemctl stop prodready-error-sink")
    assert token in sent, f"the tracker got nothing with {token}: {sent[-2000:]}"
    assert "SENTRY_DSN" in host.file("/etc/superbook/env").content_string


# --- logs ----------------------------------------------------------------------------
def test_the_journal_is_bounded_and_the_app_logs_rotate(host):
    """journald keeps the journal on disk within common_journald_max_use and _retention;
    logrotate turns a log file of the app's folder over as the app user, without taking
    it from a process that holds it open (copytruncate); Debian's rules cover Nginx and Varnish."""
    config = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    for line in ["Storage=persistent", "SystemMaxUse=1G", "MaxRetentionSec=3month"]:
        assert f"\n{line}" in config, f"{line} is not in journald's configuration:\n{config[-1500:]}"
    assert host.file("/var/log/journal").is_directory
    log = "/srv/superbook/shared/log/rotation-test.log"
    host.check_output(f"runuser -u superbook -- sh -c 'echo first > {log}'")
    try:
        host.check_output("logrotate --force /etc/logrotate.d/superbook")
        rotated = host.file(f"{log}.1")
        assert rotated.exists and rotated.user == "superbook" and rotated.content_string == "first\n"
        assert host.file(log).exists and host.file(log).size == 0
    finally:
        host.run(f"rm -f {log} {log}.*")
    for rule in ["nginx", "varnish"]:
        assert host.file(f"/etc/logrotate.d/{rule}").exists, rule


# --- maintenance mode ------------------------------------------------------------------
MAINTENANCE_FLAG = "/var/www/maintenance/on"


def test_maintenance_yml_closes_and_reopens_the_site(host):
    """maintenance.yml on: every page and a POST get 503 with Retry-After and the page,
    from Nginx (Varnish never sees them, so never caches them); static files are still
    served; the health check says why. A second `on` and `off` in check mode change
    nothing; off brings the pages back. A value other than on or off stops at once."""
    bad = playbook(host, "maintenance.yml", "-e", "maintenance=maybe")
    assert bad.returncode != 0 and "maintenance must be on or off" in flat(bad.stdout), flat(bad.stdout)[-2000:]
    assert changed(bad, host) == 0 and not host.file(MAINTENANCE_FLAG).exists
    css = css_path(host)
    try:
        on = playbook(host, "maintenance.yml", "-e", "maintenance=on")
        assert on.returncode == 0 and changed(on, host) == 1, flat(on.stdout)[-3000:]
        for args in [("/",), ("/popular/",), (f"/?v={uuid.uuid4().hex}",), ("/admin/",),
                     ("/login/", "--data", "username=a&password=b")]:
            status, headers, body = get(host, *args)
            assert status == 503 and "Down for maintenance" in body, (args, status, body[:300])
            assert int(headers["retry-after"]) > 0 and headers["cache-control"] == "no-store", (args, headers)
            assert "x-cache" not in headers, f"{args[0]} went through Varnish: {headers}"
        status, headers, body = get(host, "/healthz")
        assert (status, json.loads(body)) == (503, {"status": "maintenance"}), (status, body)
        assert get(host, css)[0] == 200
        again = playbook(host, "maintenance.yml", "-e", "maintenance=on")
        assert again.returncode == 0 and changed(again, host) == 0, flat(again.stdout)[-3000:]
        check = playbook(host, "maintenance.yml", "-e", "maintenance=off", "--check")
        assert check.returncode == 0 and host.file(MAINTENANCE_FLAG).exists, flat(check.stdout)[-3000:]
        assert get(host, "/")[0] == 503
        off = playbook(host, "maintenance.yml", "-e", "maintenance=off")
        assert off.returncode == 0 and changed(off, host) == 1, flat(off.stdout)[-3000:]
    finally:
        host.run(f"rm -f {MAINTENANCE_FLAG}")
    status, headers, body = get(host, "/")
    assert status == 200 and headers["x-cache"] in {"HIT", "MISS"}, (status, headers)
    assert json.loads(get(host, "/healthz")[2])["status"] == "ok"


# --- outages -------------------------------------------------------------------------
def miss_seconds(host, path: str) -> float:
    """Seconds curl takes for a page Varnish has not cached (a new query string)."""
    url = shlex.quote(f"https://127.0.0.1{path}?fresh={uuid.uuid4().hex}")
    out = host.check_output(f"curl -ks -o /dev/null -w '%{{http_code}} %{{time_total}}' -H 'Host: localhost' {url}")
    status, seconds = out.split()
    assert status == "200", f"{path} answered {status}"
    return float(seconds)


def test_deploy_with_new_requirements_lets_a_long_celery_task_finish(host, releases):
    """New requirements: a new virtualenv, which the new instance starts from, like any
    release. After the switch the deploy restarts the Celery worker on it with a warm
    shutdown: a task that was running when the stop began finishes in the old release,
    and the deploy waits for it. (The switch under load is proven by the deploys above.)"""
    old = current_release(host)
    token = uuid.uuid4().hex
    django_shell(host, f"from posts.tasks import long_job; long_job.delay({token!r}, 300)")
    deadline = time.monotonic() + 60
    while cache_value(host, f"long-job:{token}:started") is None:
        assert time.monotonic() < deadline, f"the long job never started:\n{journal_tail(host, WORKER)}"
        time.sleep(1)
    old_worker = host.check_output(f"systemctl show -P MainPID {WORKER}.service")
    go = f"from django.core.cache import cache; cache.set('long-job:{token}:go', 1, 600)"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        deploy = pool.submit(playbook, host, "deploy.yml", "-e", f"deploy_source={releases['new_requirements']}")
        try:
            deadline = time.monotonic() + 600
            while host.check_output(f"systemctl show -P ActiveState {WORKER}.service") != "deactivating":
                assert not deploy.done(), f"the deploy ended before the worker's stop:\n{deploy.result().stdout[-3000:]}"
                assert time.monotonic() < deadline, "the worker never began to stop"
                time.sleep(0.5)
            # The stop waits for the task: a few seconds later, the old worker still runs it.
            time.sleep(3)
            assert host.check_output(f"systemctl show -P ActiveState {WORKER}.service") == "deactivating"
            assert cache_value(host, f"long-job:{token}:done") is None
            assert not deploy.done()
        finally:
            # The task ends now (on a failure above too, so the deploy does not wait for it).
            django_shell(host, go)
        proc = deploy.result(timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    new = current_release(host)
    assert new != old
    assert host.file(f"/srv/superbook/releases/{new}/.venv").linked_to != \
        host.file(f"/srv/superbook/releases/{old}/.venv").linked_to
    done = cache_value(host, f"long-job:{token}:done")
    assert done and done["release"] == old, done
    log = host.check_output(f"journalctl _PID={old_worker} --no-pager -o cat -n 400")
    assert "Warm shutdown" in log, log[-2000:]
    assert_running(host, f"{WORKER}.service")
    worker = host.check_output(f"systemctl show -P MainPID {WORKER}.service")
    assert worker != old_worker
    assert host.check_output(f"readlink /proc/{worker}/cwd") == f"/srv/superbook/releases/{new}"


def test_workers_are_replaced_one_at_a_time_under_load(host):
    """20 000 requests that reach Gunicorn (/version is never cached), no deploy: with
    max_requests 400 (molecule/stack/inventory) every worker is replaced several times,
    and Gunicorn's own log shows never more than one worker leaving or booting at once."""
    unit = live_unit(host)
    since = host.check_output("date +%s")
    proc, results, t0, t1 = shared_under_load(host, lambda: time.sleep(1), "recycling", ["/version"], THREADS,
                                              RECYCLING_INTERVAL, 20000, 600)
    figure = record(host, "20000 requests, workers recycled", results, t0, t1)
    assert not failures(results), failures(results)[:5]
    assert len(results) >= 20000, figure
    log = host.check_output(f"journalctl -u {unit} --since @{since} --no-pager -o cat")
    in_flight, most, recycled, replacements, where = 0, 0, 0, set(), 0
    lines = log.splitlines()
    for number, line in enumerate(lines):
        if match := re.search(r"Recycling worker \(pid: (\d+)\)", line):
            in_flight, recycled = in_flight + 1, recycled + 1
            if in_flight > most:
                most, where = in_flight, number
        elif (match := re.search(r"Booting worker with pid: (\d+)", line)) and in_flight > len(replacements):
            replacements.add(match.group(1))
        elif (match := re.search(r"Worker ready \(pid: (\d+)\)", line)) and match.group(1) in replacements:
            replacements.discard(match.group(1))
            in_flight -= 1
    note(host, "workers recycled", recycled=recycled, most_at_once=most)
    assert recycled >= 10, f"only {recycled} workers were replaced: the test proves little\n{log[-3000:]}"
    around = "\n".join(lines[max(0, where - 40):where + 10])
    assert most == 1, f"{most} workers were replaced at once, at line {where} of the journal:\n{around}"


def test_pages_answer_with_redis_stopped(host):
    up = {path: miss_seconds(host, path) for path in ["/", "/popular/"]}
    host.check_output("systemctl stop redis-server")
    try:
        down = {path: miss_seconds(host, path) for path in ["/", "/popular/"]}
        assert max(down.values()) < 10, down
        note(host, "redis stopped", seconds_redis_up=up, seconds_redis_down=down)
        status, _, body = get(host, "/healthz")
        assert status == 200 and json.loads(body)["cache"] == "degraded"
    finally:
        host.check_output("systemctl start redis-server")
    assert json.loads(get(host, "/healthz")[2])["cache"] in {"ok", "degraded"}


def wait_for_backend(host, state: str, seconds: int = 40) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        # Backend name, Admin, Probe, Health: the name carries the VCL's, which changes on reload.
        if re.search(rf"^\S+\s+\S+\s+\S+\s+{state}\b", host.check_output("varnishadm backend.list"), re.M):
            return
        time.sleep(1)
    raise AssertionError(f"Varnish never saw the backend {state}:\n{host.check_output('varnishadm backend.list')}")


def test_cached_pages_answer_from_grace_with_gunicorn_stopped(host):
    path = f"/?grace={uuid.uuid4().hex}"
    assert get(host, path)[0] == 200
    assert get(host, path)[1]["x-cache"] == "HIT"
    unit = live_unit(host)
    host.check_output(f"systemctl stop {unit}.socket {unit}.service")
    try:
        wait_for_backend(host, "sick")
        # Past the page's max-age (60 s) only grace can answer it.
        deadline = time.monotonic() + 120
        while True:
            status, headers, _ = get(host, path)
            assert status == 200, f"the cached page answered {status} with Gunicorn stopped"
            if int(headers.get("age", "0")) > 65:
                note(host, "gunicorn stopped", grace_answer_age_seconds=int(headers["age"]))
                break
            assert time.monotonic() < deadline, headers
            time.sleep(5)
        assert get(host, f"/?uncached={uuid.uuid4().hex}")[0] == 503
    finally:
        host.check_output(f"systemctl start {unit}.socket {unit}.service")
    wait_for_backend(host, "healthy")
