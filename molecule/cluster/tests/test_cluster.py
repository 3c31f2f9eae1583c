"""The multi-tier layout of inventories/multi-tier on seven containers: two web hosts
sharing a floating address, two app hosts behind Varnish on each web host, a PostgreSQL
primary with a streaming replica, a cache host. Real requests from a container of the
network (the cache host: no tier's service runs there that the site needs) to the
floating address, as a browser would reach the site.

The tests run in file order: the ones that stop a container start it again and wait
until the site is whole before they return.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import testinfra
from prodready_testinfra import assert_running, can_connect, copy_release, journal_tail, save_upload, under_load

ROOT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
APP_SOURCE = ROOT / "examples" / "superbook"
EVENTS = "/var/lib/prodready-gunicorn/mysite/events.jsonl"
# What the closing notes quote: the request counts and the seconds of each fault.
FIGURES = ROOT / ".cache" / "logs" / "cluster.jsonl"

FRONT = "10.213.0.100"  # keepalived_virtual_address
NAME = "www.example.com"  # django_app_allowed_hosts of inventories/multi-tier
ADDRESS = {
    "cluster-web1": "10.213.0.11", "cluster-web2": "10.213.0.12",
    "cluster-app1": "10.213.0.21", "cluster-app2": "10.213.0.22",
    "cluster-db1": "10.213.0.31", "cluster-db2": "10.213.0.32",
    "cluster-cache1": "10.213.0.41",
}
WEB, APP = ["cluster-web1", "cluster-web2"], ["cluster-app1", "cluster-app2"]
# Straight through docker exec (the containers are the scenario's own): a tenth of the
# time of testinfra's ansible backend per command.
HOSTS = {name: testinfra.get_host(f"docker://{name}") for name in ADDRESS}
CLIENT = HOSTS["cluster-cache1"]
# 20 clients, each at most one request per 0.1 s (200 requests/s, as in the stack scenario).
THREADS, INTERVAL, MIN_REQUESTS = 20, 0.1, 3000
# Seven hosts in one batch (Ansible's default is 5 forks), as inventories/multi-tier/ansible.cfg
# runs them; molecule.yml sets the same for converge and check mode.
FORKS = "10"


def note(label: str, **values) -> dict:
    figure = {"test": label, **values}
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a") as handle:
        handle.write(json.dumps(figure) + "\n")
    return figure


def get(path: str, address: str = FRONT) -> tuple[int, str]:
    """GET https://www.example.com{path} at address, from the client container."""
    out = CLIENT.run(f"curl -sk --max-time 10 --resolve {NAME}:443:{address} -w '\\n%{{http_code}}' https://{NAME}{path}")
    body, _, status = out.stdout.rpartition("\n")
    return int(status or 0), body


def holder() -> list[str]:
    """The web hosts that hold the floating address (a stopped container holds nothing)."""
    return [w for w in WEB if f" {FRONT}/" in HOSTS[w].run("ip -4 -o addr show").stdout]


def docker(*args: str) -> None:
    subprocess.run(["docker", *args], check=True, capture_output=True, timeout=120)


def wait_until(what: str, check, seconds: float = 90) -> float:
    """Poll check() until it is true; the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"{what}: not after {seconds} s"
        time.sleep(0.5)
    return time.monotonic() - start


def site_whole() -> bool:
    """Every web host's Varnish sees both app hosts healthy, and one web host holds the front."""
    for web in WEB:
        backends = HOSTS[web].run("varnishadm backend.list").stdout
        if len(re.findall(r"^\S+\.django_\d+\s+\S+\s+\S+\s+healthy\b", backends, re.M)) != len(APP):
            return False
    return len(holder()) == 1


def start_again(name: str) -> None:
    docker("start", name)
    wait_until(f"{name} back and the site whole", lambda: HOSTS[name].run("systemctl is-system-running").stdout.strip()
               in ("running", "degraded") and site_whole(), seconds=120)


def failed(results) -> list:
    return [r for r in results if r[5] or not 200 <= r[3] < 400]


def load(action, label: str, paths: tuple[str, ...] = ("/version", "/", "/popular/")):
    return under_load(CLIENT, action, label, list(paths), THREADS, INTERVAL, MIN_REQUESTS,
                      address=FRONT, host_header=NAME)


def current(name: str) -> str:
    return HOSTS[name].check_output("readlink /srv/mysite/current").rsplit("/", 1)[-1]


def switches(name: str, since: float) -> list[float]:
    """When prodready-gunicorn moved this app host's front (monotonic, shared clock)."""
    lines = HOSTS[name].run(f"cat {EVENTS}").stdout.splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    return [e["monotonic"] for e in events if e["event"] == "switched" and e["monotonic"] >= since]


def release(tmp_path: Path, label: str, edit=None) -> Path:
    """A copy of the demo app with a release id of its own, changed by edit(path)."""
    return copy_release(APP_SOURCE, tmp_path, label, edit)


def playbook(name: str, *extra: str) -> subprocess.CompletedProcess:
    """One of the collection's playbooks on the whole inventory, as a user would run it."""
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(INVENTORY), str(ROOT / "playbooks" / name), *extra],
        cwd=ROOT, env=dict(os.environ, ANSIBLE_FORCE_COLOR="0", NO_COLOR="1", ANSIBLE_FORKS=FORKS),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200, check=False,
    )


def deploy(source: Path, *extra: str) -> subprocess.CompletedProcess:
    """deploy.yml on the whole inventory, one app host at a time."""
    return playbook("deploy.yml", "-e", f"deploy_source={source}", "-e", "deploy_git_repo=", "-e", "deploy_serial=1", *extra)


def flat(output: str) -> str:
    return " ".join(output.replace("│", " ").split())


# --- every tier in its place ----------------------------------------------------------
def live_gunicorn(name: str) -> str:
    """The unit of the live Gunicorn instance of an app host."""
    return f"gunicorn-mysite@{json.loads(HOSTS[name].check_output('prodready-gunicorn mysite status'))['live']}"


@pytest.mark.parametrize(("name", "units"), [
    ("cluster-web1", ["nginx", "varnish", "keepalived"]), ("cluster-web2", ["nginx", "varnish", "keepalived"]),
    ("cluster-app1", ["gunicorn"]), ("cluster-app2", ["gunicorn"]),
    ("cluster-db1", ["postgresql"]), ("cluster-db2", ["postgresql"]), ("cluster-cache1", ["redis-server"]),
])
def test_each_host_runs_its_tier_only(name, units):
    host = HOSTS[name]
    units = [live_gunicorn(name) if unit == "gunicorn" else unit for unit in units]
    for unit in units:
        assert host.service(unit).is_running, f"{unit} is not running on {name}:\n{journal_tail(host, unit)}"
    others = {"nginx", "varnish", "keepalived", "postgresql", "redis-server"} - set(units)
    for unit in others:
        assert not host.service(unit).is_running, f"{unit} runs on {name}, which is not in its tier"


@pytest.mark.parametrize(("name", "ports"), [
    ("cluster-db1", [5432]), ("cluster-cache1", [6379]), ("cluster-app1", [8001, 8002]), ("cluster-app2", [8001, 8002]),
])
def test_services_listen_on_loopback_and_the_private_address_only(name, ports):
    """Each port (of Gunicorn: the live instance's, one of two) on loopback and the private
    address, never on every address."""
    listening = HOSTS[name].check_output("ss -ltnH")
    local = {port: re.findall(rf"^\S+\s+\d+\s+\d+\s+(\S+):{port}\s", listening, re.M) for port in ports}
    assert any(local.values()), f"nothing listens on port {ports} of {name}:\n{listening}"
    for port, addresses in local.items():
        assert set(addresses) <= {"127.0.0.1", ADDRESS[name]}, f"port {port} of {name} listens on {addresses}"


@pytest.mark.parametrize(("server", "port", "allowed", "denied"), [
    ("cluster-db1", 5432, ["cluster-app1", "cluster-app2", "cluster-db2"], ["cluster-web1", "cluster-cache1"]),
    ("cluster-cache1", 6379, ["cluster-app1", "cluster-app2"], ["cluster-web2", "cluster-db1"]),
    ("cluster-app1", 8000, ["cluster-web1", "cluster-web2"], ["cluster-db1", "cluster-cache1", "cluster-app2"]),
])
def test_each_tier_port_is_open_only_to_the_tiers_that_use_it(server, port, allowed, denied):
    for client in allowed:
        assert can_connect(HOSTS[client], ADDRESS[server], port), f"{client} cannot reach {server}:{port}"
    for client in denied:
        assert not can_connect(HOSTS[client], ADDRESS[server], port, timeout=1.5), f"{client} reaches {server}:{port}"


def test_pg_hba_lets_in_exactly_the_app_hosts_and_the_replica():
    rules = HOSTS["cluster-db1"].check_output(
        "sudo -u postgres psql -XAtc \"select type, database, user_name, address from pg_hba_file_rules "
        "where address is not null and address not in ('127.0.0.1', '::1')\"")
    addresses = {line.split("|")[3] for line in rules.splitlines()}
    assert addresses == {ADDRESS["cluster-app1"], ADDRESS["cluster-app2"], ADDRESS["cluster-db2"]}, rules


# --- the site at the floating address ---------------------------------------------------
def test_one_web_host_holds_the_floating_address():
    assert len(holder()) == 1, f"the floating address is on {holder()}"


def test_the_site_answers_at_the_floating_address():
    status, body = get("/")
    assert status == 200, body[-2000:]
    status, body = get("/version")
    assert status == 200 and json.loads(body)["release"], body


@pytest.mark.parametrize("web", WEB)
def test_each_web_host_sends_to_both_app_hosts(web):
    answered = {json.loads(get("/version", ADDRESS[web])[1])["host"] for _ in range(12)}
    assert answered == set(APP), f"{web} sent /version to {answered}"


@pytest.mark.parametrize("web", WEB)
def test_each_web_host_serves_the_release_static_files(web):
    """collectstatic ran on the app hosts; each web host serves the hashed CSS the page
    names from its own copy (the deploy sent it there before the release went live)."""
    css = re.search(r'href="(/static/posts/site\.[0-9a-f]{12}\.css)"', get("/")[1])
    assert css, "the home page names no hashed stylesheet"
    assert HOSTS[web].file(f"/srv/mysite/shared/static{css.group(1).removeprefix('/static')}").is_file
    status, body = get(css.group(1), ADDRESS[web])
    assert status == 200 and "{" in body, f"{web} answered {status} for {css.group(1)}"


# --- the users' uploads, one folder for every app and web host -------------------------
STORAGE, MEDIA = "cluster-cache1", "/srv/mysite/shared/media"
MEDIA_SSH = ("-i /etc/prodready-media/id_ed25519 -o UserKnownHostsFile=/etc/prodready-media/known_hosts "
             "-o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=5")


@pytest.mark.parametrize("name", WEB + APP)
def test_each_app_and_web_host_mounts_the_storage_hosts_files(name):
    mount = HOSTS[name].check_output(f"findmnt -n -o FSTYPE,SOURCE --mountpoint {MEDIA}").split()
    assert mount == ["fuse.sshfs", f"prodready-media@{ADDRESS[STORAGE]}:/mysite"], mount


def test_an_upload_saved_on_one_app_host_is_served_and_read_everywhere():
    """Saved through Django's storage on app1 under Gunicorn's umask (0027): the file is
    on the storage host, app2's app user reads it, both web hosts' Nginx serve it."""
    saved = save_upload(HOSTS["cluster-app1"], "/usr/local/sbin/mysite-manage", "saved on app1")
    stored = HOSTS[STORAGE].file(f"/srv/media/mysite/{saved}")
    assert stored.is_file and stored.content_string == "saved on app1", f"not on the storage host: {saved}"
    folder = HOSTS[STORAGE].file(f"/srv/media/mysite/{saved.rsplit('/', 1)[0]}")
    assert stored.user == "prodready-media" and folder.mode & 0o007 == 0, (stored.user, oct(folder.mode))
    assert HOSTS["cluster-app2"].check_output(f"runuser -u mysite -- cat {MEDIA}/{saved}") == "saved on app1"
    for web in WEB:
        status, body = get(f"/media/{saved}", ADDRESS[web])
        assert (status, body) == (200, "saved on app1"), f"{web} answered {status} for /media/{saved}"


def test_the_storage_host_lets_the_hosts_in_for_sftp_in_the_chroot_only():
    """app1's media key: SFTP sees the chroot (the app's folder and nothing else of the
    storage host); a command gets no shell."""
    app1, target = HOSTS["cluster-app1"], f"prodready-media@{ADDRESS[STORAGE]}"
    listing = app1.run(f"echo 'ls -1 /' | sftp {MEDIA_SSH} -b - {target}")
    assert listing.rc == 0 and listing.stdout.split()[-1:] == ["/mysite"], listing.stdout + listing.stderr
    shell = app1.run(f"timeout 20 ssh {MEDIA_SSH} {target} id </dev/null")
    assert "uid=" not in shell.stdout, shell.stdout
    # The key is refused from any other address than app1's.
    HOSTS["cluster-db1"].check_output("mkdir -p -m 0700 /tmp/media-key")
    key = app1.check_output("cat /etc/prodready-media/id_ed25519")
    HOSTS["cluster-db1"].check_output(f"umask 077 && printf '%s\\n' {shlex.quote(key)} > /tmp/media-key/id && "
                                      f"ssh-keyscan -t ed25519 {ADDRESS[STORAGE]} > /tmp/media-key/known 2>/dev/null")
    stolen = HOSTS["cluster-db1"].run(
        f"echo 'ls /' | sftp -i /tmp/media-key/id -o UserKnownHostsFile=/tmp/media-key/known -o BatchMode=yes -b - {target}")
    HOSTS["cluster-db1"].run("rm -rf /tmp/media-key")
    assert stolen.rc != 0 and "/mysite" not in stolen.stdout, stolen.stdout + stolen.stderr


def test_the_replica_streams_what_the_primary_writes():
    primary, replica = HOSTS["cluster-db1"], HOSTS["cluster-db2"]
    streaming = primary.check_output("sudo -u postgres psql -XAtc \"select client_addr, state from pg_stat_replication\"")
    assert f"{ADDRESS['cluster-db2']}|streaming" in streaming, streaming
    mark = f"cluster-{time.time_ns()}"
    primary.check_output(f"sudo -u postgres psql -X -d mysite -c \"create table if not exists cluster_mark (v text); "
                         f"insert into cluster_mark values ('{mark}')\"")
    wait_until("the row on the replica", lambda: mark in replica.run(
        "sudo -u postgres psql -XAt -d mysite -c 'select v from cluster_mark'").stdout, seconds=30)
    refused = replica.run("sudo -u postgres psql -X -d mysite -c \"insert into cluster_mark values ('no')\"")
    assert refused.rc != 0 and "read-only transaction" in refused.stderr, refused.stderr


# --- the same playbooks under ansible-runner (AWX, Automation Platform) ----------------
def test_converge_runs_again_unchanged_under_ansible_runner(tmp_path):
    """A job as AWX or Automation Platform runs it: ansible-runner with a project folder
    whose playbook is the collection's site.yml then deploy.yml (converge.yml's plays, by
    their collection names), the job's variables in env/extravars, the inventory beside it.
    On the converged cluster it succeeds and changes nothing: this is the scenario's
    idempotence step (molecule.yml)."""
    project = tmp_path / "job" / "project"
    project.mkdir(parents=True)
    (project / "converge.yml").write_text(
        "---\n- name: The whole stack\n  ansible.builtin.import_playbook: prodready.django.site\n\n"
        "- name: The release\n  ansible.builtin.import_playbook: prodready.django.deploy\n")
    (tmp_path / "job" / "env").mkdir()
    (tmp_path / "job" / "env" / "extravars").write_text(
        json.dumps({"deploy_source": str(APP_SOURCE), "deploy_git_repo": ""}))
    env = dict(os.environ, PATH=f"{ANSIBLE_PLAYBOOK.parent}:{os.environ['PATH']}", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_FORKS=FORKS)
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK.parent / "ansible-runner"), "run", str(tmp_path / "job"), "-p", "converge.yml",
         "--inventory", str(INVENTORY), "--ident", "converge"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1500, check=False)
    artifacts = tmp_path / "job" / "artifacts" / "converge"
    status = (artifacts / "status").read_text().strip() if (artifacts / "status").exists() else "none"
    stats = {}
    for event in sorted((artifacts / "job_events").glob("*.json")):
        data = json.loads(event.read_text())
        if data.get("event") == "playbook_on_stats":
            stats = data["event_data"]
    note("site.yml and deploy.yml under ansible-runner", status=status, changed=stats.get("changed", {}),
         ok_hosts=len(stats.get("ok", {})))
    assert proc.returncode == 0 and status == "successful", f"{status}:\n{proc.stdout[-4000:]}"
    assert set(stats.get("ok", {})) == set(ADDRESS), stats.get("ok")
    changed_lines = [line for line in proc.stdout.splitlines() if line.startswith(("TASK [", "changed:"))]
    changed_tasks = [task for task, line in zip(changed_lines, changed_lines[1:])
                     if task.startswith("TASK [") and line.startswith("changed:")]
    assert not stats.get("changed"), f"a converged cluster changed under ansible-runner: {stats['changed']}: {changed_tasks}"


# --- metrics -----------------------------------------------------------------------------
def test_prometheus_on_the_monitoring_host_scrapes_every_host():
    """Prometheus on cache1 (group monitoring) scrapes every exporter of the seven hosts at
    their private addresses, and probes the site through each web host; an exporter's
    port is open to the monitoring host only. The ReplicationLag rule is there (db2 is a
    replica), and db2's lag is exported."""
    monitor = HOSTS["cluster-cache1"]
    expected = {("node", name) for name in ADDRESS} | {("postgres", "cluster-db1"), ("postgres", "cluster-db2"),
                ("redis", "cluster-cache1"), ("prometheus", "cluster-cache1"), ("alertmanager", "cluster-cache1")}
    expected |= {(job, web) for web in WEB for job in ("nginx", "varnish", "mtail")}
    expected |= {("site", f"https://{ADDRESS[web]}/healthz") for web in WEB}

    def targets():
        found = json.loads(monitor.check_output("curl -sS --max-time 10 http://127.0.0.1:9090/api/v1/targets"))
        return {(t["labels"]["job"], t["labels"]["instance"]): (t["health"], t["lastError"])
                for t in found["data"]["activeTargets"]}

    deadline, seen = time.monotonic() + 90, {}
    while time.monotonic() < deadline:
        seen = targets()
        if {key for key, (health, _) in seen.items() if health == "up"} == expected:
            break
        time.sleep(3)
    assert set(seen) == expected, set(seen) ^ expected
    down = {key: value for key, value in seen.items() if value[0] != "up"}
    assert not down, down
    assert can_connect(monitor, ADDRESS["cluster-app1"], 9100)
    assert not can_connect(HOSTS["cluster-web1"], ADDRESS["cluster-app1"], 9100, timeout=1.5)
    rules = json.loads(monitor.check_output("curl -sS --max-time 10 http://127.0.0.1:9090/api/v1/rules"))
    names = {r["name"] for group in rules["data"]["groups"] for r in group["rules"]}
    assert "ReplicationLag" in names, names
    lag = json.loads(monitor.check_output(
        "curl -sS --max-time 10 http://127.0.0.1:9090/api/v1/query --data-urlencode "
        + shlex.quote("query=pg_replication_lag_seconds or pg_replication_lag")))["data"]["result"]
    assert {r["metric"]["instance"] for r in lag} >= {"cluster-db2"}, lag


# --- scheduled jobs --------------------------------------------------------------------
def test_the_scheduled_jobs_run_on_one_app_host_only():
    """django_app_jobs' default (clearsessions) on app1, the first app host, not on app2;
    it runs there against the primary over TCP."""
    unit = "mysite-job-clearsessions"
    app1, app2 = HOSTS["cluster-app1"], HOSTS["cluster-app2"]
    assert app1.service(f"{unit}.timer").is_running and app1.service(f"{unit}.timer").is_enabled
    assert not app2.file(f"/etc/systemd/system/{unit}.timer").exists
    assert not app2.file(f"/etc/systemd/system/{unit}.service").exists
    app1.run_expect([0], f"systemctl start {unit}.service")
    shown = app1.check_output(f"systemctl show -p Result -p ExecMainStatus {unit}.service")
    assert shown.split() == ["Result=success", "ExecMainStatus=0"], (shown, journal_tail(app1, unit))


def test_celery_runs_workers_on_both_app_hosts_and_beat_on_the_second_only():
    """celery_beat_host is cluster-app2 (molecule/cluster/inventory), not the first app
    host: beat runs there and nowhere else. Both app hosts run a worker, and both answer
    a ping sent through the broker on cache1 (its own Redis user and database)."""
    app1, app2 = HOSTS["cluster-app1"], HOSTS["cluster-app2"]
    for host in (app1, app2):
        assert_running(host, "mysite-celery-worker.service")
    assert_running(app2, "mysite-celery-beat.service")
    assert not app1.file("/etc/systemd/system/mysite-celery-beat.service").exists
    replies = app1.check_output(
        "/usr/local/sbin/mysite-manage shell -c "
        + shlex.quote("from superbook.celery import app; print(sorted(n for r in app.control.ping(timeout=5) for n in r))"))
    assert "mysite@cluster-app1" in replies and "mysite@cluster-app2" in replies, replies
    # The demo's warm_popular is due every 60 s.
    wait_until("beat sends warm_popular", lambda: "Sending due task warm-popular (posts.tasks.warm_popular)" in
               app2.check_output("journalctl -u mysite-celery-beat --no-pager -o cat -n 50"), 90)


# --- a project this Python cannot run -------------------------------------------------
def test_a_project_whose_django_needs_a_newer_python_is_refused_before_pip():
    """`wagtail start mysite` as it came out (molecule/projects/layouts/wagtail) asks for
    Django 6.1, which needs Python 3.12: on app2 (Debian 12, Python 3.11) the deploy stops
    before any install, saying so, and the live release stays."""
    before = current("cluster-app2")
    proc = playbook("deploy.yml", "--limit", "cluster-app2", "-e", "deploy_git_repo=",
                    "-e", f"deploy_source={ROOT / 'molecule' / 'projects' / 'layouts' / 'wagtail'}")
    output = flat(proc.stdout)
    assert proc.returncode != 0, output[-3000:]
    assert ("requirements.txt asks for Django 6.1 or later, which needs Python >= 3.12; "
            "/usr/bin/python3 on this host is 3.11") in output, output[-3000:]
    assert "Install the requirements" not in output
    assert current("cluster-app2") == before


# --- rolling deploys under load ------------------------------------------------------
def test_a_rolling_deploy_with_a_migration_drops_nothing(tmp_path):
    """deploy_serial 1: the migration runs once, before the first switch; app1 switches
    while app2 serves, then app2; both end on the new release."""
    def add_column(target: Path):
        (target / "posts" / "migrations" / "0003_post_cluster_note.py").write_text(
            "from django.db import migrations, models\n\n\n"
            "class Migration(migrations.Migration):\n"
            "    dependencies = [('posts', '0002_seed_posts')]\n"
            "    operations = [migrations.AddField('post', 'cluster_note', models.TextField(null=True))]\n")
        models = target / "posts" / "models.py"
        models.write_text(models.read_text().replace(
            "    created = models.DateTimeField(", "    cluster_note = models.TextField(null=True)\n    created = models.DateTimeField(", 1))

    source = release(tmp_path, "rolling-migration", add_column)
    before = {name: current(name) for name in APP}
    assert len(set(before.values())) == 1, before
    since = time.monotonic()
    proc, results, t0, t1 = load(lambda: deploy(source), "cluster-rolling-deploy")
    output = flat(proc.stdout)
    assert proc.returncode == 0, output[-4000:]
    after = {name: current(name) for name in APP}
    new = after["cluster-app1"]
    lost = failed(results)
    moments = {name: switches(name, since) for name in APP}
    note("a rolling deploy with a migration", requests=len(results), failed=len(lost),
         deploy_seconds=round(t1 - t0, 1), switch_seconds_after_start={n: [round(m - t0, 1) for m in v] for n, v in moments.items()})
    assert after == {name: new for name in APP} and new != before["cluster-app1"], after
    assert all(len(v) == 1 for v in moments.values()), f"switches per host: {moments}"
    assert moments["cluster-app1"][0] < moments["cluster-app2"][0], moments
    migrated = [host for section in re.split(r"(?=TASK \[)", output) if "Apply the migrations]" in section
                for host in re.findall(r"changed: \[(\S+)\]", section)]
    assert migrated == ["cluster-app1"], f"the migration ran on {migrated}"
    assert not lost, f"{len(lost)} of {len(results)} requests failed: {lost[:5]}"
    assert len(results) >= MIN_REQUESTS
    versions = {r[4] for r in results if r[2] == "/version" and r[0] > t1}
    assert versions <= {new}, versions


def test_a_rolling_deploy_whose_second_host_fails_puts_the_first_back(tmp_path):
    """The new release's URLs fail to load under Gunicorn on app2 only (its health check
    answers 500; manage.py check, which loads them too, passes):
    app1 switched first and goes back; the run fails naming app2 and the step; no
    request failed and both hosts end on the release they ran before."""
    def break_on_app2(target: Path):
        urls = target / "superbook" / "urls.py"
        urls.write_text(urls.read_text() + (
            "\nimport os  # noqa: E402\n\n"
            "if os.environ.get('PRODREADY_GUNICORN_INSTANCE') and os.path.exists('/etc/mysite/refuse-this-release'):\n"
            "    raise RuntimeError('this release is broken on this host on purpose')\n"))

    source = release(tmp_path, "rolling-broken-on-app2", break_on_app2)
    before = {name: current(name) for name in APP}
    HOSTS["cluster-app2"].check_output("touch /etc/mysite/refuse-this-release")
    since = time.monotonic()
    try:
        proc, results, t0, t1 = load(lambda: deploy(source), "cluster-rolling-deploy-put-back")
    finally:
        HOSTS["cluster-app2"].run("rm -f /etc/mysite/refuse-this-release")
    output = flat(proc.stdout)
    lost = failed(results)
    moments = {name: switches(name, since) for name in APP}
    note("a rolling deploy whose second host fails", requests=len(results), failed=len(lost),
         deploy_seconds=round(t1 - t0, 1), switches={n: len(v) for n, v in moments.items()})
    assert proc.returncode != 0, output[-4000:]
    assert "cluster-app2: Release" in output and "did not go live" in output, output[-4000:]
    assert f"went live here and was put back: current points to {before['cluster-app1']} again" in output, output[-4000:]
    assert {name: current(name) for name in APP} == before
    assert len(moments["cluster-app1"]) == 2 and not moments["cluster-app2"], moments
    assert not lost, f"{len(lost)} of {len(results)} requests failed: {lost[:5]}"
    versions = {r[4] for r in results if r[2] == "/version" and r[0] > t1}
    assert versions <= {before["cluster-app1"]}, versions


def test_rollback_yml_goes_back_one_app_host_at_a_time():
    """rollback.yml as on one host, with deploy_serial 1: each app host goes back to the
    release before its current one while the other serves; no request fails and both end
    on the same release (the migration of the rolling deploy stays: its column is nullable)."""
    history = {name: json.loads(HOSTS[name].file("/etc/ansible/facts.d/prodready_deploy.fact").content_string)["history"]
               for name in APP}
    previous = {name: [r for r in h if r != current(name)][0] for name, h in history.items()}
    assert len(set(previous.values())) == 1, previous
    since = time.monotonic()
    proc, results, t0, t1 = load(lambda: playbook("rollback.yml", "-e", "deploy_serial=1"), "cluster-rollback")
    lost = failed(results)
    moments = {name: switches(name, since) for name in APP}
    note("rollback.yml, one app host at a time", requests=len(results), failed=len(lost),
         rollback_seconds=round(t1 - t0, 1), switches={n: len(v) for n, v in moments.items()})
    assert proc.returncode == 0, flat(proc.stdout)[-4000:]
    assert {name: current(name) for name in APP} == previous
    assert all(len(v) == 1 for v in moments.values()) and moments["cluster-app1"][0] < moments["cluster-app2"][0], moments
    assert not lost, f"{len(lost)} of {len(results)} requests failed: {lost[:5]}"
    versions = {r[4] for r in results if r[2] == "/version" and r[0] > t1}
    assert versions <= set(previous.values()), versions


# --- faults under load -----------------------------------------------------------------
def test_an_app_host_stopped_under_load_loses_only_its_requests_in_flight():
    """app2 shut down while 20 clients load the front: Varnish sends what app2 can no
    longer answer to app1 (a GET whose connection fails is sent again to the next host)
    until its probes mark app2 sick; only the requests app2 held when it went down fail."""
    def stop():
        docker("stop", "cluster-app2")
        stopped = time.monotonic()
        time.sleep(15)  # long enough for the probes to mark it sick, under load
        return stopped

    try:
        stopped, results, t0, t1 = load(stop, "cluster-app-stopped")
    finally:
        start_again("cluster-app2")
    lost = failed(results)
    # Requests in flight on app2 when it went down are lost (their connections vanish with
    # it); every request that started after it was down is answered.
    late = [r for r in lost if r[0] > stopped]
    figure = note("an app host stopped under load", requests=len(results), failed=len(lost), failed_after_down=len(late),
                  answered_by=sorted({r[8] for r in results if r[8]}), shutdown_seconds=round(stopped - t0, 1),
                  slowest_seconds=round(max(r[1] - r[0] for r in results), 2))
    assert not late, f"{len(late)} of {len(results)} requests that started after app2 was down failed: {late[:5]}"
    assert len(results) >= MIN_REQUESTS, figure
    after = {r[8] for r in results if r[0] > stopped and r[8]}
    assert after == {"cluster-app1"}, f"answered while app2 was down: {after}"


def test_a_web_host_killed_under_load_moves_the_floating_address():
    """The holder of the floating address dies (docker kill: no shutdown at all). The
    other web host takes the address over; the requests in flight to the dead one fail
    (their connections are gone), and the seconds until the front answers again are
    what VRRP needs to notice (about three advertisements)."""
    dead = holder()[0]
    survivor = next(w for w in WEB if w != dead)

    def kill():
        docker("kill", dead)
        return wait_until("the other web host holds the address", lambda: holder() == [survivor], seconds=30)

    try:
        moved_after, results, t0, t1 = load(kill, "cluster-web-killed")
    finally:
        start_again(dead)
    lost = failed(results)
    answered_after = [r for r in results if r[0] > t0 and not r[5] and 200 <= r[3] < 400]
    # The longest time in which no request was answered: what the visitors saw of the loss.
    ends = sorted(r[1] for r in results if not r[5] and 200 <= r[3] < 400)
    gap = max((b - a for a, b in zip(ends, ends[1:]) if b > t0), default=None)
    note("a web host killed under load", requests=len(results), failed=len(lost),
         address_moved_seconds=round(moved_after, 1), longest_silence_seconds=round(gap, 1) if gap else None)
    assert answered_after, f"the front never answered after {dead} died: {lost[:5]}"
    assert gap is not None and gap < 15, f"the front answered nothing for {gap} s"
    assert len(lost) < len(results) / 10, f"{len(lost)} of {len(results)} requests failed"
    assert holder() == [survivor], "the address went back to the returning host (keepalived_preempt is off)"


# --- promoting the replica (last: the database tier no longer matches the inventory) ---
def test_promote_under_load_moves_the_app_to_the_replica():
    """promote.yml under load: the old primary fenced, the replica promoted with every row
    the primary had, the app hosts' DATABASE_URL pointed at it and their Gunicorn
    restarted with it; then site.yml, the inventory unchanged, stops at the database tier
    instead of pointing the app back at the old primary."""
    old, new = HOSTS["cluster-db1"], HOSTS["cluster-db2"]
    mark = f"before-promote-{time.time_ns()}"
    old.check_output(f"sudo -u postgres psql -X -d mysite -c \"insert into cluster_mark values ('{mark}')\"")
    wait_until("the row on the replica", lambda: mark in new.run(
        "sudo -u postgres psql -XAt -d mysite -c 'select v from cluster_mark'").stdout, seconds=30)

    proc, results, t0, t1 = load(lambda: playbook("promote.yml", "-e", "promote_replica=cluster-db2"), "cluster-promote")
    (FIGURES.parent / "cluster-promote.log").write_text(proc.stdout)
    output = flat(proc.stdout)
    lost = failed(results)
    # From the fence to the app's new instance the database is out of reach: Varnish's
    # probes (the health check reads the database) mark the app hosts sick, cached pages
    # are served from grace, the rest fails. Counted, not hidden.
    note("promote.yml under load", requests=len(results), failed=len(lost), promote_seconds=round(t1 - t0, 1),
         failed_after_promote=len([r for r in lost if r[0] > t1]))
    assert proc.returncode == 0, "\n".join(line for line in proc.stdout.splitlines()
                                          if "fatal" in line or "FAILED" in line or "msg" in line)[-4000:]
    assert new.check_output("sudo -u postgres psql -XAtc 'select pg_is_in_recovery()'") == "f"
    assert mark in new.check_output("sudo -u postgres psql -XAt -d mysite -c 'select v from cluster_mark'")
    new.check_output("sudo -u postgres psql -X -d mysite -c \"insert into cluster_mark values ('after-promote')\"")
    assert old.run("systemctl is-active 'postgresql@*-main'").stdout.strip() != "active"
    assert old.file("/etc/postgresql/prodready-fenced.json").exists
    for app in APP:
        env = HOSTS[app].check_output("grep ^DATABASE_URL= /etc/mysite/env")
        assert f"@{ADDRESS['cluster-db2']}:5432/" in env, f"{app} still uses {env.split('@')[-1]}"
    wait_until("the app hosts healthy in Varnish again", site_whole, seconds=60)
    assert get("/")[0] == 200 and get("/version")[0] == 200

    stale = playbook("site.yml")
    stale_output = flat(stale.stdout)
    assert stale.returncode != 0 and "was the primary until promote.yml made another host the primary" in stale_output, \
        stale_output[-4000:]
    for app in APP:
        env = HOSTS[app].check_output("grep ^DATABASE_URL= /etc/mysite/env")
        assert f"@{ADDRESS['cluster-db2']}:5432/" in env, f"site.yml pointed {app} back: {env.split('@')[-1]}"

