"""The collection as users get it: built, installed from the tarball, documented, sane."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ROLES, ROOT, run, tail, tool_env

# ansible-test's sanity tests that need virtual environments bootstrapped from a
# host the test bed cannot reach. They check Python plugins (the filter plugins: their
# documentation is checked by test_filter_plugins_are_documented instead; the filters
# themselves by tests/test_topology.py) or repeat checks that test_static.py runs:
# yamllint, antsibull-changelog lint.
SANITY_SKIPS = ["changelog", "yamllint", "pylint", "pep8", "validate-modules", "import", "runtime-metadata", "ansible-doc"]
FILTERS = sorted(p.stem for p in (ROOT / "plugins" / "filter").glob("*.yml"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build the tarball and install it (with no dependencies: Galaxy is unreachable)."""
    work = tmp_path_factory.mktemp("collection")
    proc = run([BIN / "ansible-galaxy", "collection", "build", "--output-path", work, ROOT],
               log="collection-build.log", cwd=work)
    assert proc.returncode == 0, proc.stdout
    tarball = next(work.glob("prodready-django-*.tar.gz"))
    env = tool_env()
    env["ANSIBLE_COLLECTIONS_PATH"] = str(work / "installed")
    proc = run([BIN / "ansible-galaxy", "collection", "install", "--offline", "--no-deps", "--force",
                "-p", work / "installed", tarball], log="collection-install.log", cwd=work, env=env)
    assert proc.returncode == 0, proc.stdout
    return tarball, work / "installed", env


def test_artifact_leaves_out_tests_and_examples(installed):
    tarball, _, _ = installed
    with tarfile.open(tarball) as archive:
        top = {name.split("/")[0] for name in archive.getnames()}
    assert {"roles", "playbooks", "meta", "README.md", "LICENSE", "MANIFEST.json"} <= top
    unwanted = top & {"molecule", "tests", "examples", "scripts", ".ci", ".config", ".cache", ".venv", "Makefile"}
    assert not unwanted, f"the artifact carries {unwanted}"


def test_ansible_doc_lists_every_role(installed):
    _, path, env = installed
    proc = run([BIN / "ansible-doc", "-t", "role", "-l", "prodready.django"], log="ansible-doc.log",
               cwd=path, env=env)
    assert proc.returncode == 0, proc.stdout
    listed = {line.split(":")[0].strip() for line in proc.stdout.splitlines() if line.startswith("prodready.")}
    # Every role, and the internal one (roles/shared: entry points only, no main).
    assert listed == {f"prodready.django.{role}" for role in ROLES + ["shared"]}


@pytest.mark.parametrize("playbook", ["site", "deploy", "rollback", "promote", "restore"])
def test_playbooks_run_by_their_collection_name(installed, playbook, tmp_path):
    """`ansible-playbook prodready.django.<name>` finds the installed playbook (syntax check)."""
    _, path, env = installed
    (tmp_path / "hosts.yml").write_text("all:\n  children: {db: {}, cache: {}, memcached: {}, app: {}, web: {}}\n")
    proc = run([BIN / "ansible-playbook", "-i", tmp_path / "hosts.yml", "--syntax-check", f"prodready.django.{playbook}"],
               log=f"syntax-{playbook}.log", cwd=tmp_path, env=env)
    assert proc.returncode == 0, tail(proc.stdout)


def test_ansible_test_sanity(installed):
    _, path, env = installed
    collection = path / "ansible_collections" / "prodready" / "django"
    args = [BIN / "ansible-test", "sanity", "--python", "3.11"]
    for skip in SANITY_SKIPS:
        args += ["--skip-test", skip]
    proc = run(args, log="ansible-test-sanity.log", cwd=collection, env=env)
    assert proc.returncode == 0, tail(proc.stdout, 60)


@pytest.mark.parametrize("name", FILTERS)
def test_filter_plugins_are_documented(installed, name):
    """ansible-doc renders each filter of the installed collection from its documentation."""
    _, _, env = installed
    proc = run([BIN / "ansible-doc", "-t", "filter", f"prodready.django.{name}"], log=f"ansible-doc-{name}.log", env=env)
    assert proc.returncode == 0 and "EXAMPLES" in proc.stdout and "[WARNING]" not in proc.stdout, tail(proc.stdout)


def test_changelog_fragments_lint():
    proc = run([BIN / "antsibull-changelog", "lint"], log="changelog-lint.log")
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout


def test_galaxy_dependencies_are_ranges_matching_requirements():
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    requirements = yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]
    assert all(v not in ("*", "") and "<" in v and ">=" in v for v in galaxy["dependencies"].values())
    assert {r["name"]: r["version"] for r in requirements} == galaxy["dependencies"]


def test_galaxy_dependencies_admit_the_installed_collections():
    """The dependency collections the suite runs with (the first found, as ansible-core
    searches: ANSIBLE_COLLECTIONS_PATH, then the virtualenv's ansible package) are in
    galaxy.yml's ranges: a user with the same versions installs the collection."""
    from ansible.galaxy.dependency_resolution.versioning import meets_requirements  # noqa: PLC0415
    import ansible_collections  # noqa: PLC0415  (the `ansible` package's collections)

    roots = [ROOT / ".cache" / "collections" / "ansible_collections", *map(Path, ansible_collections.__path__)]
    for name, wanted in yaml.safe_load((ROOT / "galaxy.yml").read_text())["dependencies"].items():
        manifests = [root / name.replace(".", "/") / "MANIFEST.json" for root in roots]
        manifest = next((m for m in manifests if m.exists()), None)
        assert manifest, f"{name} is installed in none of {roots}"
        version = json.loads(manifest.read_text())["collection_info"]["version"]
        assert meets_requirements(version, wanted), f"{name} {version} ({manifest}) is outside galaxy.yml's {wanted}"


def test_galaxy_dependencies_admit_the_bundled_collections():
    """Each `ansible` package the suite pins (requirements-dev.txt, the controllers) and the
    newest release carry versions in galaxy.yml's ranges (tests/bundled_collections.yml,
    written by scripts/bundle_versions.py)."""
    from ansible.galaxy.dependency_resolution.versioning import meets_requirements  # noqa: PLC0415

    dependencies = yaml.safe_load((ROOT / "galaxy.yml").read_text())["dependencies"]
    bundles = yaml.safe_load((ROOT / "tests" / "bundled_collections.yml").read_text())
    pins = {f"ansible=={v}" for path in [ROOT / "requirements-dev.txt", *(ROOT / "tests" / "controllers").glob("*.txt")]
            for v in re.findall(r"^ansible==(\S+)\s*$", path.read_text(), re.M)}
    assert pins <= set(bundles), f"run scripts/bundle_versions.py: {sorted(pins - set(bundles))} not read yet"
    for bundle, carried in bundles.items():
        assert set(carried) == set(dependencies), f"{bundle}: run scripts/bundle_versions.py again"
        outside = {name: v for name, v in carried.items() if not meets_requirements(v, dependencies[name])}
        assert not outside, f"{bundle} carries {outside}, outside galaxy.yml's ranges {dependencies}"

