"""The demo stack on the newer ansible-core versions, and under Mitogen on demand.

The suite's own tools run ansible-core 2.19 (the newest for this host's Python 3.11).
The newest pinned controller of tests/controllers/ansible-<core>.txt (the controller
image, scripts/testbed.sh controllers: Debian 13's Python 3.13) converges a fresh
Debian 12 test host with molecule/stack/converge.yml (site.yml, then deploy.yml of
examples/superbook), and the site answers through Nginx -> Varnish -> Gunicorn. Each
older pinned core (2.20) then converges the same host once more and must change
nothing: that second converge proves the first one left the host converged (the
idempotence of the newest core's run) and runs every task of site.yml and deploy.yml
under the older core, at the cost of one re-run instead of a host per core. The host
runs Debian 12: the Molecule stack scenario's single host is Debian 13. The host is
removed at the end.

"2.19-mitogen" (PRODREADY_MITOGEN_STACK=1) is the suite's own ansible-core 2.19
(.venv) under Mitogen's mitogen_linear strategy, on a Debian 13 host: the same converge
twice, and a check-mode run that must report no change either (the Molecule `stack`
scenario covers the default strategy; the role scenarios run under Mitogen one role at
a time).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import BIN, LOGS, RECAP, ROOT, mitogen_env, run, tail, tool_env

CONTROLLERS = ROOT / "tests" / "controllers"
CONTROLLER_IMAGE = os.environ.get("CONTROLLER_IMAGE", "prodready/controller:13")
HOST_IMAGE = "prodready/debian:12"
MITOGEN = "2.19-mitogen"
PINNED = sorted((p.stem.removeprefix("ansible-") for p in CONTROLLERS.glob("ansible-*.txt")),
                key=lambda v: tuple(int(n) for n in v.split(".")))
NEWEST, OLDER = PINNED[-1], PINNED[:-1]
# The stack under Mitogen runs when PRODREADY_MITOGEN_STACK=1: the suite grew past its
# budget with the cluster scenario (the role scenarios still run under Mitogen each run).
WITH_MITOGEN = os.environ.get("PRODREADY_MITOGEN_STACK") == "1"
CORES = [NEWEST] + ([MITOGEN] if WITH_MITOGEN else [])
# The container options of the Molecule platforms (.config/molecule/config.yml) and
# scripts/demo.sh: what systemd needs to run as PID 1 on the test bed.
HOST_OPTIONS = [
    "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cap-add", "SYS_PTRACE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
]
# The controller's local CA certificates, which inventories/demo hands to the host
# (common_extra_ca_certificates) so that pip there trusts the test bed's TLS proxy.
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
CURRENT = "/srv/superbook/current"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    if check and proc.returncode:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


class Core:
    """One ansible-core version: its controller venv and its own test host."""

    def __init__(self, version: str):
        self.version = version
        self.mitogen = version == MITOGEN
        self.slug = "core" + version.replace(".", "-")  # core2-21
        # Mitogen on the other Debian release than the controllers' hosts.
        self.host_image = "prodready/debian:13" if self.mitogen else HOST_IMAGE
        self.host = f"{self.slug}-debian{self.host_image.rsplit(':', 1)[1]}"
        self.controller = f"{self.slug}-controller"
        self.dir = ROOT / ".cache" / "ansible-versions" / self.slug
        self.inventory = self.dir / "inventory"
        self.converge = None

    def log(self, step: str) -> str:
        return f"ansible-versions/{self.slug}/{step}.log"

    def start_host(self):
        docker("rm", "-f", self.host, check=False)
        docker("run", "-d", "--name", self.host, "--hostname", self.host, *HOST_OPTIONS,
               self.host_image, "/lib/systemd/systemd")
        state = ""
        for _ in range(60):
            state = docker("exec", self.host, "systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(1)
        raise AssertionError(f"systemd in {self.host} is not up after 60 s (state: {state!r})")

    def write_inventory(self):
        """The host in every group, with the demo's variables (as molecule/stack links them)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.inventory.mkdir(parents=True)
        groups = {group: {"hosts": {self.host: {}}} for group in ("db", "cache", "memcached", "app", "web")}
        # Mitogen takes over the connection by its short name only (docker, routed to the same plugin).
        connection = "docker" if self.mitogen else "community.docker.docker"
        hosts = {"all": {"hosts": {self.host: {"ansible_connection": connection}}, "children": groups}}
        (self.inventory / "hosts.yml").write_text("---\n" + yaml.safe_dump(hosts, sort_keys=False))
        (self.inventory / "group_vars").symlink_to(ROOT / "inventories" / "demo" / "group_vars")

    def playbook(self, playbook: str, step: str, *args: str, version: str | None = None) -> subprocess.CompletedProcess:
        """ansible-playbook of this core (or of the pinned core `version`), in the controller
        container, on the host's docker engine; the checkout at the same path inside, no
        network of its own. Mitogen runs the suite's own ansible-playbook on this machine."""
        secrets = ["-e", f"demo_secrets_dir={self.dir}/secrets"]  # inventories/demo: demo_secrets_dir
        if self.mitogen:
            env = tool_env() | mitogen_env() | {"MOLECULE_PROJECT_DIRECTORY": str(ROOT)}
            return run([BIN / "ansible-playbook", "-i", self.inventory, playbook, *secrets, *args],
                       log=self.log(step), env=env)
        mounts = ["-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", f"{ROOT}:{ROOT}"]
        if LOCAL_CA_DIR.is_dir():
            mounts += ["-v", f"{LOCAL_CA_DIR}:{LOCAL_CA_DIR}:ro"]
        env = {
            "ANSIBLE_COLLECTIONS_PATH": f"{ROOT}/.cache/collections",
            "ANSIBLE_FORCE_COLOR": "0",
            "MOLECULE_PROJECT_DIRECTORY": str(ROOT),  # converge.yml's deploy_source
        }
        docker("rm", "-f", self.controller, check=False)  # left by an interrupted run
        return run(
            ["docker", "run", "--rm", "--name", self.controller, "--network", "none",
             *mounts, "-w", str(ROOT), *(a for k, v in env.items() for a in ("-e", f"{k}={v}")),
             CONTROLLER_IMAGE, f"/opt/ansible-{version or self.version}/bin/ansible-playbook", "-i", str(self.inventory), playbook,
             *secrets, *args],
            log=self.log(step),
        )

    def recap(self, proc: subprocess.CompletedProcess) -> dict[str, int] | None:
        for host, ok, changed, unreachable, failed in RECAP.findall(proc.stdout):
            if host == self.host:
                return {"ok": int(ok), "changed": int(changed), "unreachable": int(unreachable), "failed": int(failed)}
        return None

    @staticmethod
    def changed_tasks(proc: subprocess.CompletedProcess) -> list[str]:
        """The names of the tasks that reported changed (default callback output)."""
        task, names = "", []
        for line in proc.stdout.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                task = line[line.index("[") + 1:line.rindex("]")]
            elif line.startswith("changed:") and task not in names:
                names.append(task)
        return names

    def failure(self, what: str, proc: subprocess.CompletedProcess, step: str, lines: int = 80) -> str:
        return (f"ansible-core {self.version}: {what} (exit {proc.returncode}; full log "
                f".cache/logs/{self.log(step)}):\n{tail(proc.stdout, lines)}")

    def converge_changes_nothing(self, step: str, what: str, *args: str, version: str | None = None):
        """converge.yml again (with `args`, e.g. --check; under the pinned core `version`):
        it succeeds, and the host's recap says changed=0; a failure names the tasks that changed."""
        proc = self.playbook(f"{ROOT}/molecule/stack/converge.yml", step, *args, version=version)
        assert proc.returncode == 0, self.failure(f"{what} failed", proc, step)
        recap = self.recap(proc)
        assert recap is not None, self.failure(f"no recap line for {self.host}", proc, step)
        if recap["changed"]:
            pytest.fail(self.failure(f"{what} changed {recap['changed']} task(s): {self.changed_tasks(proc)}",
                                     proc, step, 120))

    def curl(self, path: str) -> tuple[str, str]:
        """GET https://127.0.0.1{path} inside the host (Host: localhost): (status, body)."""
        proc = docker("exec", self.host, "curl", "-ks", "--max-time", "30", "-H", "Host: localhost",
                      "-w", r"\n%{http_code}", f"https://127.0.0.1{path}", check=False)
        body, _, status = proc.stdout.rpartition("\n")
        return status, body


@pytest.fixture(scope="session")
def controller_image():
    """The controller image, built or checked against its pins (cached: a second call
    takes a moment). Under a lock: two xdist workers must not build it twice."""
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / "controllers.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = run(["bash", ROOT / "scripts" / "testbed.sh", "controllers"], log="ansible-versions/controllers.log")
    assert proc.returncode == 0, f"scripts/testbed.sh controllers failed:\n{tail(proc.stdout)}"
    return CONTROLLER_IMAGE


# With `pytest -n 2 --dist loadgroup` (make test), each core's steps stay on one worker.
@pytest.fixture(scope="module", params=[pytest.param(v, marks=pytest.mark.xdist_group(f"core{v}")) for v in CORES])
def core(request, controller_image):
    c = Core(request.param)
    try:
        c.start_host()
        c.write_inventory()
        proc = c.playbook(f"{ROOT}/molecule/stack/prepare.yml", "prepare")
        assert proc.returncode == 0, c.failure("prepare.yml failed", proc, "prepare")
        c.converge = c.playbook(f"{ROOT}/molecule/stack/converge.yml", "converge")
        yield c
    finally:
        docker("rm", "-f", c.controller, c.host, check=False)


def needs_converge(c: Core):
    if c.converge is None or c.converge.returncode != 0:
        pytest.skip("converge failed")


def test_converge(core):
    proc = core.converge
    assert proc.returncode == 0, core.failure("converge failed", proc, "converge")
    recap = core.recap(proc)
    assert recap and recap["failed"] == 0 and recap["changed"] > 0, core.failure(f"recap {recap}", proc, "converge")


# The newest core's second converge is the older cores' below.
@pytest.mark.skipif(not WITH_MITOGEN, reason="the stack under Mitogen runs with PRODREADY_MITOGEN_STACK=1")
@pytest.mark.parametrize("core", [pytest.param(MITOGEN, marks=pytest.mark.xdist_group(f"core{MITOGEN}"))],
                         indirect=True)
def test_second_converge_changes_nothing_under_mitogen(core):
    needs_converge(core)
    core.converge_changes_nothing("idempotence", "second converge")


# The newest core's host, converged by it, then once by each older pinned core.
@pytest.mark.parametrize("core", [pytest.param(NEWEST, marks=pytest.mark.xdist_group(f"core{NEWEST}"))],
                         indirect=True)
@pytest.mark.parametrize("older", OLDER)
def test_older_core_converges_the_same_host_with_no_change(core, older):
    needs_converge(core)
    core.converge_changes_nothing(f"idempotence-{older}", f"a converge by ansible-core {older}", version=older)


# Only the Mitogen host: check mode of the stack on the default strategy is the Molecule
# stack scenario's.
@pytest.mark.skipif(not WITH_MITOGEN, reason="the stack under Mitogen runs with PRODREADY_MITOGEN_STACK=1")
@pytest.mark.parametrize("core", [pytest.param(MITOGEN, marks=pytest.mark.xdist_group(f"core{MITOGEN}"))],
                         indirect=True)
def test_check_mode_changes_nothing_under_mitogen(core):
    needs_converge(core)
    core.converge_changes_nothing("check", "--check", "--check")


def test_site_answers_through_the_stack(core):
    needs_converge(core)
    status, body = core.curl("/")
    assert status == "200", f"ansible-core {core.version}: GET / answered {status!r}:\n{body[-2000:]}"
    status, body = core.curl("/version")
    assert status == "200", f"ansible-core {core.version}: GET /version answered {status!r}:\n{body[-2000:]}"
    deployed = docker("exec", core.host, "readlink", CURRENT).stdout.strip().rsplit("/", 1)[-1]
    assert json.loads(body)["release"] == deployed, f"/version says {body!r}, {CURRENT} is release {deployed}"
