"""Checks that need no test host: linters, argument specs (the role docs: tests/test_docs.py)."""

from __future__ import annotations

import pytest
import yaml
from conftest import BIN, ROLES, ROOT, run, tail


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
