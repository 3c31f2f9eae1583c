"""What a user of the postgresql role relies on, checked with psql on the converged hosts."""

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

import pytest
from prodready_testinfra import assert_running

EXPECTED_MAJOR = {12: 15, 13: 17}
SHARE = 0.5  # postgresql_memory_share in converge.yml
MAX_CONNECTIONS = 100
APP_PASSWORD = "app-secret-password"
BACKUP_DIR = "/var/backups/postgresql/appdb"
KEEP = 3  # postgresql_backup_keep in converge.yml
UNITS = {"kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def debian_major(host) -> int:
    return int(host.check_output(". /etc/os-release && echo $VERSION_ID").split(".")[0])


def pg_major(host) -> int:
    return EXPECTED_MAJOR[debian_major(host)]


def superuser(host, sql: str) -> str:
    """Run SQL as the postgres superuser (peer login on the Unix socket)."""
    return host.check_output(f"runuser -u postgres -- psql -X -At -d appdb -c {shlex.quote(sql)}")


def as_user(host, sql: str, user: str = "app", password: str = APP_PASSWORD):
    """Run SQL over TCP with a password, as a client application would."""
    return host.run(
        f"PGPASSWORD={shlex.quote(password)} psql -X -At -h 127.0.0.1 -U {user} -d appdb -c {shlex.quote(sql)}")


def size_bytes(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)\s*(kB|MB|GB|TB)", text.strip()).groups()
    return int(number) * UNITS[unit]


def test_server_runs_the_debian_version(host):
    major = pg_major(host)
    assert_running(host, f"postgresql@{major}-main")
    assert_running(host, "postgresql")
    version = int(superuser(host, "SHOW server_version_num"))
    assert version // 10000 == major


def test_memory_settings_follow_the_host(host):
    mem_mb = int(host.check_output("awk '/^MemTotal:/ {print $2}' /proc/meminfo")) // 1024
    cpus = int(host.check_output("grep -c ^processor /proc/cpuinfo"))
    ram = int(mem_mb * SHARE)
    workers = max(cpus, 8)
    shared_buffers = ram // 4
    expected = {
        "shared_buffers": shared_buffers,
        "effective_cache_size": ram * 3 // 4,
        "maintenance_work_mem": min(ram // 16, 2048),
        "work_mem": max((ram - shared_buffers) // ((MAX_CONNECTIONS + workers) * 3), 4),
    }
    for name, mb in expected.items():
        shown = superuser(host, f"SHOW {name}")
        assert size_bytes(shown) == mb * UNITS["MB"], f"{name} is {shown}, expected {mb}MB"
    assert superuser(host, "SHOW max_worker_processes") == str(workers)
    assert superuser(host, "SHOW wal_buffers") == "16MB"
    assert superuser(host, "SHOW checkpoint_completion_target") == "0.9"
    assert superuser(host, "SHOW random_page_cost") == "1.1"
    assert superuser(host, "SELECT count(*) FROM pg_settings WHERE pending_restart") == "0"


def test_cluster_in_the_configured_data_directory_and_locale(host):
    assert superuser(host, "SHOW data_directory") == "/srv/postgresql/main"
    assert superuser(host, "SELECT datcollate FROM pg_database WHERE datname = 'appdb'") == "C.UTF-8"
    assert superuser(host, "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'appdb'") == "UTF8"


def test_passwords_are_scram_and_hba_has_no_weak_rule(host):
    assert superuser(host, "SHOW password_encryption") == "scram-sha-256"
    assert superuser(host, "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'app'") == "SCRAM-SHA-256$"
    rules = superuser(host, "SELECT type, auth_method FROM pg_hba_file_rules ORDER BY line_number").splitlines()
    assert rules[0] == "local|peer"
    assert superuser(host, "SELECT user_name[1] FROM pg_hba_file_rules ORDER BY line_number LIMIT 1") == "postgres"
    for rule in rules:
        kind, method = rule.split("|")
        assert method not in ("trust", "md5", "password"), rule
        if kind.startswith("host"):
            assert method == "scram-sha-256", rule
    assert superuser(host, "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL") == "0"
    hba = host.file(f"/etc/postgresql/{pg_major(host)}/main/pg_hba.conf")
    assert hba.user == "postgres" and hba.mode == 0o640


def test_listens_only_on_loopback(host):
    listeners = [line.split()[3] for line in host.check_output("ss -Hltn").splitlines()]
    postgres = [address for address in listeners if address.endswith(":5432")]
    assert postgres, f"nothing listens on 5432: {listeners}"
    for address in postgres:
        assert address.rsplit(":", 1)[0] in ("127.0.0.1", "[::1]"), f"PostgreSQL listens on {address}"


def test_password_login_over_tcp(host):
    good = as_user(host, "SELECT 1")
    assert good.rc == 0 and good.stdout.strip() == "1", good.stderr
    bad = as_user(host, "SELECT 1", password="wrong-password")
    assert bad.rc != 0
    assert "password authentication failed" in bad.stderr
    assert as_user(host, "SELECT 1", user="reporter", password="reporter-secret-password").rc == 0


def test_extension_is_created(host):
    assert superuser(host, "SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'") == "pg_trgm"


def test_backup_timer_and_directory(host):
    assert host.service("prodready-postgresql-backup.timer").is_enabled
    assert host.service("prodready-postgresql-backup.timer").is_running
    directory = host.file("/var/backups/postgresql")
    assert directory.user == "postgres" and directory.mode == 0o700


def run_backup(host) -> None:
    result = host.run("systemctl start prodready-postgresql-backup.service")
    journal = host.run("journalctl -u prodready-postgresql-backup --no-pager -n 20").stdout
    assert result.rc == 0, f"backup failed: {result.stderr}\n{journal}"


def restore_with_the_role(host, database: str) -> None:
    """Run the role's tasks_from=restore against this host, as an operator would."""
    playbook = (
        "- hosts: all\n"
        "  gather_facts: true\n"
        "  tasks:\n"
        "    - ansible.builtin.include_role:\n"
        "        name: prodready.django.postgresql\n"
        "        tasks_from: restore\n"
        "      vars:\n"
        f"        postgresql_restore_database: {database}\n"
    )
    project = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.getcwd())
    env = dict(os.environ, ANSIBLE_PIPELINING="true", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_COLLECTIONS_PATH=os.path.join(project, ".cache", "collections"))
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as handle:
        handle.write(playbook)
    try:
        proc = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
             "-i", os.environ["MOLECULE_INVENTORY_FILE"], "--limit", host.backend.get_hostname(), handle.name],
            env=env, capture_output=True, text=True, timeout=600, check=False)
    finally:
        os.unlink(handle.name)
    assert proc.returncode == 0, f"restore failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"


def test_backup_and_restore_round_trip(host):
    setup = as_user(host, "DROP TABLE IF EXISTS roundtrip; CREATE TABLE roundtrip (id int);"
                          " INSERT INTO roundtrip SELECT generate_series(1, 42);")
    assert setup.rc == 0, setup.stderr
    # The default privileges let reporter read what app creates.
    assert as_user(host, "SELECT count(*) FROM roundtrip", user="reporter",
                   password="reporter-secret-password").stdout.strip() == "42"
    run_backup(host)
    dumps = host.check_output(f"ls -1 {BACKUP_DIR}").split()
    assert dumps and all(re.fullmatch(r"appdb-\d{8}T\d{6}\.\d+Z\.pgc", name) for name in dumps), dumps
    assert host.file(f"{BACKUP_DIR}/{sorted(dumps)[-1]}").user == "postgres"

    assert as_user(host, "DROP TABLE roundtrip").rc == 0
    assert as_user(host, "SELECT count(*) FROM roundtrip").rc != 0
    restore_with_the_role(host, "appdb")
    restored = as_user(host, "SELECT count(*), sum(id) FROM roundtrip")
    assert restored.rc == 0 and restored.stdout.strip() == "42|903", restored.stderr
    assert superuser(host, "SELECT tableowner FROM pg_tables WHERE tablename = 'roundtrip'") == "app"
    assert superuser(host, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'appdb'") == "app"


def test_backup_keeps_only_the_newest(host):
    for _ in range(KEEP + 2):
        run_backup(host)
    dumps = host.check_output(f"ls -1A {BACKUP_DIR}").split()
    assert len(dumps) == KEEP, dumps
    assert not [name for name in dumps if name.endswith(".part")]


def test_local_facts(host):
    facts = json.loads(host.file("/etc/ansible/facts.d/prodready_postgresql.fact").content_string)
    assert str(facts["version"]) == str(pg_major(host))
    assert int(facts["port"]) == 5432
    assert facts["data_dir"] == "/srv/postgresql/main"
    assert facts["databases"] == ["appdb"]


@pytest.mark.parametrize("unit", ["prodready-postgresql-backup.service", "prodready-postgresql-backup.timer"])
def test_units_are_valid(host, unit):
    result = host.run(f"systemd-analyze verify /etc/systemd/system/{unit}")
    assert result.rc == 0, result.stderr
