"""Django projects as teams have them, deployed unchanged, through the whole stack:
real HTTPS requests to 127.0.0.1:443 in the container (Nginx -> Varnish -> Gunicorn).

layouts/settings_package (converged): a settings package that knows nothing of
/etc/<app>/env, STATIC_ROOT and MEDIA_ROOT inside the project, WhiteNoise, uWSGI instead
of Gunicorn, no health view. Then, in file order: migrations the running release cannot
live with (stopped, then allowed), hooks (a build that Nginx serves, a failure before and
after the switch), layouts/wagtail, `wagtail start mysite` as it came out (Django 6.1, on
Debian 13's Python 3.13; the cluster scenario sees Debian 12's 3.11 refuse it before pip),
and layouts/environ_uv: django-environ settings, pyproject.toml and uv.lock only (locked
here, with uv: a lock file names its index), a __Secure-sessionid cookie.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
LAYOUTS = ROOT / "molecule" / "projects" / "layouts"
INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
APP_ROOT = "/srv/shop"
CURRENT = f"{APP_ROOT}/current"


def hostname(host) -> str:
    return host.backend.get_hostname()


def fetch(host, path: str, *curl_args: str) -> tuple[int, str, str]:
    """GET (or what curl_args say) https://127.0.0.1{path} for Host localhost: (status, X-Cache, body)."""
    args = " ".join(shlex.quote(a) for a in curl_args)
    out = host.check_output(
        f"curl -ksS --max-time 30 -o /tmp/body -w '%{{http_code}} %header{{x-cache}}' -H 'Host: localhost' {args} "
        f"{shlex.quote('https://127.0.0.1' + path)}; echo; cat /tmp/body"
    )
    head, _, body = out.partition("\n")
    status, _, cache = head.partition(" ")
    return int(status), cache, body


def get(host, path: str, *curl_args: str) -> tuple[int, str]:
    status, _, body = fetch(host, path, *curl_args)
    return status, body


def current_release(host) -> str:
    return host.file(CURRENT).linked_to.rsplit("/", 1)[1]


def playbook(host, name: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(INVENTORY), str(ROOT / "playbooks" / name),
         "--limit", hostname(host), "-e", "deploy_serial=1", *extra],
        cwd=ROOT, env=dict(os.environ, ANSIBLE_FORCE_COLOR="0", NO_COLOR="1"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200, check=False,
    )


def flat(output: str) -> str:
    return " ".join(output.replace("│", " ").split())


def copy_layout(tmp_path: Path, name: str, label: str) -> Path:
    """A copy of a layout with a label of its own in the tree (a new release id)."""
    target = tmp_path / label
    shutil.copytree(LAYOUTS / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (target / "release_label.txt").write_text(label + "\n")
    return target


def psql(host, sql: str) -> str:
    return host.check_output(f"runuser -u postgres -- psql -d shop -Atc {shlex.quote(sql)}")


# --- the settings package, as converged ----------------------------------------------
def test_settings_package_answers_through_the_stack(host):
    status, body = get(host, "/")
    assert status == 200 and body.startswith("0 notes"), body[:500]
    # The project's storage (WhiteNoise's manifest) named the file; Nginx serves it.
    css = re.search(r"href=(/static/notes/site\.[0-9a-f]{12}\.css)", body).group(1)
    assert get(host, css) == (200, "body { color: #123; }")


def test_the_production_settings_beside_the_dev_ones_run(host):
    env = host.file(f"{CURRENT}/.prodready-env").content_string
    assert 'DJANGO_SETTINGS_MODULE="_prodready.settings"' in env
    assert 'PRODREADY_PROJECT_SETTINGS="shop.settings.production"' in env
    # PostgreSQL, not the project's SQLite file; nothing written into the release.
    assert psql(host, "SELECT count(*) FROM django_migrations WHERE app = 'notes'") == "1"
    assert not host.file(f"{CURRENT}/db.sqlite3").exists


def test_gunicorn_serves_although_the_project_ships_uwsgi(host):
    venv = host.file(f"{CURRENT}/.venv").linked_to
    assert host.file(f"{venv}/bin/uwsgi").exists and host.file(f"{venv}/bin/gunicorn").exists
    assert host.file(f"{venv}/bin/python").exists
    assert host.run(f"{venv}/bin/python -c 'import psycopg, redis'").rc == 0
    status = json.loads(host.check_output("prodready-gunicorn shop status"))
    assert status["live"] in {"blue", "green"} and status["release"].endswith(current_release(host))


def test_the_built_in_health_check_answers(host):
    status, body = get(host, "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok", "database": "ok", "cache": "ok"}


def test_an_upload_is_served_by_nginx(host):
    content = uuid.uuid4().hex
    status, body = get(host, "/upload/", "-X", "POST", "--data-binary", content)
    assert status == 200, body
    url = json.loads(body)["url"]
    assert url.startswith("/media/uploads/")
    assert get(host, url) == (200, content)
    folder = host.file(f"{APP_ROOT}/shared{url.rsplit('/', 1)[0]}")
    assert folder.group == "www-data"


# --- migrations the running release cannot live with ---------------------------------
REMOVE_BODY = '''from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial")]
    operations = [migrations.RemoveField(model_name="note", name="body")]
'''


def without_body(parent: Path, label: str) -> Path:
    """The settings package with Note.body removed by migration 0002."""
    target = copy_layout(parent, "settings_package", label)
    (target / "notes" / "migrations" / "0002_remove_note_body.py").write_text(REMOVE_BODY)
    models = target / "notes" / "models.py"
    models.write_text(models.read_text().replace("    body = models.TextField(blank=True, null=True)\n", ""))
    return target


@pytest.fixture(scope="module")
def removal(tmp_path_factory):
    return without_body(tmp_path_factory.mktemp("layouts"), "without-body")


def test_an_unsafe_migration_stops_the_deploy_before_it_migrates(host, removal):
    before = current_release(host)
    proc = playbook(host, "deploy.yml", "-e", f"deploy_source={removal}")
    output = flat(proc.stdout)
    assert proc.returncode != 0, output[-3000:]
    assert "Migration notes.0002_remove_note_body: RemoveField notes.Note.body" in output, output[-3000:]
    assert "deploy_allowed_migrations" in output and "Nothing was switched" in output
    assert current_release(host) == before
    assert psql(host, "SELECT count(*) FROM information_schema.columns "
                      "WHERE table_name = 'notes_note' AND column_name = 'body'") == "1"


def test_an_allowed_migration_goes_through(host, removal):
    proc = playbook(host, "deploy.yml", "-e", f"deploy_source={removal}",
                    "-e", '{"deploy_allowed_migrations": ["notes.0002_remove_note_body"]}')
    assert proc.returncode == 0, flat(proc.stdout)[-3000:]
    assert psql(host, "SELECT count(*) FROM information_schema.columns "
                      "WHERE table_name = 'notes_note' AND column_name = 'body'") == "0"
    assert get(host, "/")[0] == 200


# --- hooks -----------------------------------------------------------------------------
BUILD_HOOK = '''- name: Build an asset into the release, as a front-end build would
  ansible.builtin.shell:
    cmd: >-
      printf '.built { content: "%s"; }' '{{ deploy_hook.release }}' > notes/static/notes/built.css
    chdir: "{{ deploy_hook.release_dir }}"
  changed_when: true
'''
FAILING_HOOK = '''- name: Fail on purpose
  ansible.builtin.fail:
    msg: "the {{ deploy_hook.point }} hook fails on purpose in release {{ deploy_hook.release }}"
'''


@pytest.fixture(scope="module")
def hooks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hooks")
    (folder / "build.yml").write_text(BUILD_HOOK)
    (folder / "fail.yml").write_text(FAILING_HOOK)
    return folder


def test_a_build_hook_makes_an_asset_nginx_serves(host, hooks, tmp_path):
    # The schema the migration tests left: no body column.
    source = without_body(tmp_path, "with-a-build")
    proc = playbook(host, "deploy.yml", "-e", f"deploy_source={source}",
                    "-e", json.dumps({"deploy_hooks": {"after_unpack": [str(hooks / "build.yml")]}}))
    assert proc.returncode == 0, flat(proc.stdout)[-3000:]
    release = current_release(host)
    manifest = json.loads(host.file(f"{APP_ROOT}/shared/static/staticfiles.json").content_string)
    hashed = manifest["paths"]["notes/built.css"]
    assert re.fullmatch(r"notes/built\.[0-9a-f]{12}\.css", hashed), hashed
    status, body = get(host, f"/static/{hashed}")
    assert status == 200 and release[:12] in body


@pytest.mark.parametrize("point, said", [
    ("before_switch", "Nothing was switched"),
    ("after_switch", "current points to"),
])
def test_a_failing_hook_leaves_the_previous_release_live(host, hooks, tmp_path, point, said):
    before = current_release(host)
    source = without_body(tmp_path, f"failing-{point}")
    proc = playbook(host, "deploy.yml", "-e", f"deploy_source={source}",
                    "-e", json.dumps({"deploy_hooks": {point: [str(hooks / "fail.yml")]}}))
    output = flat(proc.stdout)
    assert proc.returncode != 0
    assert f"the {point} hook fails on purpose" in output and said in output, output[-3000:]
    assert current_release(host) == before, output[-6000:]
    assert get(host, "/")[0] == 200


# --- wagtail start mysite, as it came out ----------------------------------------------
def test_wagtail_start_deploys_as_it_came_out(host):
    """Its requirements ask for Django 6.1 (Python 3.12 or later) and bring neither Gunicorn
    nor a PostgreSQL driver nor a Redis client; its manage.py names mysite.settings.dev."""
    before = current_release(host)
    # The same app and database as the other layout: all of Wagtail's history is pending
    # and includes removals (on a first deploy nothing serves, and nothing is checked).
    proc = playbook(host, "deploy.yml", "-e", f"deploy_source={LAYOUTS / 'wagtail'}",
                    "-e", "deploy_allow_unsafe_migrations=true")
    output = flat(proc.stdout)
    assert proc.returncode == 0, output[-4000:]
    assert current_release(host) != before
    env = host.file(f"{CURRENT}/.prodready-env").content_string
    assert 'PRODREADY_PROJECT_SETTINGS="mysite.settings.production"' in env
    status, body = get(host, "/")
    assert status == 200 and "Welcome to your new Wagtail site" in body, body[:1000]
    status, body = get(host, "/healthz")
    assert status == 200 and json.loads(body)["database"] == "ok"


# --- django-environ, pyproject.toml and uv.lock, a __Secure- session cookie -------------
def test_a_locked_project_that_reads_its_environment(host, tmp_path):
    source = copy_layout(tmp_path, "environ_uv", "environ-uv")
    lock = subprocess.run([str(Path(sys.executable).parent / "uv"), "lock", "--python", sys.executable],
                          cwd=source, capture_output=True, text=True, timeout=300, check=False)
    assert lock.returncode == 0, lock.stderr
    proc = playbook(host, "deploy.yml", "-e", f"deploy_source={source}", "-e", "deploy_django_settings=project")
    assert proc.returncode == 0, flat(proc.stdout)[-4000:]
    assert 'DJANGO_SETTINGS_MODULE="config.settings"' in host.file(f"{CURRENT}/.prodready-env").content_string
    venv = host.file(f"{CURRENT}/.venv").linked_to
    # Installed from the lock by uv; pymemcache, which the lock lacks, added by uv too.
    assert host.run(f"{venv}/bin/python -c 'import environ, pymemcache'").rc == 0
    assert "Install the locked dependencies" in proc.stdout
    # django-environ read DATABASE_URL's socket form and REDIS_URL: the page is served.
    path = f"/?v={uuid.uuid4().hex}"
    first, second = fetch(host, path), fetch(host, path)
    assert (first[0], first[2], second[1]) == (200, "Hello anonymous", "HIT"), (first, second)
    jar = f"/tmp/jar-{uuid.uuid4().hex}"
    status, body = get(host, "/login/", "-c", jar, "--data", "username=writer&password=writer-password")
    assert (status, body) == (200, "signed in")
    assert "__Secure-sessionid" in host.file(jar).content_string
    # The cached anonymous copy is never served to the writer, nor the writer's page cached.
    answers = [fetch(host, path, "-b", jar) for _ in range(2)]
    assert [(a[0], a[2]) for a in answers] == [(200, "Hello writer")] * 2, answers
    assert [a[1] for a in answers] == ["MISS", "MISS"]
    status, body = get(host, "/healthz")
    assert status == 200 and json.loads(body)["database"] == "ok"
