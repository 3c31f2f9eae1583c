"""Helpers shared by the testinfra tests of every Molecule scenario.

The verifier puts this folder on PYTHONPATH (see .config/molecule/config.yml).
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import time
import uuid
from pathlib import Path

import pytest
import testinfra

# The bounded HTTPS load generator, copied into the container it runs in.
LOADGEN = Path(__file__).with_name("stackload.py").read_text()


def molecule_hosts() -> dict:
    """Every host of the scenario's inventory, by name."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    hosts = testinfra.get_hosts(["ansible://all"], ansible_inventory=inventory)
    return {h.backend.get_hostname(): h for h in hosts}


def only_on(host, platform: str) -> None:
    """Skip the test on the platforms other than platform (a long test that proves the
    same thing on either: the scenarios spread them over their platforms)."""
    if not host.backend.get_hostname().endswith(platform):
        pytest.skip(f"a long test: it runs on the {platform} platform only")


def journal_tail(host, unit: str, lines: int = 40) -> str:
    return host.run(f"journalctl -u {unit} --no-pager -n {lines}").stdout


def assert_running(host, unit: str) -> None:
    """The unit is enabled and running; on failure show its journal."""
    service = host.service(unit)
    assert service.is_running, f"{unit} is not running:\n{journal_tail(host, unit)}"
    assert service.is_enabled, f"{unit} is not enabled at boot"


def alert_state(host, name: str) -> str:
    """The state of an alerting rule of the prometheus role (inactive, pending, firing),
    from Prometheus's API on the host's loopback."""
    rules = json.loads(host.check_output("curl -sS --max-time 10 http://127.0.0.1:9090/api/v1/rules?type=alert"))
    states = [r["state"] for g in rules["data"]["groups"] for r in g["rules"] if r["name"] == name]
    assert states, f"Prometheus has no alerting rule {name}"
    return states[0]


def wait_for_alert(host, name: str, state: str, seconds: float) -> float:
    """Seconds until the alert is in `state`, polled every second."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if alert_state(host, name) == state:
            return time.monotonic() - start
        time.sleep(1)
    raise AssertionError(f"{name} is not {state} after {seconds} s (it is {alert_state(host, name)})")


def ipv4_address(host) -> str:
    return host.check_output("hostname -I").split()[0]


def can_connect(probe, address: str, port: int, timeout: float = 3.0) -> bool:
    """Whether `probe` can open a TCP connection to address:port."""
    code = (
        "import socket,sys\n"
        "try:\n"
        f"    socket.create_connection(({address!r}, {port}), timeout={timeout}).close()\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    return probe.run(f"python3 -c {shlex.quote(code)}").rc == 0


def start_transient(host, name: str, command: str) -> None:
    """Run `command` on the host as a transient systemd unit, replacing an older one."""
    host.run(f"systemctl stop {name} 2>/dev/null; systemctl reset-failed {name} 2>/dev/null")
    host.check_output(f"systemd-run --unit={name} --collect {command}")


def wait_for_port(host, port: int, address: str = "127.0.0.1", seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if can_connect(host, address, port, timeout=1.0):
            return
        time.sleep(0.3)
    raise AssertionError(f"nothing listens on {address}:{port} after {seconds}s")


def under_load(host, action, label: str, paths: list[str], threads: int, interval: float,
               min_requests: int, max_seconds: int = 420, address: str = "127.0.0.1", host_header: str = "localhost"):
    """Run action() while stackload.py, on the host, sends requests to its 127.0.0.1:443
    (or to address:443 with the Host header host_header)
    (threads clients cycling through paths, each at most one request per interval, until
    action() has returned and min_requests have completed, or max_seconds have passed).
    Return (action's result, results, t0, t1): t0 and t1 bound the action on the monotonic
    clock, which the test containers share with the controller (one kernel)."""
    script = base64.b64encode(LOADGEN.encode()).decode()
    host.check_output(f"echo {script} | base64 -d > /tmp/stackload.py && rm -f /tmp/stackload.json*")
    quoted = " ".join(shlex.quote(p) for p in paths)
    host.check_output(
        f"systemd-run --unit=stackload-{label} --collect --setenv=STACKLOAD_ADDRESS={shlex.quote(address)} "
        f"--setenv=STACKLOAD_HOST={shlex.quote(host_header)} python3 /tmp/stackload.py /tmp/stackload.json "
        f"{threads} {interval} {min_requests} {max_seconds} {quoted}"
    )
    deadline = time.monotonic() + 60
    while not host.file("/tmp/stackload.json.started").exists:
        assert time.monotonic() < deadline, "the load generator did not start"
        time.sleep(0.5)
    time.sleep(2)  # some requests before the action
    t0 = time.monotonic()
    try:
        result = action()
    except BaseException:
        # No results to read: stop the load now, so that it cannot outlive the test.
        host.run(f"systemctl stop stackload-{label}")
        raise
    finally:
        t1 = time.monotonic()
        host.run("touch /tmp/stackload.json.stop")
    deadline = time.monotonic() + max_seconds + 60
    while not host.file("/tmp/stackload.json").exists:
        assert time.monotonic() < deadline, "the load generator did not finish"
        time.sleep(1)
    results = json.loads(host.check_output("cat /tmp/stackload.json"))["results"]
    return result, results, t0, t1


def save_upload(host, manage: str, content: str) -> str:
    """An upload saved as the app saves one: Django's default storage, through the app's
    manage.py wrapper, under Gunicorn's UMask=0027 (its folders 0750). Its name under
    MEDIA_ROOT (uploads/<random>/photo.txt, or the name the storage chose)."""
    name = f"uploads/{uuid.uuid4().hex}/photo.txt"
    code = ("import os; os.umask(0o027); from django.core.files.base import ContentFile; "
            "from django.core.files.storage import default_storage; "
            f"print(default_storage.save({name!r}, ContentFile({content.encode()!r})))")
    return host.check_output(f"{manage} shell -c {shlex.quote(code)}").strip().splitlines()[-1]


def copy_release(app: Path, where: Path, label: str, edit=None) -> Path:
    """A copy of the Django app `app` in where/label, a release of its own (the label is in
    its tree, so its id differs), changed by edit(path). What a local run of the app left
    (collectstatic output and uploads at its top, bytecode, SQLite files) stays behind."""
    target = where / label

    def ignore(directory, names):
        top = Path(directory) == app
        return [n for n in names if n in {"__pycache__", ".venv"} or n.endswith((".pyc", ".sqlite3"))
                or (top and n in {"static", "media"})]

    shutil.copytree(app, target, ignore=ignore)
    (target / "posts" / "release_label.txt").write_text(label + "\n")
    if edit:
        edit(target)
    return target

