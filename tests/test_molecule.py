"""Every Molecule scenario: create, prepare, converge, idempotence, check mode,
verify (testinfra), bad input, destroy."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import BIN, RECAP, ROLES, ROOT, mitogen_env, run, tail, tool_env

# The whole-stack scenario takes longest: it starts first (see the scheduling in
# conftest.py) instead of last, which would add its whole length to the run.
SCENARIOS = sorted((p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml")),
                   key=lambda name: (name != "stack", name))

# The scenarios' own plays run under Mitogen's linear strategy: the same plays, the same
# checks, in less time (an idempotent re-run or --check of the common scenario, both
# containers: 20.5 s on the default strategy, 13.8 s under Mitogen; the projects
# scenario's converge of a whole stack and a deploy: 133 s), and so do the playbooks their
# tests run (the stack's and the projects' deploys, rollbacks, maintenance.yml).
# ansible-core's own strategy, the way users run the collection, runs the whole cluster
# scenario (its deploys, put-back, rollback and promote among them) and the converge and
# re-converge of a whole stack by each pinned ansible-core (tests/test_ansible_versions.py).
# The scenarios named here stay on ansible-core's own strategy, each for the reason given.
# PRODREADY_MITOGEN=0 runs every scenario on the default strategy, =1 every one under Mitogen.
DEFAULT_STRATEGY = {
    "cluster": "seven hosts on two cores run slower under Mitogen (an idempotent re-run: 194 s against 145 s)",
}


def uses_mitogen(name: str) -> bool:
    choice = os.environ.get("PRODREADY_MITOGEN", "")
    return choice == "1" or (choice != "0" and name not in DEFAULT_STRATEGY)


class Scenario:
    def __init__(self, name: str):
        self.name = name
        self.dir = ROOT / "molecule" / name
        self.converged = False
        # Only the scenario's own plays (converge, idempotence, check, bad input, and the
        # playbooks of its verify) run under Mitogen: the docker driver's create and destroy
        # playbooks wait on async tasks, which hang under its strategy.
        self.play_env = mitogen_env() if uses_mitogen(name) else {}
        # The converge command as Molecule runs it (see SHIM in conftest.py), in a folder
        # only its owner reads: it holds the environment.
        self.record = Path(tempfile.mkdtemp(prefix=f"prodready-{name}-")) / "converge.json"
        # Molecule's state and generated inventory for this scenario, in a known place, so
        # the harness can throw them away with the containers.
        self.ephemeral = ROOT / ".cache" / "molecule" / name

    def configs(self) -> tuple[dict, dict]:
        """The scenario's molecule.yml and the shared config it overrides."""
        own = yaml.safe_load((self.dir / "molecule.yml").read_text()) or {}
        return own, yaml.safe_load((ROOT / ".config" / "molecule" / "config.yml").read_text())

    def steps(self) -> list[str]:
        """The scenario's test_sequence: its own, or the shared config's."""
        own, shared = self.configs()
        return (own.get("scenario") or {}).get("test_sequence") or shared["scenario"]["test_sequence"]

    def platform_images(self) -> dict[str, str]:
        """The scenario's containers and their images: its own platforms, or the shared config's."""
        own, shared = self.configs()
        return {p["name"].replace("${MOLECULE_SCENARIO_NAME}", self.name): p["image"]
                for p in own.get("platforms") or shared["platforms"]}

    def platforms(self) -> list[str]:
        return list(self.platform_images())

    def remove(self, log: str):
        """What `molecule destroy` does for these platforms, in a second instead of 8-25:
        remove the containers (and their anonymous volumes) and Molecule's state, so the
        next create starts from the image."""
        proc = run(["docker", "rm", "-f", "-v", *self.platforms()], log=f"{self.name}/{log}.log")
        shutil.rmtree(self.ephemeral, ignore_errors=True)
        return proc

    def molecule(self, *args: str, log: str | None = None, env: dict | None = None, timeout: int = 1800):
        return run([BIN / "molecule", *args[:1], "-s", self.name, *args[1:]],
                   log=f"{self.name}/{log or args[0]}.log", timeout=timeout,
                   env={**tool_env(), "MOLECULE_EPHEMERAL_DIRECTORY": str(self.ephemeral), **(env or {})})

    def play(self, *args: str, log: str | None = None, env: dict | None = None, timeout: int = 1800):
        """A Molecule step that runs the scenario's plays (under its strategy)."""
        return self.molecule(*args, log=log, env={**self.play_env, **(env or {})}, timeout=timeout)

    def playbook(self, *extra: str, log: str):
        """Run the converge playbook again without Molecule: the ansible-playbook command,
        environment and folder Molecule used for the converge, with extra arguments."""
        recorded = json.loads(self.record.read_text())
        return run([BIN / "ansible-playbook", *recorded["args"][:-1], *extra, recorded["args"][-1]],
                   log=f"{self.name}/{log}.log", cwd=Path(recorded["cwd"]), env=recorded["env"])

    @staticmethod
    def recap(output: str) -> dict[str, dict[str, int]]:
        hosts = {}
        for host, ok, changed, unreachable, failed in RECAP.findall(output):
            hosts[host] = {"ok": int(ok), "changed": int(changed),
                           "unreachable": int(unreachable), "failed": int(failed)}
        return hosts


# With `pytest -n 2 --dist loadgroup` (make test), each scenario's tests stay on
# one worker, so its containers are created once; two scenarios run side by side.
@pytest.fixture(scope="module", params=[pytest.param(s, marks=pytest.mark.xdist_group(s)) for s in SCENARIOS])
def scenario(request):
    s = Scenario(request.param)
    s.remove(log="destroy-before")
    # `molecule create` runs the scenario's prepare playbook too (its log has both).
    proc = s.molecule("create")
    assert proc.returncode == 0, f"molecule create (and prepare) failed:\n{tail(proc.stdout)}"
    s.converge = s.play("converge", env={"PRODREADY_RECORD_PLAYBOOK": str(s.record)})
    s.converged = s.converge.returncode == 0
    yield s
    s.remove(log="destroy")
    s.record.unlink(missing_ok=True)
    s.record.parent.rmdir()


def needs_converge(s: Scenario):
    if not s.converged:
        pytest.skip("converge failed")


def test_converge(scenario):
    assert scenario.converged, f"converge failed:\n{tail(scenario.converge.stdout, 80)}"
    hosts = Scenario.recap(scenario.converge.stdout)
    assert hosts, f"no play recap in:\n{tail(scenario.converge.stdout)}"
    if scenario.name in ROLES:
        images = set(scenario.platform_images().values())
        assert {"prodready/debian:12", "prodready/debian:13"} <= images, f"a role's scenario runs on Debian 12 and 13: {images}"


def changed_tasks(output: str) -> str:
    """The tasks that reported a change, each with its changed lines."""
    lines, task = [], ""
    for line in output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.rstrip(" *")
        elif line.startswith("changed:"):
            lines += [task, line] if not lines or task not in lines else [line]
    return "\n".join(lines)


def test_idempotence(scenario):
    """A second converge (the same command as the first) reports changed=0 on every host."""
    if "idempotence" not in scenario.steps():
        pytest.skip("the scenario's test_sequence leaves idempotence to its verify (see its molecule.yml)")
    needs_converge(scenario)
    proc = scenario.playbook(log="idempotence")
    assert proc.returncode == 0, f"the second converge failed:\n{tail(proc.stdout, 80)}"
    hosts = Scenario.recap(proc.stdout)
    assert hosts, f"no play recap in:\n{tail(proc.stdout)}"
    changed = {h: r["changed"] for h, r in hosts.items() if r["changed"]}
    assert not changed, f"a second converge changed something {changed}:\n{changed_tasks(proc.stdout)}"


def test_check_mode_reports_no_change(scenario):
    if "check" not in scenario.steps():
        pytest.skip("the scenario's test_sequence has no check step (see its molecule.yml)")
    needs_converge(scenario)
    proc = scenario.playbook("--check", log="check")
    assert proc.returncode == 0, f"--check failed:\n{tail(proc.stdout, 80)}"
    hosts = Scenario.recap(proc.stdout)
    assert hosts, f"no play recap in:\n{tail(proc.stdout)}"
    changed = {h: r["changed"] for h, r in hosts.items() if r["changed"]}
    assert not changed, f"--check on a converged host reported changes {changed}:\n{tail(proc.stdout, 80)}"


def test_verify(scenario):
    needs_converge(scenario)
    # The playbooks the tests run (ansible-playbook from the verify's environment) take
    # the scenario's strategy too. The stack's verify also builds and restores a second
    # host (molecule/stack/tests/test_restore.py): up to an hour beside another scenario.
    proc = scenario.play("verify", timeout=3600)
    assert proc.returncode == 0, f"testinfra failed:\n{tail(proc.stdout, 120)}"


def test_bad_input_fails_before_any_change(scenario):
    """converge.yml with each bad value of bad_input.yml stops with an error naming
    the variable, and changes nothing on the converged hosts. Each case is the converge's
    own ansible-playbook command (inventory, environment, strategy) with the case's
    values as extra vars, without Molecule's start-up around it."""
    path = scenario.dir / "bad_input.yml"
    if not path.exists():
        pytest.skip("no bad_input.yml in this scenario")
    needs_converge(scenario)
    problems = []
    for case in yaml.safe_load(path.read_text()):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(case["vars"], handle)
        slug = re.sub(r"\W+", "_", case["name"])
        # A case may add ansible-playbook arguments, e.g. --tags to skip the plays it does not test.
        proc = scenario.playbook("-e", f"@{handle.name}", *case.get("args", []), log=f"bad-input-{slug}")
        Path(handle.name).unlink()
        output = " ".join(proc.stdout.replace("│", " ").split())
        changed = {h: r["changed"] for h, r in Scenario.recap(proc.stdout).items() if r["changed"]}
        if proc.returncode == 0:
            problems.append(f"{case['name']}: accepted")
        elif " ".join(case["expect"].split()) not in output:
            problems.append(f"{case['name']}: error does not say {case['expect']!r}:\n{tail(proc.stdout, 30)}")
        elif changed:
            problems.append(f"{case['name']}: changed the host before failing: {changed}")
    assert not problems, "\n".join(problems)
