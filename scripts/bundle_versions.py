#!/usr/bin/env python3
"""Write tests/bundled_collections.yml: the version of each collection that galaxy.yml
depends on, as each `ansible` community package carries it.

The packages read are the ones the suite pins (requirements-dev.txt, tests/controllers/*.txt)
and any given on the command line (the newest release, say):

    .venv/bin/python scripts/bundle_versions.py 14.5.0

Each package is fetched once with pip (no dependencies, the wheel only) into
.cache/ansible-bundles/ and read there; tests/test_collection.py then checks every
listed version against galaxy.yml's ranges without fetching anything.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "bundled_collections.yml"
CACHE = ROOT / ".cache" / "ansible-bundles"
PIN = re.compile(r"^ansible==(\S+)\s*$", re.M)


def pinned() -> set[str]:
    """The `ansible==X` pins of the suite's virtualenv and of the controllers."""
    files = [ROOT / "requirements-dev.txt", *sorted((ROOT / "tests" / "controllers").glob("*.txt"))]
    return {version for path in files for version in PIN.findall(path.read_text())}


def wheel(version: str) -> Path:
    found = sorted(CACHE.glob(f"ansible-{version}-py3-none-any.whl"))
    if not found:
        CACHE.mkdir(parents=True, exist_ok=True)
        # The newer packages require a newer Python than the suite's: the wheel is only read.
        subprocess.run([sys.executable, "-m", "pip", "download", f"ansible=={version}", "--no-deps",
                        "--only-binary=:all:", "--python-version", "3.13", "-d", str(CACHE)], check=True)
        found = sorted(CACHE.glob(f"ansible-{version}-py3-none-any.whl"))
    return found[0]


def versions(version: str, names: list[str]) -> dict[str, str]:
    with zipfile.ZipFile(wheel(version)) as archive:
        return {name: json.loads(archive.read(f"ansible_collections/{name.replace('.', '/')}/MANIFEST.json"))
                ["collection_info"]["version"] for name in names}


def main(extra: list[str]) -> None:
    names = sorted(yaml.safe_load((ROOT / "galaxy.yml").read_text())["dependencies"])
    bundles = {f"ansible=={v}": versions(v, names)
               for v in sorted(pinned() | set(extra), key=lambda v: tuple(int(p) for p in v.split(".")))}
    OUT.write_text(
        "---\n# Written by scripts/bundle_versions.py (run it again after a pin moves or a new `ansible`\n"
        "# release): the collections galaxy.yml depends on, as each community package carries them.\n"
        "# tests/test_collection.py checks each version against galaxy.yml's ranges.\n"
        + yaml.safe_dump(bundles, sort_keys=False))
    print(OUT.read_text(), end="")


if __name__ == "__main__":
    main(sys.argv[1:])
