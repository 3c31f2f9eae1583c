#!/usr/bin/env python3
"""`make bench`: wall times of converges and deploys, written to docs/benchmarks.md.

    scripts/bench.py [scenario ...] [demo]

For each role's Molecule scenario (or those named on the command line), on a fresh
Debian 12 container: cold converge, then the idempotent re-run. Times are
wall-clock seconds of `molecule converge`, Molecule's own start-up included.

Then the whole stack on the demo container (`demo`, or no argument): `make demo`
from nothing and again, site.yml re-run, a deploy that changes code and the same
deploy again. The `stack` scenario is left out of the per-role table (it is the demo).
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MOLECULE = ROOT / ".venv" / "bin" / "molecule"
OUT = ROOT / "docs" / "benchmarks.md"


def molecule(*args: str) -> tuple[float, str]:
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"),
               PATH=f"{MOLECULE.parent}{os.pathsep}{os.environ.get('PATH', '')}",  # ansible-config & co.
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


def timed(*args: str, env: dict | None = None) -> float:
    """Wall time of a command run from the repository root; stop the bench if it fails."""
    started = time.monotonic()
    proc = subprocess.run([str(a) for a in args], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, args))} failed:\n{proc.stdout[-4000:]}")
    return elapsed


def bench_demo() -> list[tuple[str, float]]:
    """The demo stack: make demo cold and warm, site.yml re-run, deploys."""
    playbook = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", "inventories/demo"]
    demo = ["bash", str(ROOT / "scripts" / "demo.sh")]
    changed = ROOT / ".cache" / "bench-release"
    shutil.rmtree(changed, ignore_errors=True)
    shutil.copytree(ROOT / "examples" / "superbook", changed, ignore=shutil.ignore_patterns("__pycache__"))
    template = changed / "posts" / "templates" / "base.html"
    template.write_text(template.read_text() + "\n{# a code change for the benchmark #}\n")
    rows = []
    timed(*demo, "down")
    cold = [(step, timed(*demo, step)) for step in ("host", "site", "deploy", "check")]
    rows.append(("make demo, from no container: total", sum(seconds for _, seconds in cold)))
    rows += [(f"- {label}", seconds) for label, seconds in zip(
        ("start the container", "site.yml, cold", "deploy.yml, first release (virtualenv, pip)", "check the URL"),
        (seconds for _, seconds in cold))]
    rows.append(("make demo again (nothing to change)", timed(*demo, "up")))
    rows.append(("site.yml re-run", timed(*demo, "site")))
    rows.append(("deploy.yml of a code change (same requirements)",
                 timed(*playbook, "playbooks/deploy.yml", "-e", f"deploy_source={changed}")))
    rows.append(("deploy.yml of the same source again",
                 timed(*playbook, "playbooks/deploy.yml", "-e", f"deploy_source={changed}")))
    # Leave the demo on the repository's app.
    timed(*playbook, "playbooks/deploy.yml", "-e", f"deploy_source={ROOT / 'examples' / 'superbook'}")
    shutil.rmtree(changed, ignore_errors=True)
    for name, seconds in rows:
        print(f"{name}: {seconds:.1f} s", flush=True)
    return rows


def main(names: list[str]) -> None:
    all_scenarios = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml") if p.parent.name != "stack")
    scenarios = [n for n in names if n != "demo"] if names else all_scenarios
    rows = []
    for name in scenarios:
        cold, warm = bench(name)
        print(f"{name}: cold {cold:.1f} s, re-run {warm:.1f} s", flush=True)
        rows.append(f"| {name} | {cold:.1f} | {warm:.1f} |")
    demo_rows = bench_demo() if not names or "demo" in names else []
    # A section that was not measured this time keeps its last figures.
    kept = previous_sections()
    text = (
        "# Benchmarks\n\n"
        "Written by `make bench` (scripts/bench.py); do not edit by hand.\n\n"
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}; "
        "each section says when it was measured.\n")
    today = f"Measured {datetime.date.today()}. "
    if not rows and "Roles" in kept:
        text += kept["Roles"]
    if rows:
        text += (
            "\n## Roles\n\n" + today +
            "One Debian 12 test container per role (`molecule converge -- --limit <role>-debian12`), "
            "Molecule's own start-up included.\n\n"
            "| Scenario | Cold converge (s) | Idempotent re-run (s) |\n| --- | --- | --- |\n"
            + "\n".join(rows) + "\n")
    if demo_rows:
        text += (
            "\n## The whole stack (the demo container, Debian 12)\n\n" + today +
            "Wall time of each command, in order; the Debian packages come from the mirror each time the "
            "container is new.\n\n"
            "| Step | Seconds |\n| --- | --- |\n"
            + "\n".join(f"| {name} | {seconds:.1f} |" for name, seconds in demo_rows) + "\n")
    if not demo_rows and "The whole stack" in kept:
        text += kept["The whole stack"]
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)


def previous_sections() -> dict[str, str]:
    """The "## " sections of the current docs/benchmarks.md, by the start of their title."""
    if not OUT.exists():
        return {}
    sections = {}
    for chunk in OUT.read_text().split("\n## ")[1:]:
        title = chunk.split("\n", 1)[0]
        sections[title.split(" (")[0]] = "\n## " + chunk.rstrip("\n") + "\n"
    return sections


if __name__ == "__main__":
    main(sys.argv[1:])
