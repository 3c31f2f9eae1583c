"""Checks that need no test host: linters, argument specs, role docs."""

from __future__ import annotations

import sys

import pytest
import yaml
from conftest import BIN, ROLES, ROOT, run, tail

sys.path.insert(0, str(ROOT / "scripts"))
import role_docs  # noqa: E402


def test_yamllint():
    proc = run([BIN / "yamllint", "--strict", "."], log="yamllint.log")
    assert proc.returncode == 0, proc.stdout


def test_ansible_lint_production_profile():
    proc = run([BIN / "ansible-lint", "--profile", "production"], log="ansible-lint.log")
    assert proc.returncode == 0, tail(proc.stdout, 80)


def _load(path):
    return yaml.safe_load(path.read_text()) or {}


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_name_exactly_the_defaults(role):
    """Every default is specified and every specified option has a default,
    except required inputs that have no safe default (passwords, keys)."""
    base = ROOT / "roles" / role
    defaults = _load(base / "defaults" / "main.yml")
    options = _load(base / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    required = {k for k, v in options.items() if v.get("required")}
    assert set(defaults) == set(options) - required, (
        f"only in defaults: {sorted(set(defaults) - set(options))}, "
        f"only in argument specs: {sorted(set(options) - required - set(defaults))}")
    assert not required & set(defaults), f"required options with a default: {sorted(required & set(defaults))}"
    for name, spec in options.items():
        assert spec.get("description"), f"{name} has no description"
        assert name.startswith(f"{role}_"), f"{name} does not start with the role name"
        if name in defaults and "default" in spec:
            assert spec["default"] == defaults[name], f"{name}: argument spec default differs from defaults/main.yml"


@pytest.mark.parametrize("role", ROLES)
def test_role_readme_variable_table_is_current(role):
    """The README's table is the one scripts/role_docs.py makes from the argument specs."""
    readme = ROOT / "roles" / role / "README.md"
    assert readme.exists(), f"roles/{role}/README.md is missing"
    text = readme.read_text()
    assert role_docs.BEGIN in text and role_docs.END in text, f"roles/{role}/README.md has no variable table markers"
    current = text[text.index(role_docs.BEGIN) + len(role_docs.BEGIN):text.index(role_docs.END)].strip()
    assert current == role_docs.table(role), f"run scripts/role_docs.py {role} to refresh roles/{role}/README.md"
