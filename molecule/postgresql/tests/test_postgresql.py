"""What a user of the postgresql role relies on, checked with psql on the converged hosts.

The layout (molecule.yml): postgresql-debian12 is a standalone primary and the app host;
postgresql-debian13 a primary whose app host (debian12) and replica are other machines;
postgresql-debian13-replica its hot standby. The cross-host tests run once, for the replica.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import testinfra
from prodready_testinfra import assert_running

EXPECTED_MAJOR = {12: 15, 13: 17}
SHARE = 0.5  # postgresql_memory_share in converge.yml
MAX_CONNECTIONS = 100
APP_PASSWORD = "app-secret-password"
BACKUP_DIR = "/var/backups/postgresql/appdb"
KEEP = 3  # postgresql_backup_keep in converge.yml
UNITS = {"kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}

# The layout and addresses of molecule.yml, and the replication inputs of converge.yml.
STANDALONE, PRIMARY, REPLICA = "postgresql-debian12", "postgresql-debian13", "postgresql-debian13-replica"
APP_HOST = STANDALONE
ADDRESS = {STANDALONE: "10.213.54.12", PRIMARY: "10.213.54.13", REPLICA: "10.213.54.23"}
REPLICATION_PASSWORD = "replication:secret\\password"
SLOT = "postgresql_debian13_replica"
DATA_DIR = "/srv/postgresql/main"
CONVERGE = Path(__file__).resolve().parent.parent / "converge.yml"
# Straight through docker exec for the cross-host tests (the containers are the scenario's own).
HOSTS = {name: testinfra.get_host(f"docker://{name}") for name in ADDRESS}


def debian_major(host) -> int:
    return int(host.check_output(". /etc/os-release && echo $VERSION_ID").split(".")[0])


def pg_major(host) -> int:
    return EXPECTED_MAJOR[debian_major(host)]


def name_of(host) -> str:
    return host.backend.get_hostname()


def superuser(host, sql: str) -> str:
    """Run SQL as the postgres superuser (peer login on the Unix socket)."""
    return host.check_output(f"runuser -u postgres -- psql -X -At -d appdb -c {shlex.quote(sql)}")


def as_user(host, sql: str, user: str = "app", password: str = APP_PASSWORD, address: str = "127.0.0.1"):
    """Run SQL over TCP with a password, as a client application would."""
    return host.run(
        f"PGPASSWORD={shlex.quote(password)} psql -X -At -h {address} -U {user} -d appdb -c {shlex.quote(sql)}")


def only_for(host, name: str) -> None:
    """Run a test that spans several hosts once, for one of them."""
    if name_of(host) != name:
        pytest.skip(f"checked once, for {name}")


def replica_only_skips(host) -> None:
    if name_of(host) == REPLICA:
        pytest.skip("a replica is read-only: it takes no writes, dumps or restores (the primary does)")


def run_converge(*extra: str, limit: str = REPLICA) -> subprocess.CompletedProcess:
    """Run converge.yml again on some hosts, with extra arguments, as an operator would."""
    project = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.getcwd())
    env = dict(os.environ, ANSIBLE_PIPELINING="true", ANSIBLE_FORCE_COLOR="0", NO_COLOR="1",
               ANSIBLE_COLLECTIONS_PATH=os.path.join(project, ".cache", "collections"))
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
         "-i", os.environ["MOLECULE_INVENTORY_FILE"], "--limit", limit, *extra, str(CONVERGE)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900, check=False)


def flat(output: str) -> str:
    return " ".join(output.replace("│", " ").split())


def wait_for(check, seconds: float, what: str):
    """Poll check() until it returns something true, at most `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}: not after {seconds}s"
        time.sleep(0.5)


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


def test_listens_on_the_private_address_only_for_clients_on_other_hosts(host):
    """The standalone host (its app on the same machine) listens on loopback only; the
    primary and the replica, whose app host (and replica) are other machines, on their
    private address too, and nowhere else."""
    listeners = [line.split()[3] for line in host.check_output("ss -Hltn").splitlines()]
    postgres = {address.rsplit(":", 1)[0] for address in listeners if address.endswith(":5432")}
    assert postgres, f"nothing listens on 5432: {listeners}"
    loopback = {"127.0.0.1", "[::1]"}
    expected = set() if name_of(host) == STANDALONE else {ADDRESS[name_of(host)]}
    assert postgres - loopback == expected, f"PostgreSQL listens on {sorted(postgres)}"
    assert postgres & loopback, f"PostgreSQL does not listen on loopback: {sorted(postgres)}"


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
    timer = host.service("prodready-postgresql-backup.timer")
    if name_of(host) == REPLICA:
        # The primary's dumps cover the replica's data (the role's README).
        assert not timer.is_enabled and not timer.is_running
    else:
        assert timer.is_enabled and timer.is_running
    directory = host.file("/var/backups/postgresql")
    assert directory.user == "postgres" and directory.mode == 0o700


def run_backup(host) -> None:
    result = host.run("systemctl start prodready-postgresql-backup.service")
    journal = host.run("journalctl -u prodready-postgresql-backup --no-pager -n 20").stdout
    assert result.rc == 0, f"backup failed: {result.stderr}\n{journal}"


def run_restore(host, database: str) -> subprocess.CompletedProcess:
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
        return subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
             "-i", os.environ["MOLECULE_INVENTORY_FILE"], "--limit", host.backend.get_hostname(), handle.name],
            env=env, capture_output=True, text=True, timeout=600, check=False)
    finally:
        os.unlink(handle.name)


def restore_with_the_role(host, database: str) -> None:
    proc = run_restore(host, database)
    assert proc.returncode == 0, f"restore failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"


def test_backup_and_restore_round_trip(host):
    replica_only_skips(host)
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
    replica_only_skips(host)
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
    expected = {
        STANDALONE: ("primary", "", []),
        PRIMARY: ("primary", "", [REPLICA]),
        REPLICA: ("replica", PRIMARY, []),
    }[name_of(host)]
    assert (facts["replication_role"], facts["replication_primary"], facts["replicas"]) == expected


@pytest.mark.parametrize("unit", ["prodready-postgresql-backup.service", "prodready-postgresql-backup.timer"])
def test_units_are_valid(host, unit):
    result = host.run(f"systemd-analyze verify /etc/systemd/system/{unit}")
    assert result.rc == 0, result.stderr


def network_rules(host) -> set[tuple[str, str, str, str]]:
    """pg_hba.conf rules for addresses other than loopback: (database, user, address, method)."""
    rows = superuser(host, "SELECT array_to_string(database, ','), array_to_string(user_name, ','), address,"
                           " auth_method FROM pg_hba_file_rules"
                           " WHERE type LIKE 'host%' AND address NOT IN ('127.0.0.1', '::1')")
    return {tuple(row.split("|")) for row in rows.splitlines()}


def test_hba_lets_in_exactly_the_hosts_of_the_layout(host):
    """Each app host on another machine may log in to appdb as its owner, each replica may
    stream from its primary; nothing else, and nothing at all on the standalone host."""
    app = ("appdb", "app", ADDRESS[APP_HOST], "scram-sha-256")
    expected = {
        STANDALONE: set(),
        PRIMARY: {app, ("replication", "replicator", ADDRESS[REPLICA], "scram-sha-256")},
        REPLICA: {app},
    }[name_of(host)]
    assert network_rules(host) == expected


def test_replica_streams_through_its_slot(host):
    only_for(host, REPLICA)
    primary, replica = HOSTS[PRIMARY], HOSTS[REPLICA]
    streaming = superuser(primary, "SELECT r.application_name, host(r.client_addr), r.state, s.slot_type"
                                   " FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid"
                                   f" WHERE s.slot_name = '{SLOT}'")
    assert streaming == f"{SLOT}|{ADDRESS[REPLICA]}|streaming|physical", streaming
    assert superuser(primary, f"SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{SLOT}'") == "reserved"
    assert superuser(primary, "SHOW max_slot_wal_keep_size") == "10GB"
    assert superuser(primary, "SHOW wal_level") == "replica"
    assert superuser(replica, "SELECT pg_is_in_recovery()") == "t"
    assert superuser(replica, "SHOW hot_standby") == "on"
    assert superuser(replica, "SELECT status, slot_name, sender_host FROM pg_stat_wal_receiver") == \
        f"streaming|{SLOT}|{ADDRESS[PRIMARY]}"
    # The standalone primary has no replica: PostgreSQL's defaults, no slot, no replication user.
    standalone = HOSTS[STANDALONE]
    assert superuser(standalone, "SELECT count(*) FROM pg_replication_slots") == "0"
    assert superuser(standalone, "SELECT count(*) FROM pg_roles WHERE rolname = 'replicator'") == "0"


def test_row_written_on_the_primary_is_read_on_the_replica(host):
    only_for(host, REPLICA)
    token = uuid.uuid4().hex
    written = as_user(HOSTS[PRIMARY], "CREATE TABLE IF NOT EXISTS replicated (token text);"
                                      f" INSERT INTO replicated VALUES ('{token}')")
    assert written.rc == 0, written.stderr

    def seen():
        read = as_user(HOSTS[REPLICA], f"SELECT count(*) FROM replicated WHERE token = '{token}'")
        return read.rc == 0 and read.stdout.strip() == "1"

    wait_for(seen, 30, "the row written on the primary on the replica")


def test_replica_is_read_only(host):
    only_for(host, REPLICA)
    for sql in ("CREATE TABLE not_here (id int)", "INSERT INTO replicated VALUES ('no')"):
        refused = as_user(HOSTS[REPLICA], sql)
        assert refused.rc != 0, f"the replica took {sql}"
        assert "read-only transaction" in refused.stderr, refused.stderr


def test_app_host_reaches_the_tier_over_the_private_network(host):
    """The app host logs in to the primary (and reads from the replica) at their private
    addresses; the replica's host, no app host, is refused by the primary, and so is a
    replication connection from the app host."""
    only_for(host, REPLICA)
    app = HOSTS[APP_HOST]
    on_primary = as_user(app, "SELECT current_user, inet_server_addr()", address=ADDRESS[PRIMARY])
    assert on_primary.rc == 0 and on_primary.stdout.strip() == f"app|{ADDRESS[PRIMARY]}", on_primary.stderr
    on_replica = as_user(app, "SELECT pg_is_in_recovery()", address=ADDRESS[REPLICA])
    assert on_replica.rc == 0 and on_replica.stdout.strip() == "t", on_replica.stderr
    stranger = as_user(HOSTS[REPLICA], "SELECT 1", address=ADDRESS[PRIMARY])
    assert stranger.rc != 0 and "no pg_hba.conf entry" in stranger.stderr, stranger.stderr
    replication = app.run(
        f"PGPASSWORD={shlex.quote(REPLICATION_PASSWORD)} psql -X -At"
        f" 'host={ADDRESS[PRIMARY]} user=replicator dbname=replication replication=true' -c IDENTIFY_SYSTEM")
    assert replication.rc != 0 and "no pg_hba.conf entry for replication connection" in replication.stderr, \
        replication.stderr
    # The standalone host is not on the network.
    assert as_user(HOSTS[PRIMARY], "SELECT 1", address=ADDRESS[STANDALONE]).rc != 0


def test_replication_password_stays_secret(host):
    """The replica reads the password from a 0600 passfile that primary_conninfo names;
    no world-readable file of the configuration or the data holds it."""
    escaped = REPLICATION_PASSWORD.replace("\\", "\\\\").replace(":", "\\:")
    needles = " ".join(f"-e {shlex.quote(text)}" for text in (REPLICATION_PASSWORD, escaped))
    leaks = host.run(f"find /etc/postgresql {DATA_DIR} -type f -perm -0004 -exec grep -l -F {needles} {{}} +")
    assert leaks.stdout.strip() == "", f"world-readable files hold the replication password: {leaks.stdout}"
    passfile = host.file(f"/etc/postgresql/{pg_major(host)}/main/replication.pgpass")
    if name_of(host) != REPLICA:
        assert not passfile.exists
        return
    assert passfile.user == "postgres" and passfile.group == "postgres" and passfile.mode == 0o600
    assert escaped in passfile.content_string
    conninfo = superuser(host, "SHOW primary_conninfo")
    assert f"passfile='{passfile.path}'" in conninfo or f"passfile={passfile.path}" in conninfo, conninfo
    assert "password=" not in conninfo.replace("passfile=", ""), conninfo
    assert REPLICATION_PASSWORD not in host.file(f"{DATA_DIR}/postgresql.auto.conf").content_string
    # On the primary: a scram-sha-256 hash.
    assert superuser(HOSTS[PRIMARY], "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'replicator'") \
        == "SCRAM-SHA-256$"


def test_restore_is_refused_on_the_replica(host):
    only_for(host, REPLICA)
    proc = run_restore(host, "appdb")
    assert proc.returncode != 0
    output = flat(proc.stdout + proc.stderr)
    assert "is a replica (postgresql_replication_role), a read-only copy of its primary" in output, output[-3000:]


def test_replica_that_lost_its_slot_is_cloned_again(host):
    """max_slot_wal_keep_size bounds the WAL a dead replica holds back: past it, the primary
    invalidates the slot instead of filling its disk. The next converge of the replica makes
    the slot anew and clones the primary again (the replica alone: --limit)."""
    only_for(host, REPLICA)
    replica, primary = HOSTS[REPLICA], HOSTS[PRIMARY]
    replica.check_output("systemctl stop postgresql@17-main")
    try:
        # A bound of 1MB, for this test only (ALTER SYSTEM wins over the role's conf.d file).
        superuser(primary, "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        superuser(primary, "SELECT pg_reload_conf()")
        for _ in range(3):
            for sql in ("CREATE TABLE walfill AS SELECT g, md5(g::text) FROM generate_series(1, 100000) g",
                        "DROP TABLE walfill", "SELECT pg_switch_wal()", "CHECKPOINT"):
                superuser(primary, sql)
        assert superuser(primary, f"SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{SLOT}'") == "lost"
    finally:
        superuser(primary, "ALTER SYSTEM RESET max_slot_wal_keep_size")
        superuser(primary, "SELECT pg_reload_conf()")
    cloned = run_converge()
    assert cloned.returncode == 0, cloned.stdout[-3000:]
    assert re.search(r"Clone the primary with pg_basebackup\][^\n]*\nchanged: ", cloned.stdout), cloned.stdout[-3000:]
    assert superuser(primary, f"SELECT wal_status, active FROM pg_replication_slots WHERE slot_name = '{SLOT}'") \
        == "reserved|t"
    assert superuser(replica, "SELECT status FROM pg_stat_wal_receiver") == "streaming"


ALLOW_RECLONE = json.dumps({"postgresql_replication_allow_reclone": True})


# Last: it promotes the replica and makes it a standby again.
def test_promoted_replica_is_refused_then_cloned_again(host):
    """A replica whose cluster holds data of its own (here: promoted) is not replaced unless
    postgresql_replication_allow_reclone is true; in check mode the clone is reported and not
    run; then the role clones the primary again and the replica streams."""
    only_for(host, REPLICA)
    replica, primary = HOSTS[REPLICA], HOSTS[PRIMARY]
    superuser(replica, "SELECT pg_promote()")
    wait_for(lambda: superuser(replica, "SELECT pg_is_in_recovery()") == "f", 30, "the replica promoted")
    assert as_user(replica, "CREATE TABLE promoted_only (id int)").rc == 0

    refused = run_converge()
    assert refused.returncode != 0
    assert (f"postgresql_replication_allow_reclone: {REPLICA} is a replica (postgresql_replication_role) but its"
            f" cluster is not a standby of {PRIMARY}, and it holds the databases appdb") in flat(refused.stdout), \
        refused.stdout[-3000:]

    checked = run_converge("--check", "-e", ALLOW_RECLONE)
    assert checked.returncode == 0, checked.stdout[-3000:]
    clone = re.search(r"TASK \[[^\]]*Clone the primary with pg_basebackup\][^\n]*\n(\S+): \[", checked.stdout)
    assert clone and clone.group(1) == "changed", checked.stdout[-3000:]
    assert superuser(replica, "SELECT pg_is_in_recovery()") == "f", "check mode changed the replica"

    cloned = run_converge("-e", ALLOW_RECLONE)
    assert cloned.returncode == 0, cloned.stdout[-3000:]
    assert superuser(replica, "SELECT pg_is_in_recovery()") == "t"
    assert superuser(replica, "SELECT to_regclass('promoted_only') IS NULL") == "t"
    assert superuser(replica, "SELECT status FROM pg_stat_wal_receiver") == "streaming"
    assert superuser(primary, f"SELECT active FROM pg_replication_slots WHERE slot_name = '{SLOT}'") == "t"
