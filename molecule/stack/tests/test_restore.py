"""Offsite backups (the backup role) and playbooks/restore.yml, for real: the stack's
host sends its database and uploads with restic to stack-backup (SFTP, in a chroot);
then a fresh container, stack-restore, is built with its own inventory (site.yml,
deploy.yml of the demo) and restore.yml brings back the same posts and the same upload,
checked over HTTPS on the restored host.

The fresh host also proves two things of every new server: site.yml --check runs to the
end on a host that was never converged, and no secret of the inventory shows in the
output of a whole build at -vvv (check mode with --diff first, then for real, then the
deploy in check mode) or in a world-readable file on the hosts.

The tests run in file order and build on each other. The backup's and the restore's
times are printed and kept in .cache/logs/stack-backup.jsonl (measured, never asserted).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import testinfra
from prodready_testinfra import journal_tail, save_upload, wait_for_alert

ROOT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
STACK_INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
# The fresh host's inventory, beside the stack's (same relative way to the demo's secrets).
RESTORE_INVENTORY = STACK_INVENTORY.parent / "restore"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
LOGS = ROOT / ".cache" / "logs" / "stack"
FIGURES = ROOT / ".cache" / "logs" / "stack-backup.jsonl"
MANAGE = "/usr/local/sbin/superbook-manage"
MEDIA = "/srv/superbook/shared/media"
UNIT = "prodready-backup.service"
RESTIC = "/usr/local/sbin/prodready-restic"
# Straight through docker exec: the containers are the scenario's own.
STACK = testinfra.get_host("docker://stack-debian13")
BACKUP = testinfra.get_host("docker://stack-backup")
FRESH = testinfra.get_host("docker://stack-restore")
# The fresh host: a container started like the scenario's platforms (molecule.yml), on
# their network, outside the stack's inventory.
FRESH_CONTAINER = [
    "docker", "run", "-d", "--name", "stack-restore", "--hostname", "stack-restore",
    "--network", "prodready-stack", "--ip", "10.214.0.30",
    "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cap-add", "SYS_PTRACE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
    "prodready/debian:13", "/lib/systemd/systemd",
]


def note(label: str, **values) -> dict:
    figure = {"test": label, **values}
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a") as handle:
        handle.write(json.dumps(figure) + "\n")
    print(json.dumps(figure))
    return figure


def playbook(inventory: Path, name: str, *extra: str, log: str, mitogen: bool = False) -> subprocess.CompletedProcess:
    """One of the collection's playbooks (or the scenario's prepare.yml) on stack-restore alone."""
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", NO_COLOR="1")
    if mitogen:
        # Building the fresh host only (as the scenario's converge does): faster under Mitogen.
        import ansible_mitogen  # noqa: PLC0415

        env.update(ANSIBLE_STRATEGY_PLUGINS=str(Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"),
                   ANSIBLE_STRATEGY="mitogen_linear")
    path = name if name.startswith("/") else str(ROOT / "playbooks" / name)
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), path, "--limit", "stack-restore", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800, check=False,
    )
    LOGS.mkdir(parents=True, exist_ok=True)
    (LOGS / f"restore-{log}.log").write_text(proc.stdout)
    return proc


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def changed(proc: subprocess.CompletedProcess) -> int | None:
    recap = re.search(r"^stack-restore\s*:.*changed=(\d+)", proc.stdout, re.M)
    return int(recap.group(1)) if recap else None


def curl(target, path: str) -> tuple[int, bytes]:
    """GET https://127.0.0.1{path} for Host localhost, on the target container: (status, body bytes)."""
    out = target.run(f"curl -ksS --max-time 30 -o /tmp/body -w '%{{http_code}}' -H 'Host: localhost' "
                     f"{shlex.quote('https://127.0.0.1' + path)} && base64 -w0 /tmp/body")
    assert out.rc == 0, out.stderr
    return int(out.stdout[:3]), base64.b64decode(out.stdout[3:])


def posts(target) -> str:
    return target.check_output("runuser -u postgres -- psql -d superbook -AXtc "
                               "'SELECT id, title, body FROM posts_post ORDER BY id'")


def media_digest(target) -> str:
    """Every upload's path and sha256, sorted."""
    return target.check_output(f"cd {MEDIA} && find . -type f -exec sha256sum {{}} + | sort -k2")


# --- the backup ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def backed_up(host):
    """A new post and a new upload on the stack's host, then one run of the backup service."""
    title = f"Sent offsite {uuid.uuid4().hex}"
    host.check_output("runuser -u superbook -- psql -d superbook -c "
                      + shlex.quote(f"INSERT INTO posts_post (title, body, created) VALUES ('{title}', 'kept by restic', now())"))
    content = f"an upload kept offsite {uuid.uuid4().hex}"
    upload = save_upload(host, MANAGE, content)
    started = time.monotonic()
    result = host.run(f"systemctl start {UNIT}")
    seconds = time.monotonic() - started
    assert result.rc == 0, f"the backup failed:\n{journal_tail(host, UNIT)}"
    size = host.check_output(f"du -sb {MEDIA} | cut -f1")
    note("offsite backup", command=f"systemctl start {UNIT}", seconds=round(seconds, 1),
         media_bytes=int(size), journal=host.check_output(f"journalctl -u {UNIT} -o cat -n 4 --no-pager"))
    return {"title": title, "upload": upload, "content": content}


def test_backup_sends_the_database_and_the_uploads(host, backed_up):
    """One snapshot per part under the site's name, and the time of each part's success
    for the node exporter (the OffsiteBackupTooOld alert's metric)."""
    snapshots = json.loads(host.check_output(f"sh {RESTIC} snapshots --json --host superbook"))
    assert {"database", "media"} <= {tag for s in snapshots for tag in s.get("tags", [])}, snapshots
    assert ["/superbook.pgc"] in [s["paths"] for s in snapshots]
    metric = host.check_output("cat /var/lib/prometheus/node-exporter/prodready-backup.prom")
    for part in ["database", "media"]:
        line = re.search(rf'^prodready_offsite_backup_last_success_timestamp_seconds{{part="{part}",site="superbook"}} (\d+)$',
                         metric, re.M)
        assert line and time.time() - int(line.group(1)) < 600, metric
    assert host.service("prodready-backup.timer").is_enabled
    assert host.service("prodready-backup.timer").is_running


def test_an_old_offsite_backup_fires_offsite_backup_too_old(host, backed_up):
    """The last successes made to look three days old: OffsiteBackupTooOld fires at the
    next evaluation; a real backup brings it back to inactive."""
    wait_for_alert(host, "OffsiteBackupTooOld", "inactive", 60)
    host.check_output("for f in /var/lib/prodready-backup/*.last-success; do echo $(( $(date +%s) - 259200 )) > $f; done; "
                      "sh /usr/local/sbin/prodready-backup-metric")
    seconds = wait_for_alert(host, "OffsiteBackupTooOld", "firing", 90)
    note("OffsiteBackupTooOld", seconds_to_firing=round(seconds, 1))
    host.check_output(f"systemctl start {UNIT}")
    wait_for_alert(host, "OffsiteBackupTooOld", "inactive", 90)


def test_the_key_is_in_no_command_line_and_no_world_readable_file(host, backed_up):
    password = host.check_output("cat /etc/prodready-backup/password")
    assert len(password) >= 8
    host.check_output(f"systemctl start --no-block {UNIT}")
    seen = []
    for _ in range(300):
        seen.append(STACK.check_output("ps -eo args"))
        # Until the unit has run: first its job waits for the dump (Requires=), then it is activating.
        state = STACK.run(f"systemctl show -p ActiveState --value {UNIT}").stdout.strip()
        if state not in ("activating", "active") and not STACK.run("systemctl list-jobs --no-legend").stdout.strip():
            break
        time.sleep(0.1)
    assert not [s for s in seen if password in s], "the key is on a command line"
    assert any("restic" in s or "pg_dump" in s for s in seen), "the backup was never seen running: the check proved nothing"
    found = host.run("grep -rlsF -- " + shlex.quote(password)
                     + " /etc /usr/local /root /home /srv /tmp /run /var/lib /var/log /var/backups /var/cache").stdout.split()
    for path in found:
        mode = host.file(path).mode
        assert mode & 0o004 == 0, f"{path} holds the key and is world-readable ({oct(mode)})"
    assert found == ["/etc/prodready-backup/password"], found
    assert host.file("/etc/prodready-backup").mode & 0o077 == 0
    # The backup host never has it.
    assert BACKUP.run("grep -rlsF -- " + shlex.quote(password) + " /etc /srv /var /root /tmp").stdout == ""
    deadline = time.monotonic() + 120
    while host.run(f"systemctl is-active {UNIT}").stdout.strip() in ("activating", "active") and time.monotonic() < deadline:
        time.sleep(1)


def test_the_repository_cannot_be_read_without_the_key(host, backed_up):
    """restic with another key fails; the repository's files on the backup host hold
    neither the post's title nor the upload's bytes."""
    host.check_output("umask 077; echo not-the-key > /tmp/wrong-key; "
                      f"sed 's|^exec |RESTIC_PASSWORD_FILE=/tmp/wrong-key exec |' {RESTIC} > /tmp/wrong-restic")
    wrong = host.run("sh /tmp/wrong-restic snapshots")
    host.run("rm -f /tmp/wrong-key /tmp/wrong-restic")
    assert wrong.rc != 0 and "wrong password" in wrong.stdout + wrong.stderr, wrong
    repository = BACKUP.check_output("ls /srv/backup/superbook")
    assert "config" in repository and "data" in repository, repository
    for secret in [backed_up["title"], backed_up["content"]]:
        assert BACKUP.run(f"grep -rlF {shlex.quote(secret)} /srv/backup").stdout == ""
    # The backup host's user: SFTP only, in the chroot.
    assert BACKUP.check_output("getent passwd prodready-backup").endswith(":/usr/sbin/nologin")
    assert BACKUP.file("/srv/backup").user == "root"
    assert BACKUP.file("/srv/backup/superbook").mode == 0o700


# --- a new host: check mode, and the secrets in verbose output ------------------------
# The secrets of the test inventory: the demo's (inventories/demo/group_vars, generated
# into its secrets folder) and the offsite backups' key, all kept in that folder.
SECRETS = ["redis", "django-secret-key", "celery-broker", "restic"]
# The output of each verbose run on the fresh host, by what was run.
VERBOSE_RUNS: dict[str, str] = {}


def secret_values(inventory: Path) -> dict[str, str]:
    """Each secret's value, from the files the inventory's password lookups read."""
    folder = (inventory / ".." / ".." / ".cache" / "demo-secrets").resolve()
    values = {name: (folder / name).read_text().strip() for name in SECRETS}
    assert all(len(v) >= 32 for v in values.values()), "a secret is shorter than the inventory makes them"
    return values


# --- the restore onto a fresh host ----------------------------------------------------
@pytest.fixture(scope="module")
def fresh_inventory(host):
    """molecule/stack/restore/hosts.yml beside a link to the demo's group_vars; the key of
    the repository in host_vars, as the stack's host has it (a user's vault holds it)."""
    shutil.rmtree(RESTORE_INVENTORY, ignore_errors=True)
    (RESTORE_INVENTORY / "host_vars").mkdir(parents=True, mode=0o700)
    shutil.copy(ROOT / "molecule" / "stack" / "restore" / "hosts.yml", RESTORE_INVENTORY / "hosts.yml")
    (RESTORE_INVENTORY / "group_vars").symlink_to(ROOT / "inventories" / "demo" / "group_vars")
    key = host.check_output("cat /etc/prodready-backup/password")
    vault = RESTORE_INVENTORY / "host_vars" / "stack-restore.yml"
    vault.touch(mode=0o600)
    vault.write_text(json.dumps({"backup_restic_password": key}) + "\n")
    return RESTORE_INVENTORY


@pytest.fixture(scope="module")
def fresh_container():
    """stack-restore, started from the image and removed after the tests."""
    subprocess.run(["docker", "rm", "-f", "-v", "stack-restore"], capture_output=True, check=False)
    subprocess.run(FRESH_CONTAINER, capture_output=True, check=True, timeout=120)
    deadline = time.monotonic() + 90
    while FRESH.run("systemctl is-system-running").stdout.strip() not in ("running", "degraded"):
        assert time.monotonic() < deadline, FRESH.run("systemctl --failed --no-pager").stdout
        time.sleep(1)
    yield FRESH
    subprocess.run(["docker", "rm", "-f", "-v", "stack-restore"], capture_output=True, check=False)


@pytest.fixture(scope="module")
def prepared(fresh_container, fresh_inventory):
    """stack-restore as the scenario's prepare step leaves a platform (curl, /proc/sys)."""
    proc = playbook(fresh_inventory, str(ROOT / "molecule" / "stack" / "prepare.yml"), log="prepare")
    assert proc.returncode == 0, tail(proc.stdout)
    return fresh_inventory


@pytest.fixture(scope="module")
def checked_new(prepared):
    """site.yml --check --diff -vvv on stack-restore before anything was converged there;
    what it left on the host (nothing, it must be) is read right after."""
    started = time.monotonic()
    proc = playbook(prepared, "site.yml", "--check", "--diff", "-vvv", log="site-check-new-host", mitogen=True)
    note("site.yml --check on a new host", seconds=round(time.monotonic() - started, 1))
    VERBOSE_RUNS["site.yml --check --diff -vvv, new host"] = proc.stdout
    installed = FRESH.run("dpkg-query -W -f='${Status} ${Package}\\n' nginx postgresql redis-server 2>/dev/null").stdout
    return proc, installed


@pytest.fixture(scope="module")
def built(prepared, checked_new):
    """stack-restore built as a new server is, at -vvv: site.yml, then the demo's
    deploy.yml; then the same deploy in check mode with --diff."""
    started = time.monotonic()
    proc = playbook(prepared, "site.yml", "-vvv", log="site", mitogen=True)
    VERBOSE_RUNS["site.yml -vvv"] = proc.stdout
    assert proc.returncode == 0, f"site.yml on the fresh host failed:\n{tail(proc.stdout, 80)}"
    deploy = ["deploy.yml", "-e", f"deploy_source={ROOT / 'examples' / 'superbook'}", "-e", "deploy_serial=1"]
    proc = playbook(prepared, *deploy, "-vvv", log="deploy", mitogen=True)
    VERBOSE_RUNS["deploy.yml -vvv"] = proc.stdout
    assert proc.returncode == 0, f"deploy.yml on the fresh host failed:\n{tail(proc.stdout, 80)}"
    note("fresh host built", seconds=round(time.monotonic() - started, 1))
    proc = playbook(prepared, *deploy, "--check", "--diff", "-vvv", log="deploy-check", mitogen=True)
    VERBOSE_RUNS["deploy.yml --check --diff -vvv"] = proc.stdout
    assert proc.returncode == 0, f"deploy.yml --check on the built host failed:\n{tail(proc.stdout, 80)}"
    return prepared


def test_check_mode_on_a_new_host_runs_to_the_end(checked_new):
    """site.yml --check on a host never converged: no error, a report of what it would
    change (the packages it would install, the files it would write), and no change."""
    proc, installed = checked_new
    assert proc.returncode == 0, f"site.yml --check on a new host failed:\n{tail(proc.stdout, 80)}"
    recap = re.search(r"^stack-restore\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0", proc.stdout, re.M)
    assert recap and int(recap.group(1)) > 50, tail(proc.stdout, 20)
    for would in [r"Install .*\bnginx\b", r"Install .*\bpostgresql-\d+\b", r"Write the Django site"]:
        assert re.search(rf"^TASK \[[^]]*: {would}[^]]*\][^\n]*\n(?:(?!TASK \[).*\n)*?changed: \[stack-restore\]", proc.stdout, re.M), would
    # The plays of every tier ran to their last role.
    assert "TASK [prodready.django.celery" in proc.stdout and "TASK [prodready.django.prometheus" in proc.stdout
    assert "install ok installed" not in installed, f"the check run installed packages:\n{installed}"


def test_no_secret_shows_in_verbose_output(built):
    """0 occurrences of any secret value of the inventory, and of any private key, in the
    output of each run at -vvv on the fresh host."""
    values = secret_values(built)
    assert len(VERBOSE_RUNS) == 4, list(VERBOSE_RUNS)
    counts = {}
    for run, output in VERBOSE_RUNS.items():
        # -vvv in effect: the task paths and the modules' arguments are shown.
        assert "task path:" in output and "ansible collection location" in output, f"{run}: not verbose"
        counts[run] = {name: output.count(value) for name, value in values.items()}
        counts[run]["private key"] = len(re.findall(r"BEGIN [A-Z ]*PRIVATE KEY", output))
    note("secrets in verbose output", counts=counts)
    assert not {run: c for run, c in counts.items() if any(c.values())}, counts


def test_no_secret_is_in_a_world_readable_file(built):
    """On the fresh host and the backup host, every file holding a secret value of the
    inventory, or a private key, is closed to other users."""
    values = secret_values(built)
    places = "/etc /srv /var /opt /home /root /tmp /usr/local /run"
    holders = []  # (host:path, what it holds, mode)
    for name, target in [("stack-restore", FRESH), ("stack-backup", BACKUP)]:
        found = {secret: target.run(f"grep -rlsF -- {shlex.quote(value)} {places}").stdout.split()
                 for secret, value in values.items()}
        found["private key"] = target.run(f"grep -rlsE 'BEGIN [A-Z ]*PRIVATE KEY' {places}").stdout.split()
        holders += [(f"{name}:{path}", secret, target.file(path).mode) for secret, paths in found.items() for path in paths]
    note("files holding a secret", files=[f"{path} {secret} {oct(mode)}" for path, secret, mode in holders])
    # Each secret is where the app and the services read it (the search finds them).
    assert {secret for _, secret, _ in holders} == set(SECRETS) | {"private key"}, holders
    readable = [f"{path} ({secret}) {oct(mode)}" for path, secret, mode in holders if mode & 0o004]
    assert not readable, f"world-readable files with a secret: {readable}"


def test_restore_refuses_a_snapshot_that_does_not_exist(built, backed_up):
    proc = playbook(built, "restore.yml", "-e", "backup_snapshot=deadbeef", log="missing-snapshot")
    assert proc.returncode != 0
    assert "no snapshot of the site superbook has that ID" in " ".join(proc.stdout.split()), tail(proc.stdout)
    assert changed(proc) == 0


def test_restore_refuses_a_replica(built, backed_up):
    proc = playbook(built, "restore.yml", "-e", "postgresql_replication_role=replica", log="replica")
    assert proc.returncode != 0
    assert "stack-restore is a replica (postgresql_replication_role)" in " ".join(proc.stdout.split()), tail(proc.stdout)
    assert changed(proc) == 0


def test_restore_brings_back_the_same_posts_and_uploads(host, built, backed_up):
    """restore.yml (the newest snapshots) onto the fresh host: the same rows of posts, the
    same uploads byte for byte, served over HTTPS by the restored host."""
    assert backed_up["title"] not in posts(FRESH)
    started = time.monotonic()
    proc = playbook(built, "restore.yml", log="restore")
    seconds = time.monotonic() - started
    assert proc.returncode == 0, f"restore.yml failed:\n{tail(proc.stdout, 80)}"
    note("restore onto a fresh host", command="ansible-playbook -i <fresh host's inventory> playbooks/restore.yml --limit stack-restore",
         seconds=round(seconds, 1))
    assert posts(FRESH) == posts(host)
    assert media_digest(FRESH) == media_digest(host)
    status, body = curl(FRESH, f"/?fresh={uuid.uuid4().hex}")
    assert status == 200 and backed_up["title"].encode() in body, status
    status, body = curl(FRESH, f"/media/{backed_up['upload']}")
    assert (status, body) == (200, backed_up["content"].encode()), status
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(backed_up["content"].encode()).hexdigest()
    # The uploads belong to the app's user on the new host, and the site is open again.
    owner = FRESH.check_output(f"stat -c %U:%G {MEDIA}/{backed_up['upload']}")
    assert owner == "superbook:www-data", owner
    assert not FRESH.file("/var/www/maintenance/on").exists
