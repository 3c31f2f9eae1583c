"""What Django relies on from the redis role, checked on the converged hosts with redis-cli."""

import json
import re
import shlex

import pytest
from prodready_testinfra import assert_running

# The values converge.yml gives the role.
PASSWORD = 'molecule-Redis-t3st "quoted" pass'
PORT = 6379
MEMORY_SHARE = 0.1
POLICY = "volatile-lru"


def cli(host, *args, auth=True):
    """redis-cli on the host; the password goes in REDISCLI_AUTH, never on the command line."""
    env = f"REDISCLI_AUTH={shlex.quote(PASSWORD)} " if auth else ""
    command = " ".join(shlex.quote(a) for a in args)
    result = host.run(f"{env}redis-cli --no-raw -p {PORT} {command}")
    return result.stdout + result.stderr


def info(host, section):
    text = cli(host, "INFO", section)
    return dict(re.findall(r"^(\w+):(.*?)\r?$", text, re.M))


def test_service_running(host):
    assert_running(host, "redis-server")


def test_refuses_clients_without_the_password(host):
    assert "NOAUTH" in cli(host, "SET", "anonymous", "1", auth=False)
    wrong = host.run(f"REDISCLI_AUTH=wrong redis-cli -p {PORT} PING")
    assert "WRONGPASS" in wrong.stdout + wrong.stderr


def test_a_user_of_its_own_logs_in_with_its_password_only(host):
    """redis_users of converge.yml: the user works with its password, is refused with
    another, cannot run the disabled commands, and the file holds only the password's hash."""
    def as_worker(password, *args):
        result = host.run(f"REDISCLI_AUTH={shlex.quote(password)} redis-cli --user worker -p {PORT} "
                          + " ".join(shlex.quote(a) for a in args))
        return result.stdout + result.stderr
    assert as_worker("molecule-worker-t3st", "-n", "1", "SET", "worker-key", "1").strip() == "OK"
    assert "WRONGPASS" in as_worker(PASSWORD, "PING")
    assert "unknown command" in as_worker("molecule-worker-t3st", "FLUSHALL").lower()
    conf = host.file("/etc/redis/redis.conf").content_string
    assert "molecule-worker-t3st" not in conf
    assert re.search(r"^user worker on #[0-9a-f]{64} ", conf, re.M), conf


def test_set_and_get_with_the_password(host):
    assert "OK" in cli(host, "SET", "prodready:test", "hello")
    assert '"hello"' in cli(host, "GET", "prodready:test")


@pytest.mark.parametrize("command", [["CONFIG", "GET", "maxmemory"], ["FLUSHALL"], ["FLUSHDB"], ["DEBUG", "SLEEP", "0"]])
def test_dangerous_commands_are_disabled(host, command):
    assert "unknown command" in cli(host, *command)


def test_maxmemory_is_the_configured_share_of_ram(host):
    memtotal_kb = int(re.search(r"^MemTotal:\s+(\d+) kB", host.file("/proc/meminfo").content_string, re.M).group(1))
    expected_mb = int((memtotal_kb // 1024) * MEMORY_SHARE)  # the role's formula, on Ansible's memtotal_mb
    memory = info(host, "memory")
    assert int(memory["maxmemory"]) == expected_mb * 1024 * 1024
    assert memory["maxmemory_policy"] == POLICY


def test_append_only_persistence_survives_a_restart(host):
    persistence = info(host, "persistence")
    assert persistence["aof_enabled"] == "1"
    assert "OK" in cli(host, "SET", "prodready:durable", "kept")
    host.check_output("systemctl restart redis-server")
    for _ in range(50):
        if "PONG" in cli(host, "PING"):
            break
        host.run("sleep 0.2")
    assert '"kept"' in cli(host, "GET", "prodready:durable")


def test_listens_only_on_loopback(host):
    listening = host.check_output("ss -Hltn")
    addresses = {line.split()[3] for line in listening.splitlines() if line.split()[3].endswith(f":{PORT}")}
    assert addresses == {f"127.0.0.1:{PORT}", f"[::1]:{PORT}"}
    assert info(host, "server")["tcp_port"] == str(PORT)


def test_configuration_is_private(host):
    conf = host.file("/etc/redis/redis.conf")
    assert conf.mode == 0o640 and conf.user == "root" and conf.group == "redis"
    assert "protected-mode yes" in conf.content_string


def test_local_facts_hold_no_password(host):
    fact = host.file("/etc/ansible/facts.d/prodready_redis.fact")
    assert PASSWORD not in fact.content_string and "quoted" not in fact.content_string
    facts = json.loads(fact.content_string)
    assert facts["port"] == PORT
    assert facts["maxmemory_mb"] * 1024 * 1024 == int(info(host, "memory")["maxmemory"])
    assert facts["persistence"] == "aof"


def test_overcommit_memory_is_configured_for_the_host(host):
    content = host.file("/etc/sysctl.d/60-prodready-redis.conf").content_string
    assert re.search(r"^vm\.overcommit_memory\s*=\s*1$", content, re.M)
