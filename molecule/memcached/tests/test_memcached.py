"""What a user of the memcached role relies on, checked on the converged hosts."""

import json
import shlex

import pytest
from prodready_testinfra import assert_running

PORT = 11211
MEMORY_SHARE = 0.05  # converge.yml
MAX_CONNECTIONS = 2048  # converge.yml
SASL_USER, SASL_PASSWORD = "django", "molecule-sasl-secret"  # converge.yml, on Debian 13

# A tiny memcached client run on the host with its own python3. It speaks the binary
# protocol, the only one memcached serves once SASL is on, and prints one JSON result
# per operation: {"status": n, ...}. Status 0 is success, 0x20 an authentication error.
CLIENT = r'''
import json, socket, struct, sys
HEADER = ">BBHBBHIIQ"
def call(sock, opcode, key=b"", value=b"", extras=b""):
    body = extras + key + value
    sock.sendall(struct.pack(HEADER, 0x80, opcode, len(key), len(extras), 0, 0, len(body), 0, 0) + body)
    replies = []
    while True:
        head = b""
        while len(head) < 24:
            chunk = sock.recv(24 - len(head))
            if not chunk:
                return replies or [(None, b"", b"")]
            head += chunk
        _, _, keylen, extlen, _, status, bodylen, _, _ = struct.unpack(HEADER, head)
        body = b""
        while len(body) < bodylen:
            body += sock.recv(bodylen - len(body))
        replies.append((status, body[extlen:extlen + keylen], body[extlen + keylen:]))
        if opcode != 0x10 or not keylen or status:
            return replies
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
out = []
for op in json.loads(sys.argv[2]):
    if op[0] == "auth":
        (status, _, _), = call(sock, 0x21, b"PLAIN", ("\0%s\0%s" % (op[1], op[2])).encode())
        out.append({"status": status})
    elif op[0] == "stats":
        replies = call(sock, 0x10, op[1].encode())
        out.append({"status": replies[0][0], "stats": {k.decode(): v.decode() for _, k, v in replies if k}})
    elif op[0] == "set":
        (status, _, _), = call(sock, 0x01, op[1].encode(), op[2].encode(), struct.pack(">II", 0, 60))
        out.append({"status": status})
    elif op[0] == "get":
        (status, _, value), = call(sock, 0x00, op[1].encode())
        out.append({"status": status, "value": value.decode(errors="replace")})
print(json.dumps(out))
'''


def sasl_on(host) -> bool:
    return "debian13" in host.backend.get_hostname()


def memcached(host, *ops, auth=True):
    """Run operations over one TCP connection, logging in first on a SASL host."""
    if auth and sasl_on(host):
        ops = (("auth", SASL_USER, SASL_PASSWORD),) + ops
    cmd = f"python3 -c {shlex.quote(CLIENT)} {PORT} {shlex.quote(json.dumps(ops))}"
    results = host.check_output(cmd)
    results = json.loads(results)
    if auth and sasl_on(host):
        assert results[0]["status"] == 0, "SASL login with the configured account failed"
        results = results[1:]
    return results


def expected_memory_mb(host) -> int:
    """The role's formula: share of MemTotal in whole MiB, as Ansible's memtotal_mb counts it."""
    kib = int(host.check_output("awk '/^MemTotal:/ {print $2}' /proc/meminfo"))
    return max(int(kib // 1024 * MEMORY_SHARE), 1)


def test_service_is_running(host):
    assert_running(host, "memcached")


def test_stats_hold_the_configured_values(host):
    (stats,) = memcached(host, ("stats", ""))
    assert stats["status"] == 0
    assert int(stats["stats"]["limit_maxbytes"]) == expected_memory_mb(host) * 1024 * 1024
    assert int(stats["stats"]["max_connections"]) == MAX_CONNECTIONS
    assert int(stats["stats"]["threads"]) == 4


def test_settings(host):
    (settings,) = memcached(host, ("stats", "settings"))
    values = settings["stats"]
    assert values["udpport"] == "0", "UDP must be off"
    assert values["tcpport"] == str(PORT)
    assert int(values["item_size_max"]) == 2 * 1024 * 1024
    assert values["maxconns"] == str(MAX_CONNECTIONS)
    assert values["auth_enabled_sasl"] == ("yes" if sasl_on(host) else "no")


def test_set_then_get(host):
    value = f"hello from {host.backend.get_hostname()}"
    stored, fetched, missing = memcached(host, ("set", "prodready:test", value), ("get", "prodready:test"),
                                         ("get", "prodready:absent"))
    assert stored["status"] == 0
    assert fetched == {"status": 0, "value": value}
    assert missing["status"] == 1  # key not found


def test_listens_only_on_loopback_tcp(host):
    tcp = host.check_output(f"ss -Hltn 'sport = :{PORT}'").splitlines()
    assert tcp, f"nothing listens on TCP port {PORT}"
    assert all(line.split()[3] == f"127.0.0.1:{PORT}" for line in tcp), tcp
    assert host.check_output(f"ss -Hlun 'sport = :{PORT}'") == "", "UDP must be closed"


def test_plain_text_protocol(host):
    """Django's PyMemcacheCache speaks the plain-text protocol: it answers on a host
    without SASL, and is refused (connection closed) once SASL is on."""
    script = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {PORT}), timeout=5)\n"
        "s.sendall(b'stats\\r\\nquit\\r\\n')\n"
        "data = b''\n"
        "while True:\n"
        "    chunk = s.recv(4096)\n"
        "    if not chunk:\n"
        "        break\n"
        "    data += chunk\n"
        "print(data.decode(errors='replace'))\n"
    )
    reply = host.run(f"python3 -c {shlex.quote(script)}").stdout
    if sasl_on(host):
        assert "STAT limit_maxbytes" not in reply
    else:
        assert f"STAT limit_maxbytes {expected_memory_mb(host) * 1024 * 1024}" in reply


def test_sasl_refuses_strangers(host):
    if not sasl_on(host):
        pytest.skip("SASL is on only on Debian 13 in this scenario")
    (anonymous,) = memcached(host, ("get", "prodready:test"), auth=False)
    assert anonymous["status"] == 0x20, "a client that did not log in must be refused"
    (wrong,) = memcached(host, ("auth", SASL_USER, "wrong password"), auth=False)
    assert wrong["status"] == 0x20
    (other, _) = memcached(host, ("auth", "worker", "another-sasl-secret"), ("stats", ""), auth=False)
    assert other["status"] == 0, "every configured account can log in"
    db = host.file("/etc/sasl2/memcached-sasldb2")
    assert db.user == "root" and db.group == "memcache" and db.mode == 0o640


def test_local_facts(host):
    facts = json.loads(host.file("/etc/ansible/facts.d/prodready_memcached.fact").content_string)
    assert facts["listen"] == ["127.0.0.1"]
    assert facts["port"] == PORT
    assert facts["udp_port"] == 0
    assert facts["memory_mb"] == expected_memory_mb(host)
    assert facts["max_connections"] == MAX_CONNECTIONS
    assert facts["sasl_enabled"] is sasl_on(host)
    assert facts["sasl_users"] == (["django", "worker"] if sasl_on(host) else [])
