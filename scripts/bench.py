#!/usr/bin/env python3
"""`make bench`: converge wall times per role, written to docs/benchmarks.md.

For each Molecule scenario (or those named on the command line), on a fresh
Debian 12 container: cold converge, then the idempotent re-run. Times are
wall-clock seconds of `molecule converge`, Molecule's own start-up included.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MOLECULE = ROOT / ".venv" / "bin" / "molecule"
OUT = ROOT / "docs" / "benchmarks.md"


def molecule(*args: str) -> tuple[float, str]:
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"),
               PY_COLORS="0", ANSIBLE_FORCE_COLOR="0", NO_COLOR="1", COLUMNS="300")
    started = time.monotonic()
    proc = subprocess.run([str(MOLECULE), *args], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"molecule {' '.join(args)} failed:\n{proc.stdout[-4000:]}")
    return elapsed, proc.stdout


def bench(scenario: str) -> tuple[float, float]:
    host = f"{scenario}-debian12"
    molecule("destroy", "-s", scenario)
    molecule("create", "-s", scenario)
    molecule("prepare", "-s", scenario)
    try:
        cold, _ = molecule("converge", "-s", scenario, "--", "--limit", host)
        warm, _ = molecule("converge", "-s", scenario, "--", "--limit", host)
    finally:
        molecule("destroy", "-s", scenario)
    return cold, warm


def main(names: list[str]) -> None:
    scenarios = names or sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
    rows = []
    for name in scenarios:
        cold, warm = bench(name)
        print(f"{name}: cold {cold:.1f} s, re-run {warm:.1f} s", flush=True)
        rows.append(f"| {name} | {cold:.1f} | {warm:.1f} |")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(
        "# Benchmarks\n\n"
        "Written by `make bench` (scripts/bench.py); do not edit by hand.\n\n"
        f"Measured {datetime.date.today()} on {os.cpu_count()} cores, Python {platform.python_version()}, "
        "one Debian 12 test container per role (`molecule converge -- --limit <role>-debian12`), "
        "Molecule's own start-up included.\n\n"
        "| Scenario | Cold converge (s) | Idempotent re-run (s) |\n| --- | --- | --- |\n"
        + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
