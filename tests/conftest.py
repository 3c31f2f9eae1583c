"""Shared set-up for the test suite: paths, the tool runner, step timings."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Every role of the collection (a folder under roles/ with tasks/main.yml).
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks" / "main.yml").exists())
# A host's line of ansible-playbook's PLAY RECAP (Molecule may prefix it with a box-drawing bar).
RECAP = re.compile(r"^\s*│?\s*(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
LOGS = ROOT / ".cache" / "logs"
# Every run() appends "seconds<TAB>log" to this run's own file (xdist workers share it,
# other pytest runs in the same checkout have theirs); the run ends by copying it to
# timings.tsv, so a run started beside this one cannot wipe its figures half-way.
TIMINGS = LOGS / "timings.tsv"
# A wrapper found first on PATH by the tools run(): it records what Molecule hands to
# ansible-playbook (arguments, environment, folder) when PRODREADY_RECORD_PLAYBOOK names
# a file, then runs the real ansible-playbook. Bad input replays the recorded converge.
# One folder per interpreter: runs from other virtualenvs keep their own wrapper.
SHIM = ROOT / ".cache" / "shim" / hashlib.sha256(str(BIN).encode()).hexdigest()[:12]
SHIM_SOURCE = f"""#!{sys.executable}
import json, os, sys
record = os.environ.pop("PRODREADY_RECORD_PLAYBOOK", "")
if record and sys.argv[1:] and sys.argv[1] != "--version":
    with open(record, "w") as handle:
        json.dump({{"args": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}}, handle)
real = {str(BIN / "ansible-playbook")!r}
os.execv(real, [real, *sys.argv[1:]])
"""


def timings_file() -> Path:
    return Path(os.environ.get("PRODREADY_TIMINGS", TIMINGS))


def install_shim() -> None:
    path = SHIM / "ansible-playbook"
    if not path.exists() or path.read_text() != SHIM_SOURCE:
        SHIM.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".ansible-playbook.{os.getpid()}")
        temporary.write_text(SHIM_SOURCE)
        temporary.chmod(0o755)
        temporary.replace(path)


def tool_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{SHIM}{os.pathsep}{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_COLLECTIONS_PATH"] = str(ROOT / ".cache" / "collections")
    env.setdefault("ANSIBLE_FORCE_COLOR", "0")
    env["PY_COLORS"] = "0"
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "300"  # molecule wraps ansible's output at the terminal width
    return env


def run(args: list[str], log: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 1800):
    """Run a tool, keep its whole output in .cache/logs/<log>, time it."""
    LOGS.mkdir(parents=True, exist_ok=True)
    path = LOGS / log
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env or tool_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
    )
    elapsed = time.monotonic() - started
    path.write_text(proc.stdout)
    with timings_file().open("a") as handle:
        handle.write(f"{elapsed:.1f}\t{log}\n")
    return proc


def mitogen_env() -> dict[str, str]:
    """What makes ansible-playbook run a play under Mitogen: its strategy plugins and the
    strategy's name. The connection must be the short name `docker`, which Mitogen takes
    over (.config/molecule/config.yml sets it per host; tests/test_ansible_versions.py in
    its inventory)."""
    import ansible_mitogen  # noqa: PLC0415  (only needed when a play runs under Mitogen)

    return {"ANSIBLE_STRATEGY_PLUGINS": str(Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"),
            "ANSIBLE_STRATEGY": "mitogen_linear"}


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def pytest_configure(config):
    install_shim()
    if not hasattr(config, "workerinput"):  # the controller; xdist workers inherit the variable
        LOGS.mkdir(parents=True, exist_ok=True)
        os.environ["PRODREADY_TIMINGS"] = str(LOGS / f"timings.{os.getpid()}.tsv")
        os.environ["PRODREADY_LAST_DURATIONS"] = json.dumps(read_durations())
        timings_file().unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter):
    if hasattr(terminalreporter.config, "workerinput") or not timings_file().exists():
        return
    timings_file().replace(TIMINGS)
    terminalreporter.section("step timings (seconds)")
    for line in TIMINGS.read_text().splitlines():
        seconds, name = line.split("\t", 1)
        terminalreporter.write_line(f"{float(seconds):8.1f}  {name}")


@pytest.fixture(scope="session", autouse=True)
def collection_link():
    """The checkout must be importable as prodready.django (scripts/testbed.sh link)."""
    link = ROOT / ".cache" / "collections" / "ansible_collections" / "prodready" / "django"
    if not link.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "testbed.sh"), "link"], check=True)


def build_artifact(work: Path, logs: str) -> Path:
    """The collection's tarball, built into `work` as `ansible-galaxy collection build`
    makes it (its log in .cache/logs/<logs>/)."""
    proc = run([BIN / "ansible-galaxy", "collection", "build", "--output-path", work, ROOT],
               log=f"{logs}/collection-build.log", cwd=work)
    assert proc.returncode == 0, proc.stdout
    return next(work.glob("prodready-django-*.tar.gz"))


def install_artifact(tarball: Path, dest: Path, logs: str) -> Path:
    """Install the tarball under `dest` (no dependencies: Galaxy is unreachable); returns
    the collection's folder, dest/ansible_collections/prodready/django."""
    env = tool_env() | {"ANSIBLE_COLLECTIONS_PATH": str(dest)}
    proc = run([BIN / "ansible-galaxy", "collection", "install", "--offline", "--no-deps", "--force", "-p", dest, tarball],
               log=f"{logs}/collection-install.log", cwd=tarball.parent, env=env)
    assert proc.returncode == 0, proc.stdout
    return dest / "ansible_collections" / "prodready" / "django"


@pytest.fixture(scope="session")
def controller_image():
    """The controller image of the newer ansible-core versions (scripts/testbed.sh
    controllers), built or checked against its pins (cached: a second call takes a
    moment). Under a lock: two xdist workers must not build it twice."""
    import fcntl  # noqa: PLC0415  (only where the image is needed)

    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / "controllers.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = run(["bash", ROOT / "scripts" / "testbed.sh", "controllers"], log="ansible-versions/controllers.log")
    assert proc.returncode == 0, f"scripts/testbed.sh controllers failed:\n{tail(proc.stdout)}"
    return os.environ.get("CONTROLLER_IMAGE", "prodready/controller:13")


# Scheduling (make test: pytest -n 2 --dist loadgroup). A work unit is an xdist_group
# (a Molecule scenario, an ansible-core version) or one test. The units start longest first, as long as the last run of
# each took ("durations.json", written at the end of every run): a long unit started
# last adds its whole length to the run. The stack scenario always starts first; a unit
# not measured yet starts before the measured ones. A clean checkout (CI) has no
# durations.json of its own: it takes the committed tests/durations.json, the figures of
# a full run on the test bed (copy .cache/logs/durations.json there after a new unit).
DURATIONS = LOGS / "durations.json"
BASELINE_DURATIONS = Path(__file__).with_name("durations.json")


# nodeid -> its xdist_group, for the reports of a run without xdist (with xdist, the
# group is the nodeid's "@group" suffix).
_groups: dict[str, str] = {}


def unit_of(nodeid: str) -> str:
    if nodeid.rfind("@") > nodeid.rfind("]"):
        return nodeid.rsplit("@", 1)[1]
    return _groups.get(nodeid, nodeid)


def read_durations() -> dict[str, float]:
    for path in (DURATIONS, BASELINE_DURATIONS):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return {}


def pytest_collection_modifyitems(config, items):
    # The controller read the file once (pytest_configure); every worker sorts by that copy,
    # as xdist needs the same order from each, even if another run rewrites the file.
    last = json.loads(os.environ.get("PRODREADY_LAST_DURATIONS", "{}"))
    for item in items:
        group = item.get_closest_marker("xdist_group")
        if group:
            _groups[item.nodeid] = group.args[0] if group.args else group.kwargs["name"]

    def unit(item):
        return _groups.get(item.nodeid, item.nodeid)

    # The sort is stable: a scenario's tests keep their order (converge first).
    items.sort(key=lambda item: (unit(item) != "stack", -last.get(unit(item), float("inf"))))


_spent: dict[str, float] = {}


def pytest_runtest_logreport(report):
    _spent[unit_of(report.nodeid)] = _spent.get(unit_of(report.nodeid), 0.0) + report.duration


def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput") or not _spent:
        return
    durations = read_durations()
    durations.update({unit: round(seconds, 1) for unit, seconds in _spent.items()})
    LOGS.mkdir(parents=True, exist_ok=True)
    temporary = DURATIONS.with_name(f".durations.{os.getpid()}")
    temporary.write_text(json.dumps(durations, indent=1, sort_keys=True) + "\n")
    temporary.replace(DURATIONS)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """loadgroup, in the order above, and a unit goes to a worker only when the worker is
    about to run out of tests: xdist's own loadgroup sorts units by their number of tests
    and hands a worker its next unit while two of its tests are still to run, so a unit
    could wait behind the stack scenario's long verify while the other worker sits idle."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling  # noqa: PLC0415  (only with xdist)

    class LongestFirst(LoadGroupScheduling):
        def __init__(self, config, log=None):
            super().__init__(config, log)
            config.option.loadscopereorder = False  # keep the order of the collection

        def _reschedule(self, node):
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
                return
            # A worker runs a test once it holds the next one: give it a unit when it
            # holds one test or none.
            while self.workqueue and self._pending_of(self.assigned_work[node]) < 2:
                self._assign_work_unit(node)

    return LongestFirst(config, log)
