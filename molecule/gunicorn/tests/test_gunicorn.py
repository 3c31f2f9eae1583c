"""The gunicorn role on the converged hosts: two instances (blue, green) behind one front,
the live one hardened and answering through the unix socket and the loopback port, and a
new release, a restart or new settings taken over under load without a failed request,
by an instance that answered nothing before it was ready and healthy."""

import base64
import json
import re
import shlex
import time
from pathlib import Path

import pytest
from prodready_testinfra import assert_running, journal_tail

# The values converge.yml gives the role.
APP = "demo"
UNIT = "gunicorn-demo"
SOCKET = "/run/gunicorn-demo.sock"
TCP = "127.0.0.1:8000"
INSTANCE_PORTS = {"blue": 8001, "green": 8002}
WORKERS = 3
CURRENT = "/srv/demo/current"
SCRIPT = "prodready-gunicorn"
STATE = "/var/lib/prodready-gunicorn/demo"
LOADGEN = Path(__file__).with_name("loadgen.py").read_text()


def get(host, path="/", target=SOCKET, user=None):
    """curl on the host, through the unix socket or the loopback port; (exit code, body)."""
    where = f"--unix-socket {target} http://localhost" if target.startswith("/") else f"http://{target}"
    command = f"curl -sS --max-time 10 {where}{path}"
    if user:
        command = f"runuser -u {user} -- {command}"
    result = host.run(command)
    return result.rc, result.stdout


def status(host):
    return json.loads(host.check_output(f"{SCRIPT} {APP} status"))


def live(host):
    return status(host)["live"]


def main_pid(host, colour=None):
    colour = colour or live(host)
    return int(host.check_output(f"systemctl show -p MainPID --value {UNIT}@{colour}.service"))


def workers(host, colour=None):
    return host.check_output(f"pgrep -P {main_pid(host, colour)} || true").split()


def events(host):
    text = host.run(f"cat {STATE}/events.jsonl").stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def activate(release):
    return f"{SCRIPT} {APP} activate /srv/demo/releases/{release}"


def run_load(host, action, target=SOCKET, threads=10, requests=100, after=200, expect_rc=0):
    """loadgen.py in the container (bounded: 60 s, 10 s per request); its JSON report."""
    script = base64.b64encode(LOADGEN.encode()).decode()
    host.check_output(f"echo {script} | base64 -d > /tmp/loadgen.py")
    args = " ".join(shlex.quote(str(a)) for a in (target, threads, requests, after, action))
    out = host.check_output(f"timeout 90 python3 /tmp/loadgen.py {args}")
    report = json.loads(out)
    assert report["action"][2] == expect_rc, f"the action {action!r} exited {report['action'][2]}:\n" \
        f"{report['action'][3]}\n{journal_tail(host, f'{UNIT}@*')}"
    return report


def assert_no_failure(host, report):
    results = report["results"]
    failed = [r for r in results if r[2] != 200]
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:5]}\n{journal_tail(host, f'{UNIT}@*')}"
    assert len(results) >= 1000


def assert_one_switch(host, report, old_release, new_release):
    """Two instances answered: the old one every request that started before the switch,
    the new one every request that started after it (50 ms either way for the time between
    a request's start and its connection), and the new one nothing before
    prodready-gunicorn recorded it healthy and moved the front to it."""
    results = sorted(report["results"], key=lambda r: r[0])
    old, new = results[0][3], results[-1][3]
    assert {r[3] for r in results} == {old, new} and old != new, sorted({r[3] for r in results})
    assert old.split()[0] == old_release and new.split()[0] == new_release, (old, new)
    switched = [e for e in events(host) if e["event"] == "switched"][-1]
    healthy = [e for e in events(host) if e["event"] == "healthy"][-1]
    assert healthy["monotonic"] <= switched["monotonic"]
    first_new = min(r[0] for r in results if r[3] == new)
    last_old = max(r[0] for r in results if r[3] == old)
    assert first_new >= switched["monotonic"] - 0.05, f"the new instance answered a request started at {first_new}, " \
        f"before the switch at {switched['monotonic']}"
    assert last_old <= switched["monotonic"] + 0.05, f"the old instance answered a request started at {last_old}, " \
        f"after the switch at {switched['monotonic']}"


@pytest.fixture()
def on_r1(host):
    """Start each test with r1 live (as blue or green) and nothing else running."""
    if status(host)["release"] != "/srv/demo/releases/r1":
        host.check_output(activate("r1"))
    assert status(host)["release"] == "/srv/demo/releases/r1"


def test_live_instance_socket_and_front_unit_are_running(host):
    colour = live(host)
    assert_running(host, f"{UNIT}@{colour}.socket")
    assert_running(host, f"{UNIT}@{colour}.service")
    other = "green" if colour == "blue" else "blue"
    assert not host.service(f"{UNIT}@{other}.service").is_running
    assert not host.service(f"{UNIT}@{other}.socket").is_running
    assert host.service(f"{UNIT}-front.service").is_enabled
    assert status(host)["front"] == colour


def test_answers_r1_through_the_socket_and_the_port(host, on_r1):
    assert get(host) == (0, "r1")
    assert get(host, target=TCP) == (0, "r1")
    assert get(host, "/cwd") == (0, "/srv/demo/releases/r1")
    assert host.file(CURRENT).linked_to == "/srv/demo/releases/r1"


def test_environment_file_is_read(host):
    assert get(host, "/env") == (0, "hello from the env file")


def test_unix_socket_is_for_www_data_only(host):
    front = host.file(SOCKET)
    assert front.is_symlink and front.linked_to == f"{SOCKET}.{live(host)}"
    sock = host.file(f"{SOCKET}.{live(host)}")
    assert sock.is_socket and sock.user == "demo" and sock.group == "www-data" and sock.mode == 0o660
    assert get(host, user="www-data")[0] == 0
    rc, _ = get(host, user="nobody")
    assert rc == 7, "nobody could connect to the unix socket"


def test_listens_only_on_loopback_on_the_live_instance_port(host):
    listening = host.check_output("ss -Hltn")
    addresses = {line.split()[3] for line in listening.splitlines()
                 if re.search(r":800[0-2]$", line.split()[3])}
    assert addresses == {f"127.0.0.1:{INSTANCE_PORTS[live(host)]}"}


def test_runs_hardened_as_the_app_user(host):
    service = f"{UNIT}@{live(host)}.service"
    show = dict(line.split("=", 1) for line in host.check_output(
        f"systemctl show -p User -p NoNewPrivileges -p ProtectSystem -p ProtectHome -p PrivateTmp {service}"
    ).splitlines())
    assert show == {"User": "demo", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                    "ProtectHome": "yes", "PrivateTmp": "yes"}
    pids = [str(main_pid(host))] + workers(host)
    users = set(host.check_output(f"ps -o user= -p {','.join(pids)}").split())
    assert users == {"demo"}
    proc_status = host.file(f"/proc/{main_pid(host)}/status").content_string
    assert re.search(r"^NoNewPrivs:\s+1$", proc_status, re.M)


def test_writes_only_where_allowed(host):
    assert get(host, "/write?/srv/demo/shared/media/probe") == (0, "written")
    assert get(host, "/write?/srv/demo/shared/private/probe") == (0, "refused: Read-only file system")
    assert get(host, "/write?/tmp/probe") == (0, "written")


def test_every_worker_is_warmed_and_ready(host):
    colour = live(host)
    assert len(workers(host)) == WORKERS, f"workers: {workers(host)}\n{journal_tail(host, f'{UNIT}@{colour}')}"
    ready = host.check_output(f"ls /run/{UNIT}-{colour}").split()
    assert sorted(ready) == sorted(f"worker-{pid}" for pid in workers(host))
    log = host.check_output(f"journalctl -u {UNIT}@{colour} --no-pager -o cat | grep 'Worker warmed'")
    for pid in workers(host):
        assert re.search(rf"Worker warmed \(pid: {pid}\): GET /healthz answered 200", log), log
    conf = host.file("/etc/gunicorn/demo.conf.py")
    assert conf.user == "root" and conf.group == "demo" and conf.mode == 0o640
    assert f"workers = {WORKERS}" in conf.content_string and "preload_app = False" in conf.content_string


def test_access_log_goes_to_the_journal_with_the_request_time(host):
    get(host, "/?logged-request")
    for _ in range(20):
        if re.search(r'"GET /\?logged-request HTTP/1\.1" 200 .* \d+ms$',
                     journal_tail(host, f"{UNIT}@{live(host)}", 50), re.M):
            return
        time.sleep(0.3)
    raise AssertionError(f"no access log line:\n{journal_tail(host, f'{UNIT}@{live(host)}', 50)}")


@pytest.mark.parametrize("target", [SOCKET, TCP])
def test_new_release_takes_over_under_load_without_dropping(host, on_r1, target):
    before = live(host)
    report = run_load(host, activate("r2"), target=target)
    assert_no_failure(host, report)
    assert_one_switch(host, report, "r1", "r2")
    assert live(host) != before
    assert not host.service(f"{UNIT}@{before}.service").is_running, "the old instance still runs"
    assert get(host, "/cwd") == (0, "/srv/demo/releases/r2")
    assert host.file(CURRENT).linked_to == "/srv/demo/releases/r2"


def test_restart_under_load_is_a_new_instance_and_drops_nothing(host, on_r1):
    before_pid = main_pid(host)
    report = run_load(host, f"{SCRIPT} {APP} restart", target=TCP)
    assert_no_failure(host, report)
    assert_one_switch(host, report, "r1", "r1")
    assert main_pid(host) != before_pid


def test_changed_settings_start_the_other_instance_at_the_next_ensure(host, on_r1):
    before = live(host)
    host.check_output("touch /etc/demo/env")
    check = json.loads(host.check_output(f"{SCRIPT} {APP} ensure --check"))
    assert check["changed"] and "/etc/demo/env changed" in check["msg"], check
    assert live(host) == before, "--check changed something"
    report = run_load(host, f"{SCRIPT} {APP} ensure", target=SOCKET)
    assert_no_failure(host, report)
    assert_one_switch(host, report, "r1", "r1")
    assert live(host) != before
    assert not json.loads(host.check_output(f"{SCRIPT} {APP} ensure"))["changed"]


def make_release(host, name, app_code):
    host.check_output(f"mkdir -p /srv/demo/releases/{name} && echo {base64.b64encode(app_code.encode()).decode()} "
                      f"| base64 -d > /srv/demo/releases/{name}/app.py")


@pytest.mark.parametrize("name, code, reason", [
    ("cannot-import", "raise ImportError('this release cannot be imported on purpose')\n",
     "stopped while starting"),
    ("sick", "def application(environ, start_response):\n"
             "    start_response('503 Service Unavailable', [('Content-Type', 'text/plain')])\n"
             "    return [b'sick on purpose']\n",
     "GET /healthz answered 503: sick on purpose"),
])
def test_a_broken_release_never_answers_and_the_live_one_keeps_serving(host, on_r1, name, code, reason):
    make_release(host, name, code)
    before = live(host)
    report = run_load(host, activate(name), target=TCP, expect_rc=1)
    assert_no_failure(host, report)
    assert {r[3].split()[0] for r in report["results"]} == {"r1"}, "the broken release answered a request"
    assert live(host) == before and host.file(CURRENT).linked_to == "/srv/demo/releases/r1"
    other = "green" if before == "blue" else "blue"
    assert not host.service(f"{UNIT}@{other}.service").is_running
    out = host.run(activate(name))
    assert out.rc == 1 and reason in json.loads(out.stdout)["msg"], out.stdout


def test_the_front_unit_puts_the_front_back_at_boot(host, on_r1):
    """What a reboot loses (/run and the nftables ruleset): the front unit makes it again."""
    table = f"inet {UNIT.replace('-', '_')}"
    host.check_output(f"nft delete table {table} && rm {SOCKET}")
    assert get(host, target=TCP)[0] != 0 and get(host)[0] != 0
    host.check_output(f"systemctl restart {UNIT}-front.service")
    assert get(host, target=TCP) == (0, "r1") and get(host) == (0, "r1")
