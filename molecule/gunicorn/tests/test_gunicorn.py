"""The gunicorn role on the converged hosts: the app answers through the socket unit,
the service is hardened, and a release switch or a restart under load drops nothing."""

import base64
import json
import re
import shlex
import time
from pathlib import Path

import pytest
from prodready_testinfra import assert_running, journal_tail

# The values converge.yml gives the role.
UNIT = "gunicorn-demo"
SOCKET = "/run/gunicorn-demo.sock"
TCP = "127.0.0.1:8000"
WORKERS = 3
CURRENT = "/srv/demo/current"
LOADGEN = Path(__file__).with_name("loadgen.py").read_text()


def get(host, path="/", target=SOCKET, user=None):
    """curl on the host, through the unix socket or the loopback port; (exit code, body)."""
    where = f"--unix-socket {target} http://localhost" if target.startswith("/") else f"http://{target}"
    command = f"curl -sS --max-time 10 {where}{path}"
    if user:
        command = f"runuser -u {user} -- {command}"
    result = host.run(command)
    return result.rc, result.stdout


def switch_current(release):
    """The deploy role's atomic switch: a new link, renamed over `current`."""
    return f"ln -sfn releases/{release} {CURRENT}.tmp && mv -T {CURRENT}.tmp {CURRENT}"


def main_pid(host):
    return int(host.check_output(f"systemctl show -p MainPID --value {UNIT}.service"))


def workers(host):
    return host.check_output(f"pgrep -P {main_pid(host)} || true").split()


def wait_for_answer(host, expected, seconds=20):
    deadline = time.monotonic() + seconds
    body = None
    while time.monotonic() < deadline:
        rc, body = get(host)
        if rc == 0 and body == expected and len(workers(host)) == WORKERS:
            return
        time.sleep(0.3)
    raise AssertionError(f"expected {expected!r}, last answer {body!r}:\n{journal_tail(host, UNIT)}")


def run_load(host, action, target=SOCKET, threads=10, requests=100, after=200):
    """loadgen.py in the container (bounded: 60 s, 10 s per request); its JSON report."""
    script = base64.b64encode(LOADGEN.encode()).decode()
    host.check_output(f"echo {script} | base64 -d > /tmp/loadgen.py")
    args = " ".join(shlex.quote(str(a)) for a in (target, threads, requests, after, action))
    out = host.check_output(f"timeout 90 python3 /tmp/loadgen.py {args}")
    report = json.loads(out)
    assert report["action"][2] == 0, f"the action {action!r} failed:\n{journal_tail(host, UNIT)}"
    return report


@pytest.fixture()
def on_r1(host):
    """Start each test with `current` -> r1, loaded by a reload."""
    host.check_output(f"{switch_current('r1')} && systemctl reload {UNIT}")
    wait_for_answer(host, "r1")


def test_socket_and_service_are_running(host):
    assert_running(host, f"{UNIT}.socket")
    assert_running(host, f"{UNIT}.service")


def test_answers_r1_through_the_socket_and_the_port(host, on_r1):
    assert get(host) == (0, "r1")
    assert get(host, target=TCP) == (0, "r1")
    assert get(host, "/cwd") == (0, "/srv/demo/releases/r1")


def test_environment_file_is_read(host):
    assert get(host, "/env") == (0, "hello from the env file")


def test_unix_socket_is_for_www_data_only(host):
    sock = host.file(SOCKET)
    assert sock.is_socket and sock.user == "demo" and sock.group == "www-data" and sock.mode == 0o660
    assert get(host, user="www-data")[0] == 0
    rc, _ = get(host, user="nobody")
    assert rc == 7, "nobody could connect to the unix socket"


def test_listens_only_on_loopback(host):
    listening = host.check_output("ss -Hltn")
    addresses = {line.split()[3] for line in listening.splitlines() if line.split()[3].endswith(":8000")}
    assert addresses == {TCP}


def test_runs_hardened_as_the_app_user(host):
    show = dict(line.split("=", 1) for line in host.check_output(
        f"systemctl show -p User -p NoNewPrivileges -p ProtectSystem -p ProtectHome -p PrivateTmp {UNIT}.service"
    ).splitlines())
    assert show == {"User": "demo", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                    "ProtectHome": "yes", "PrivateTmp": "yes"}
    pids = [str(main_pid(host))] + workers(host)
    users = set(host.check_output(f"ps -o user= -p {','.join(pids)}").split())
    assert users == {"demo"}
    status = host.file(f"/proc/{main_pid(host)}/status").content_string
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)


def test_writes_only_where_allowed(host):
    assert get(host, "/write?/srv/demo/shared/media/probe") == (0, "written")
    assert get(host, "/write?/srv/demo/shared/private/probe") == (0, "refused: Read-only file system")
    assert get(host, "/write?/tmp/probe") == (0, "written")


def test_worker_count_is_the_configured_one(host):
    assert len(workers(host)) == WORKERS, f"workers: {workers(host)}\n{journal_tail(host, UNIT)}"
    conf = host.file("/etc/gunicorn/demo.conf.py")
    assert conf.user == "root" and conf.group == "demo" and conf.mode == 0o640
    assert f"workers = {WORKERS}" in conf.content_string and "preload_app = False" in conf.content_string


def test_access_log_goes_to_the_journal_with_the_request_time(host):
    get(host, "/?logged-request")
    for _ in range(20):
        if re.search(r'"GET /\?logged-request HTTP/1\.1" 200 .* \d+ms$', journal_tail(host, UNIT, 50), re.M):
            return
        time.sleep(0.3)
    raise AssertionError(f"no access log line:\n{journal_tail(host, UNIT, 50)}")


def test_reload_switches_release_under_load_without_dropping(host, on_r1):
    report = run_load(host, f"{switch_current('r2')} && systemctl reload {UNIT}")
    results = report["results"]
    failed = [r for r in results if r[2] != 200]
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:5]}\n{journal_tail(host, UNIT)}"
    assert len(results) == 1000
    action_start = report["action"][0]
    assert {r[3] for r in results if r[1] < action_start} == {"r1"}
    r2_ends = [r[1] for r in results if r[3] == "r2"]
    assert r2_ends, f"no request reached r2:\n{journal_tail(host, UNIT)}"
    first_r2 = min(r2_ends)
    late_r1 = [r for r in results if r[0] > first_r2 and r[3] != "r2"]
    assert not late_r1, f"{len(late_r1)} requests started after the first r2 answer got {late_r1[:3]}"
    wait_for_answer(host, "r2")
    assert get(host, "/cwd") == (0, "/srv/demo/releases/r2")


def test_restart_under_load_drops_nothing(host, on_r1):
    before = main_pid(host)
    report = run_load(host, f"systemctl restart {UNIT}.service", target=TCP)
    results = report["results"]
    failed = [r for r in results if r[2] != 200]
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:5]}\n{journal_tail(host, UNIT)}"
    assert len(results) == 1000
    assert main_pid(host) != before
    wait_for_answer(host, "r1")
