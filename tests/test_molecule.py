"""Every Molecule scenario: create, prepare, converge, idempotence, check mode,
verify (testinfra), bad input, destroy."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ROOT, run, tail

# The whole-stack scenario takes longest: collected first, it starts first on its worker
# instead of last, which would add its whole length to the run.
SCENARIOS = sorted((p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml")),
                   key=lambda name: (name != "stack", name))
RECAP = re.compile(r"^\s*│?\s*(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


class Scenario:
    def __init__(self, name: str):
        self.name = name
        self.dir = ROOT / "molecule" / name
        self.converged = False

    def molecule(self, *args: str, log: str | None = None):
        return run([BIN / "molecule", *args[:1], "-s", self.name, *args[1:]],
                   log=f"{self.name}/{log or args[0]}.log")

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
    s.molecule("destroy", log="destroy-before")
    for step in ("create", "prepare"):
        proc = s.molecule(step)
        assert proc.returncode == 0, f"molecule {step} failed:\n{tail(proc.stdout)}"
    s.converge = s.molecule("converge")
    s.converged = s.converge.returncode == 0
    yield s
    s.molecule("destroy")


def needs_converge(s: Scenario):
    if not s.converged:
        pytest.skip("converge failed")


def test_converge(scenario):
    assert scenario.converged, f"converge failed:\n{tail(scenario.converge.stdout, 80)}"
    hosts = Scenario.recap(scenario.converge.stdout)
    assert len([h for h in hosts if h != "localhost"]) >= 2, "each scenario runs on Debian 12 and 13"


def test_idempotence(scenario):
    needs_converge(scenario)
    proc = scenario.molecule("idempotence")
    assert proc.returncode == 0, f"a second converge changed something:\n{tail(proc.stdout, 80)}"


def test_check_mode_reports_no_change(scenario):
    needs_converge(scenario)
    proc = scenario.molecule("converge", "--", "--check", log="check")
    assert proc.returncode == 0, f"--check failed:\n{tail(proc.stdout, 80)}"
    hosts = Scenario.recap(proc.stdout)
    assert hosts, f"no play recap in:\n{tail(proc.stdout)}"
    changed = {h: r["changed"] for h, r in hosts.items() if r["changed"]}
    assert not changed, f"--check on a converged host reported changes {changed}:\n{tail(proc.stdout, 80)}"


def test_verify(scenario):
    needs_converge(scenario)
    proc = scenario.molecule("verify")
    assert proc.returncode == 0, f"testinfra failed:\n{tail(proc.stdout, 120)}"


def test_bad_input_fails_before_any_change(scenario):
    """converge.yml with each bad value of bad_input.yml stops with an error naming
    the variable, and changes nothing on the converged hosts."""
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
        proc = scenario.molecule("converge", "--", "-e", f"@{handle.name}", *case.get("args", []),
                                 log=f"bad-input-{slug}")
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
