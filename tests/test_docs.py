"""The collection's documentation: each role's README (its "Variables" part made by
aar-doc from meta/argument_specs.yml, every entry point), antsibull-docs' lint of the
installed collection, and version_added on every entry point."""

from __future__ import annotations

import difflib
import json
import shutil

import pytest
import yaml
from conftest import BIN, ROOT, build_artifact, install_artifact, run, tail, tool_env

BEGIN, END = "<!-- BEGIN_ANSIBLE_DOCS -->", "<!-- END_ANSIBLE_DOCS -->"
# Every role with argument specs: the roles and the internal one (roles/shared).
DOCUMENTED = sorted(p.parent.parent.name for p in (ROOT / "roles").glob("*/meta/argument_specs.yml"))
# The collection's first release: nothing was released before it.
FIRST_RELEASE = "1.0.0"


def entry_points(role: str) -> dict:
    return yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]


@pytest.fixture(scope="session")
def regenerated(tmp_path_factory):
    """scripts/role_docs.sh run on a copy of what it reads (galaxy.yml, each role's meta/
    and README.md): the READMEs as they should be."""
    copy = tmp_path_factory.mktemp("role-docs")
    shutil.copy(ROOT / "galaxy.yml", copy)
    for role in DOCUMENTED:
        shutil.copytree(ROOT / "roles" / role / "meta", copy / "roles" / role / "meta")
        shutil.copy(ROOT / "roles" / role / "README.md", copy / "roles" / role)
    proc = run(["bash", ROOT / "scripts" / "role_docs.sh"], log="docs/role-docs.log",
               env=tool_env() | {"ROLE_DOCS_ROOT": str(copy)})
    assert proc.returncode == 0, tail(proc.stdout)
    return copy


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """The collection as users get it: the built tarball, installed."""
    work = tmp_path_factory.mktemp("docs")
    collection = install_artifact(build_artifact(work, logs="docs"), work / "installed", logs="docs")
    return collection, tool_env() | {"ANSIBLE_COLLECTIONS_PATH": str(work / "installed")}


@pytest.mark.parametrize("role", DOCUMENTED)
def test_role_readme_is_what_aar_doc_makes(role, regenerated):
    readme = ROOT / "roles" / role / "README.md"
    text = readme.read_text()
    lines = text.splitlines()
    assert lines.count(BEGIN) == 1 and lines.count(END) == 1, (
        f"roles/{role}/README.md needs the lines {BEGIN} and {END} once each, where the variables go")
    fresh = (regenerated / "roles" / role / "README.md").read_text()
    diff = "\n".join(difflib.unified_diff(lines, fresh.splitlines(), f"roles/{role}/README.md", "regenerated", lineterm=""))
    assert fresh == text, f"roles/{role}/README.md is out of date: run scripts/role_docs.sh {role}\n{tail(diff, 40)}"
    for entry_point in entry_points(role):
        assert f"### Entry point `{entry_point}`" in text


@pytest.mark.parametrize("role", DOCUMENTED)
def test_every_entry_point_has_version_added(role):
    missing = {name: spec.get("version_added") for name, spec in entry_points(role).items()
               if spec.get("version_added") != FIRST_RELEASE}
    assert not missing, f"roles/{role}/meta/argument_specs.yml: entry points without version_added: {FIRST_RELEASE}: {missing}"


def test_ansible_doc_reads_every_entry_point(installed):
    """ansible-doc of the installed collection: every role's every entry point, with its version_added."""
    _, env = installed
    proc = run([BIN / "ansible-doc", "-t", "role", "--json", *(f"prodready.django.{role}" for role in DOCUMENTED)],
               log="docs/ansible-doc-roles.log", env=env)
    assert proc.returncode == 0, tail(proc.stdout)
    docs = json.loads(proc.stdout[proc.stdout.index("{"):])
    for role in DOCUMENTED:
        found = docs[f"prodready.django.{role}"]["entry_points"]
        assert set(found) == set(entry_points(role)), f"{role}: ansible-doc lists {sorted(found)}"
        assert {spec.get("version_added") for spec in found.values()} == {FIRST_RELEASE}, role


def test_antsibull_docs_lint(installed):
    """The docs as the Ansible documentation site would build them: schemas, semantic
    markup (an O() names an option of its own entry point, or main:option of another),
    references, RST."""
    collection, env = installed
    proc = run([BIN / "antsibull-docs", "lint-collection-docs", "--plugin-docs", collection],
               log="docs/antsibull-docs-lint.log", env=env)
    assert proc.returncode == 0 and not proc.stdout.strip(), tail(proc.stdout, 80)
