"""Shared set-up for the test suite: paths, the tool runner, step timings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Every role of the collection (a folder under roles/ with tasks/main.yml).
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks" / "main.yml").exists())
LOGS = ROOT / ".cache" / "logs"
# Every run() appends "seconds<TAB>log" here; xdist workers share the file.
TIMINGS = LOGS / "timings.tsv"


def tool_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
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
    with TIMINGS.open("a") as handle:
        handle.write(f"{elapsed:.1f}\t{log}\n")
    return proc


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controller, not an xdist worker
        TIMINGS.unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter):
    if not TIMINGS.exists():
        return
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
