"""Helpers shared by the testinfra tests of every Molecule scenario.

The verifier puts this folder on PYTHONPATH (see .config/molecule/config.yml).
"""

from __future__ import annotations

import os
import shlex
import time

import testinfra


def molecule_hosts() -> dict:
    """Every host of the scenario's inventory, by name."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    hosts = testinfra.get_hosts(["ansible://all"], ansible_inventory=inventory)
    return {h.backend.get_hostname(): h for h in hosts}


def journal_tail(host, unit: str, lines: int = 40) -> str:
    return host.run(f"journalctl -u {unit} --no-pager -n {lines}").stdout


def assert_running(host, unit: str) -> None:
    """The unit is enabled and running; on failure show its journal."""
    service = host.service(unit)
    assert service.is_running, f"{unit} is not running:\n{journal_tail(host, unit)}"
    assert service.is_enabled, f"{unit} is not enabled at boot"


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
