"""ansible-test sanity on the collection as users get it, on every supported ansible-core.

The tarball is built once and installed for each core (conftest.build_artifact and
install_artifact), and `ansible-test sanity` runs every one of its tests there, with no
--skip-test:
- 2.19, the suite's own .venv (this machine's Python 3.11);
- 2.20 and 2.21, /opt/ansible-<core> of the controller image (scripts/testbed.sh
  controllers: Debian 13's Python 3.13), in a container with the installed collection
  mounted.
Python 3.11 and 3.13 are also the target hosts' (Debian 12 and 13), which the compile
test of the roles' Python files (roles/*/files) covers that way.

ansible-test runs most tests in a virtualenv of their own, which it bootstraps with a
pip script downloaded from a host the test bed cannot reach: tests/sanity/get_pip.py
takes its place (its docstring says how). Each core has a home folder of its own,
.cache/sanity/<core>/home, where ansible-test finds that script and keeps the
virtualenvs between runs: a first run installs them from the package index (2 to 5
minutes per core), later ones reuse them (about 12 s per core). pip there trusts what this machine trusts
(PRODREADY_CA_BUNDLE, as scripts/testbed.sh: a TLS proxy's CA, if any) through the
pip.conf of that home: ansible-test hands pip no environment variable but HOME and PATH.

A test that cannot pass on a core is ignored by a line of tests/sanity/ignore-<core>.txt
(ansible-test's format) with a `#` comment that says why; the artifact leaves tests/
out, so the files are copied beside the installed collection. A test reported as
skipped fails the run, unless it had no file to check ("No tests applicable": there are
no modules, action plugins, PowerShell or shell scripts). Each core's results, from
ansible-test's JUnit reports, are in .cache/logs/sanity/<core>/summary.txt.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from ansible.release import __version__ as HOST_ANSIBLE
from conftest import BIN, LOGS, ROOT, build_artifact, install_artifact, run, tail, tool_env
from packaging.specifiers import SpecifierSet

SANITY = ROOT / "tests" / "sanity"
CACHE = ROOT / ".cache" / "sanity"
HOST_CORE = ".".join(HOST_ANSIBLE.split(".")[:2])
HOST_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
CONTAINER_CORES = sorted((p.stem.removeprefix("ansible-") for p in (ROOT / "tests" / "controllers").glob("ansible-*.txt")),
                         key=lambda v: tuple(int(n) for n in v.split(".")))
CONTAINER_PYTHON = "3.13"  # Debian 13's python3, which the controller image's venvs run on
CORES = [HOST_CORE, *CONTAINER_CORES]
CA_BUNDLE = Path(os.environ.get("PRODREADY_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"))
# The pip ansible-test pins for its virtualenvs, which names the bootstrap script it looks for.
PINNED_PIP = re.compile(r"\bpip='([0-9.]+)'")
# Skipped for want of files to check, not for want of anything else.
NOT_APPLICABLE = "No tests applicable."


@pytest.fixture(scope="session")
def tarball(tmp_path_factory):
    return build_artifact(tmp_path_factory.mktemp("sanity"), logs="sanity")


def test_the_cores_are_the_supported_ones():
    """The cores sanity runs on are exactly those of meta/runtime.yml's requires_ansible."""
    supported = SpecifierSet(yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())["requires_ansible"])
    assert [f"2.{minor}" for minor in range(10, 40) if f"2.{minor}.0" in supported] == CORES


def test_every_ignore_says_why():
    """ansible-test's ignore files (none today): one for a supported core only, and a reason on each line."""
    for path in sorted(SANITY.glob("ignore-*.txt")):
        assert path.stem.removeprefix("ignore-") in CORES, f"{path.name} is for a core the collection does not support"
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                assert re.search(r"\s#\s*\S", line), f"{path.name}:{number} ignores a test without a `# reason`: {line}"


def bootstrap_name(requirements_source: str) -> str:
    """The file name ansible-test's bootstrap looks for in ~/.ansible/test/cache, from the
    text of its ansible_test/_internal/python_requirements.py."""
    found = PINNED_PIP.search(requirements_source)
    assert found, "ansible-test's python_requirements.py no longer pins pip as pip='<version>': see tests/sanity/get_pip.py"
    return f"get_pip_{found.group(1).replace('.', '_')}.py"


def requirements_source(core: str, image: str | None) -> str:
    relative = "ansible_test/_internal/python_requirements.py"
    if image is None:
        import ansible_test  # noqa: PLC0415  (the host core's; the others' are in the image)

        return (Path(ansible_test.__file__).parent.parent / relative).read_text()
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", image, "sh", "-c",
                           f"cat /opt/ansible-{core}/lib/python{CONTAINER_PYTHON}/site-packages/{relative}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def results(collection: Path) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """From ansible-test's JUnit reports: the tests that passed, the skipped ones (test:
    message) and the failed ones (test: message)."""
    passed, skipped, failed = [], {}, {}
    for report in sorted((collection / "tests" / "output" / "junit").glob("*.xml")):
        for case in ET.parse(report).iter("testcase"):
            name = case.get("name")
            if (skip := case.find("skipped")) is not None:
                skipped[name] = (skip.text or skip.get("message") or "").strip()
            elif (fail := case.find("failure")) is not None or (fail := case.find("error")) is not None:
                failed[name] = (fail.get("message") or fail.text or "").strip()
            else:
                passed.append(name)
    return passed, skipped, failed


@pytest.mark.xdist_group("sanity")
@pytest.mark.parametrize("core", CORES)
def test_ansible_test_sanity(core, tarball, tmp_path, request):
    on_host = core == HOST_CORE
    image = None if on_host else request.getfixturevalue("controller_image")
    collection = install_artifact(tarball, tmp_path / "installed", logs=f"sanity/{core}")
    ignores = sorted(SANITY.glob(f"ignore-{core}.txt"))
    if ignores:
        (collection / "tests" / "sanity").mkdir(parents=True)
        shutil.copy(ignores[0], collection / "tests" / "sanity")
    home = CACHE / core / "home"
    cache = home / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SANITY / "get_pip.py", cache / bootstrap_name(requirements_source(core, image)))
    # pip's user configuration in that home: the CA bundle, as the pip that reads it sees it.
    pip_conf = home / ".config" / "pip" / "pip.conf"
    pip_conf.parent.mkdir(parents=True, exist_ok=True)
    pip_conf.write_text(f"[global]\ncert = {CA_BUNDLE if on_host else '/etc/ssl/host-ca.crt'}\n" if CA_BUNDLE.is_file() else "")

    log = f"sanity/{core}/ansible-test-sanity.log"
    if on_host:
        proc = run([BIN / "ansible-test", "sanity", "--python", HOST_PYTHON, "--junit", "--color", "no"],
                   log=log, cwd=collection, env=tool_env() | {"HOME": str(home)})
    else:
        mounts = ["-v", f"{tmp_path / 'installed'}:/sanity", "-v", f"{home}:/sanity-home"]
        if CA_BUNDLE.is_file():
            mounts += ["-v", f"{CA_BUNDLE}:/etc/ssl/host-ca.crt:ro"]
        name = f"prodready-sanity-core{core.replace('.', '-')}"
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)  # left by an interrupted run
        proc = run(["docker", "run", "--rm", "--name", name, *mounts, "-e", "HOME=/sanity-home",
                    "-w", "/sanity/ansible_collections/prodready/django", image,
                    f"/opt/ansible-{core}/bin/ansible-test", "sanity", "--python", CONTAINER_PYTHON, "--junit", "--color", "no"],
                   log=log)

    passed, skipped, failed = results(collection)
    summary = [f"ansible-core {core}, Python {HOST_PYTHON if on_host else CONTAINER_PYTHON}: exit {proc.returncode}",
               f"passed ({len(passed)}): {' '.join(passed)}",
               *(f"skipped {name}: {message}" for name, message in skipped.items()),
               *(f"failed {name}: {message}" for name, message in failed.items()),
               *(f"ignored: {line}" for path in ignores for line in path.read_text().splitlines()
                 if line.strip() and not line.startswith("#"))]
    (LOGS / "sanity" / core / "summary.txt").write_text("\n".join(summary) + "\n")
    assert proc.returncode == 0 and passed, f"ansible-test sanity (ansible-core {core}) failed:\n{tail(proc.stdout, 60)}"
    not_run = {name: message for name, message in skipped.items() if message != NOT_APPLICABLE}
    assert not not_run, f"ansible-core {core}: sanity tests skipped: {not_run} (a reason goes in tests/sanity/ignore-{core}.txt)"
