"""What the supervisor role promises, checked on the converged hosts with supervisorctl,
HTTP requests to the test programs on 127.0.0.1 and the process table."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prodready_testinfra import assert_running, journal_tail, wait_for_port

# The values converge.yml and prepare.yml give the role.
PORTS = {"web-a": 8101, "web-b": 8102}
SECRET = 's3cr%t value, with "quotes" inside'
CONVERGE = Path(__file__).resolve().parent.parent / "converge.yml"
RUNNING = ["web-a", "web-b", "worker:worker_00", "worker:worker_01", "handmade"]


def ctl(host, *args) -> str:
    return host.run("supervisorctl " + " ".join(shlex.quote(a) for a in args)).stdout


def status(host) -> dict[str, str]:
    """Process name -> state, from `supervisorctl status`."""
    return {line.split()[0]: line.split()[1] for line in ctl(host, "status").splitlines() if line.strip()}


def pid(host, name: str) -> int:
    out = ctl(host, "pid", name).strip()
    assert out.isdigit() and int(out) > 0, f"{name} has no pid ({out!r}); status:\n{ctl(host, 'status')}"
    return int(out)


def process_env(host, process_id: int) -> dict[str, str]:
    raw = host.check_output(f"tr '\\0' '\\n' < /proc/{process_id}/environ")
    return dict(line.split("=", 1) for line in raw.splitlines() if "=" in line)


def http_get(host, port: int) -> str:
    code = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=5).status)"
    return host.run(f"python3 -c {shlex.quote(code)}").stdout.strip()


def wait_running(host, name: str, other_than: int | None = None, seconds: float = 30.0) -> int:
    """Wait (bounded) until `name` is RUNNING, with a pid other than `other_than`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if status(host).get(name) == "RUNNING":
            current = pid(host, name)
            if current != other_than:
                return current
        time.sleep(0.5)
    raise AssertionError(f"{name} is not RUNNING again after {seconds}s:\n{ctl(host, 'status')}\n"
                         f"{journal_tail(host, 'supervisor')}")


def converge_this_host(host, marker: str) -> str:
    """Run converge.yml against this host alone, with another value for web-a's MARKER."""
    project = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.getcwd())
    env = dict(os.environ, ANSIBLE_PIPELINING="true", ANSIBLE_FORCE_COLOR="0", NO_COLOR="1",
               ANSIBLE_COLLECTIONS_PATH=os.path.join(project, ".cache", "collections"))
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
         "-i", os.environ["MOLECULE_INVENTORY_FILE"], "--limit", host.backend.get_hostname(),
         "-e", f"supervisor_test_marker={marker}", str(CONVERGE)],
        env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"converge with marker {marker} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def test_supervisord_running(host):
    assert_running(host, "supervisor")


def test_programs_are_running(host):
    states = status(host)
    not_running = {name: states.get(name) for name in RUNNING if states.get(name) != "RUNNING"}
    assert not not_running, f"not RUNNING: {not_running}\n{journal_tail(host, 'supervisor')}"


@pytest.mark.parametrize("program", sorted(PORTS))
def test_programs_answer_on_loopback_as_nobody(host, program):
    wait_for_port(host, PORTS[program])
    assert http_get(host, PORTS[program]) == "200"
    assert host.check_output(f"ps -o user= -p {pid(host, program)}").strip() == "nobody"


def test_killed_program_comes_back(host):
    before = pid(host, "web-b")
    host.check_output(f"kill -9 {before}")
    after = wait_running(host, "web-b", other_than=before)
    assert after != before
    wait_for_port(host, PORTS["web-b"])
    assert http_get(host, PORTS["web-b"]) == "200"


def test_changing_one_program_restarts_only_that_one(host):
    names = ["web-a", "web-b", "worker:worker_00", "handmade"]
    before = {name: pid(host, name) for name in names}
    supervisord = host.check_output("supervisorctl pid")
    try:
        output = converge_this_host(host, "second")
        assert "changed=0" not in output
        after = {name: wait_running(host, name) for name in names}
        assert after["web-a"] != before["web-a"], "web-a kept its process after its environment changed"
        unchanged = {name: (before[name], after[name]) for name in names[1:] if before[name] != after[name]}
        assert not unchanged, f"programs that did not change were restarted (pid before, after): {unchanged}"
        assert host.check_output("supervisorctl pid") == supervisord, "supervisord was restarted for a program change"
        assert process_env(host, after["web-a"])["MARKER"] == "second"
    finally:
        converge_this_host(host, "first")
    restored = wait_running(host, "web-a")
    assert process_env(host, restored)["MARKER"] == "first"


def test_environment_reaches_the_program_unchanged(host):
    env = process_env(host, pid(host, "web-a"))
    assert env["API_TOKEN"] == SECRET


def test_program_file_with_environment_is_private(host):
    with_env = host.file("/etc/supervisor/conf.d/web-a.conf")
    assert (with_env.user, with_env.group, with_env.mode) == ("root", "root", 0o640)
    without = host.file("/etc/supervisor/conf.d/web-b.conf")
    assert without.mode == 0o644 and "environment=" not in without.content_string


def test_socket_is_root_only_and_no_tcp_interface(host):
    sock = host.file("/run/supervisor.sock")
    assert sock.is_socket and sock.user == "root" and sock.mode == 0o700
    assert "[inet_http_server]" not in host.file("/etc/supervisor/supervisord.conf").content_string
    tcp = host.check_output("ss -Hltnp")
    assert "supervisord" not in tcp, tcp
    refused = host.run("su -s /bin/sh nobody -c 'supervisorctl status'")
    assert refused.rc != 0 and "web-a" not in refused.stdout


def test_supervisord_log_rotation(host):
    conf = host.file("/etc/supervisor/supervisord.conf").content_string
    assert "logfile_maxbytes=20MB" in conf and "logfile_backups=4" in conf
    assert host.file("/var/log/supervisor/supervisord.log").exists


def test_program_logs_and_their_rotation(host):
    conf = host.file("/etc/supervisor/conf.d/web-a.conf").content_string
    for line in ["stdout_logfile=/var/log/supervisor/web-a.out.log", "stdout_logfile_maxbytes=1MB",
                 "stdout_logfile_backups=3", "stderr_logfile=/var/log/supervisor/web-a.err.log",
                 "stderr_logfile_maxbytes=10MB", "stderr_logfile_backups=5"]:
        assert f"\n{line}\n" in conf, f"{line} missing from web-a.conf"
    # http.server logs each request on stderr.
    assert http_get(host, PORTS["web-a"]) == "200"
    deadline = time.monotonic() + 10
    while "GET / " not in host.file("/var/log/supervisor/web-a.err.log").content_string:
        assert time.monotonic() < deadline, "web-a's request was not logged to web-a.err.log"
        time.sleep(0.5)
    assert host.file("/var/log/supervisor/web-b.out.log").exists  # redirect_stderr: one log
    assert not host.file("/var/log/supervisor/web-b.err.log").exists
    for number in ("00", "01"):
        assert host.file(f"/var/log/supervisor/worker-{number}.out.log").exists


def test_only_role_written_programs_are_removed(host):
    assert not host.file("/etc/supervisor/conf.d/retired.conf").exists
    assert "retired" not in status(host)
    assert not host.file("/etc/supervisor/conf.d/never-started.conf").exists
    assert host.file("/etc/supervisor/conf.d/handmade.conf").exists
    # Added through tasks_from=program: kept by the exclusive clean-up of the list.
    assert "tasks_from=program" in host.file("/etc/supervisor/conf.d/worker.conf").content_string
