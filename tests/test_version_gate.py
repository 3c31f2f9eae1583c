"""An ansible-core outside meta/runtime.yml's requires_ansible stops at once, naming the
supported range, before anything on a host changes.

ansible-core 2.18 (the newest older release this host's Python 3.11 runs) is installed
into .cache/venv-core2.18 the first time, with the collections of the suite's own venv
on its path (only to load the roles' modules: the run stops before any of them runs).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import BIN, ROOT, run, tail, tool_env

OLD_CORE = "2.18.19"
VENV = ROOT / ".cache" / "venv-core2.18"
SITE_PACKAGES = BIN.parent / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


@pytest.fixture(scope="module")
def old_core():
    ansible = VENV / "bin" / "ansible-playbook"
    if not ansible.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", VENV], check=True)
        proc = run([VENV / "bin" / "pip", "install", "-q", f"ansible-core=={OLD_CORE}"], log="version-gate/pip.log")
        assert proc.returncode == 0, tail(proc.stdout)
    return ansible


def test_an_untested_ansible_core_stops_at_once(old_core, tmp_path):
    supported = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())["requires_ansible"]
    # A host in every group, reached by the local connection: nothing may touch it.
    (tmp_path / "hosts.yml").write_text(
        "all:\n  hosts:\n    gate-test: {ansible_connection: local, ansible_python_interpreter: " + sys.executable + "}\n"
        "  children: {db: {hosts: {gate-test: {}}}, cache: {hosts: {gate-test: {}}}, app: {hosts: {gate-test: {}}},"
        " web: {hosts: {gate-test: {}}}}\n")
    env = tool_env()
    env["ANSIBLE_COLLECTIONS_PATH"] = f"{ROOT / '.cache' / 'collections'}:{SITE_PACKAGES}"
    proc = run([old_core, "-i", tmp_path / "hosts.yml", ROOT / "playbooks" / "site.yml"],
               log="version-gate/site.log", env=env, cwd=tmp_path)
    output = " ".join(proc.stdout.split())
    assert proc.returncode != 0, f"site.yml ran on ansible-core {OLD_CORE}:\n{tail(proc.stdout)}"
    assert f"prodready.django supports ansible-core {supported}" in output, tail(proc.stdout)
    assert f"this controller runs ansible-core {OLD_CORE}" in output, tail(proc.stdout)
    assert "changed=0" in output and "failed=1" in output, tail(proc.stdout)
