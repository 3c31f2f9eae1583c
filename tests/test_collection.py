"""The collection as users get it: built, installed from the tarball, documented, sane."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest
import yaml
from conftest import BIN, RECAP, ROLES, ROOT, build_artifact, install_artifact, run, tail, tool_env

FILTERS = sorted(p.stem for p in (ROOT / "plugins" / "filter").glob("*.yml"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build the tarball and install it (conftest's build_artifact and install_artifact, as
    tests/test_sanity.py does): the tarball, the collections path, the tools' environment."""
    work = tmp_path_factory.mktemp("collection")
    tarball = build_artifact(work, logs="collection")
    install_artifact(tarball, work / "installed", logs="collection")
    return tarball, work / "installed", tool_env() | {"ANSIBLE_COLLECTIONS_PATH": str(work / "installed")}


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


@pytest.mark.parametrize("playbook", ["site", "deploy", "rollback", "promote", "maintenance", "restore", "new_site"])
def test_playbooks_run_by_their_collection_name(installed, playbook, tmp_path):
    """`ansible-playbook prodready.django.<name>` finds the installed playbook (syntax check)."""
    _, path, env = installed
    (tmp_path / "hosts.yml").write_text("all:\n  children: {db: {}, cache: {}, memcached: {}, app: {}, web: {}}\n")
    proc = run([BIN / "ansible-playbook", "-i", tmp_path / "hosts.yml", "--syntax-check", f"prodready.django.{playbook}"],
               log=f"syntax-{playbook}.log", cwd=tmp_path, env=env)
    assert proc.returncode == 0, tail(proc.stdout)


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


def test_artifact_has_no_demo_inventory_and_no_empty_folder(installed):
    tarball, _, _ = installed
    with tarfile.open(tarball) as archive:
        members = archive.getmembers()
    names = [m.name for m in members]
    assert not [n for n in names if n.startswith(("inventories/demo", "docs", "changelogs/fragments"))]
    parents = {name.rsplit("/", 1)[0] for name in names if "/" in name}
    empty = sorted(m.name for m in members if m.isdir() and m.name not in parents)
    assert not empty, f"the artifact carries empty folders: {empty}"


@pytest.mark.parametrize("inventory", sorted(p.name for p in (ROOT / "inventories").iterdir() if p.name != "demo"))
def test_shipped_inventories_parse_from_the_installed_copy(installed, inventory):
    """Each inventory of the artifact loads as it is (its vault example left alone) and has
    the groups site.yml builds."""
    _, path, env = installed
    folder = path / "ansible_collections" / "prodready" / "django" / "inventories" / inventory
    assert folder.is_dir()
    proc = run([BIN / "ansible-inventory", "-i", folder, "--list"], log=f"inventory-{inventory}.log", cwd=folder, env=env)
    assert proc.returncode == 0 and "[WARNING]" not in proc.stdout, tail(proc.stdout)
    listed = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert {"db", "cache", "app", "web", "monitoring"} <= set(listed), sorted(listed)
    assert all("vault_django_secret_key" not in hostvars for hostvars in listed["_meta"]["hostvars"].values())


# --- prodready.django.new_site: a new site's inventory, from the installed collection ---

# The inputs of each layout's run: tiers also takes the options a user adds.
NEW_SITE_ARGS = {
    "single-host": [],
    "tiers": ["-e", "new_site_layout=tiers", "-e", "new_site_name=shop",
              "-e", "new_site_domains=shop.example.com,www.shop.example.com", "-e", "new_site_tls=acme",
              "-e", "new_site_acme_terms_agreed=true", "-e", "new_site_acme_email=ops@example.com",
              "-e", "new_site_celery_app=shop"],
}
NEW_SITE_HOSTS = {"single-host": {"server1"}, "tiers": {"web1", "web2", "app1", "app2", "db1", "db2", "cache1"}}
NEW_SITE_SECRETS = {
    "single-host": {"vault_django_secret_key", "vault_redis_password", "vault_celery_broker_password",
                    "vault_backup_restic_password"},
}
NEW_SITE_SECRETS["tiers"] = NEW_SITE_SECRETS["single-host"] | {"vault_db_password", "vault_replication_password"}
# The role variables that must come from the vault, each on the hosts that read it.
NEW_SITE_VAULTED = {
    "single-host": {"django_app_secret_key", "django_app_cache_password", "redis_password", "backup_restic_password"},
}
NEW_SITE_VAULTED["tiers"] = NEW_SITE_VAULTED["single-host"] | {
    "django_app_db_password", "postgresql_replication_password", "django_app_celery_broker_password"}
NEW_SITE_FILES = {  # path: mode
    "": 0o700, "hosts.yml": 0o644, "ansible.cfg": 0o644, ".gitignore": 0o644, ".vault_pass": 0o600,
    "group_vars": 0o700, "group_vars/web.yml": 0o644,
    "group_vars/all": 0o700, "group_vars/all/main.yml": 0o644, "group_vars/all/vault.yml": 0o600,
}


def new_site(env, folder: Path, args: list[str], log: str):
    return run([BIN / "ansible-playbook", "prodready.django.new_site", "-e", f"new_site_dir={folder.name}", *args],
               log=log, cwd=folder.parent, env=env)


def vault_of(env, folder: Path) -> dict:
    proc = run([BIN / "ansible-vault", "view", "--vault-password-file", folder / ".vault_pass",
                folder / "group_vars" / "all" / "vault.yml"], log=f"new-site-vault-{folder.name}.log", env=env)
    assert proc.returncode == 0, tail(proc.stdout)
    return yaml.safe_load(proc.stdout[proc.stdout.index("---"):])


# layout -> (folder, env) of this test process's new sites. Kept across the module's fixtures:
# pytest tears those down whenever a worker runs a test of another file in between.
NEW_SITES: dict[str, tuple[Path, dict]] = {}


@pytest.fixture(params=sorted(NEW_SITE_ARGS))
def site(request, installed, tmp_path_factory):
    """`ansible-playbook prodready.django.new_site` run from the installed collection alone,
    with a relative new_site_dir, once per layout: (layout, folder, the env that ran it)."""
    layout = request.param
    if layout not in NEW_SITES:
        _, _, env = installed
        folder = tmp_path_factory.mktemp("new-site") / f"site-{layout}"
        proc = new_site(env, folder, NEW_SITE_ARGS[layout], f"new-site-{layout}.log")
        assert proc.returncode == 0, tail(proc.stdout)
        NEW_SITES[layout] = folder, env
    return layout, *NEW_SITES[layout]


def test_new_site_writes_the_files_with_their_modes(site):
    layout, folder, env = site
    found = {str(p.relative_to(folder)) for p in folder.rglob("*")} | {""}
    assert found == set(NEW_SITE_FILES), sorted(found)
    modes = {name: (folder / name).stat().st_mode & 0o777 for name in NEW_SITE_FILES}
    assert modes == NEW_SITE_FILES
    assert (folder / "group_vars" / "all" / "vault.yml").read_text().startswith("$ANSIBLE_VAULT;1.1;AES256\n")
    assert ".vault_pass" in (folder / ".gitignore").read_text().split()
    # ansible.cfg: the inventory, the password file, and where this collection is installed.
    config = (folder / "ansible.cfg").read_text()
    assert "inventory = hosts.yml\n" in config and "vault_password_file = .vault_pass\n" in config
    assert f"collections_path = {env['ANSIBLE_COLLECTIONS_PATH']}:" in config
    hosts = yaml.safe_load((folder / "hosts.yml").read_text())["all"]
    assert set(hosts["hosts"]) == NEW_SITE_HOSTS[layout]
    assert {"db", "cache", "app", "web", "monitoring"} <= set(hosts["children"])


def test_new_site_vault_holds_long_random_secrets(site):
    """The vault opens with the password file and holds every secret the layout needs,
    each long, of letters and digits, and different from the others; no other file holds one."""
    layout, folder, env = site
    secrets = vault_of(env, folder)
    assert set(secrets) == NEW_SITE_SECRETS[layout]
    assert all(re.fullmatch(r"[A-Za-z0-9]{40,}", v) for v in secrets.values()), {k: len(v) for k, v in secrets.items()}
    password = (folder / ".vault_pass").read_text().strip()
    assert re.fullmatch(r"[A-Za-z0-9]{64}", password)
    assert len(set(secrets.values()) | {password}) == len(secrets) + 1
    plain = "".join(p.read_text() for p in folder.rglob("*") if p.is_file() and p.name not in ("vault.yml", ".vault_pass"))
    assert not [name for name, value in secrets.items() if value in plain]


@pytest.mark.parametrize("site", ["single-host"], indirect=True)  # one layout: the same lookups make both
def test_new_site_runs_give_different_secrets(site, tmp_path):
    layout, folder, env = site
    again = tmp_path / "again"
    proc = new_site(env, again, NEW_SITE_ARGS[layout], f"new-site-{layout}-again.log")
    assert proc.returncode == 0, tail(proc.stdout)
    first, second = vault_of(env, folder), vault_of(env, again)
    assert first.keys() == second.keys()
    assert not set(first.values()) & set(second.values())
    assert (folder / ".vault_pass").read_text() != (again / ".vault_pass").read_text()


def test_new_site_inventory_resolves_every_secret(site):
    """ansible-inventory -i <folder> with the password file: every host has the vault's
    values, and each secret variable of the roles names one of them."""
    layout, folder, env = site
    proc = run([BIN / "ansible-inventory", "-i", folder, "--vault-password-file", folder / ".vault_pass", "--list"],
               log=f"new-site-inventory-{layout}.log", cwd=folder.parent, env=env)
    assert proc.returncode == 0 and "[WARNING]" not in proc.stdout, tail(proc.stdout)
    hostvars = json.loads(proc.stdout[proc.stdout.index("{"):])["_meta"]["hostvars"]
    assert set(hostvars) == NEW_SITE_HOSTS[layout]
    secrets = vault_of(env, folder)
    for host, values in hostvars.items():
        assert {k: values.get(k) for k in secrets} == secrets, host
        vaulted = {k: v for k, v in values.items() if isinstance(v, str) and "vault_" in v}
        assert set(vaulted) == NEW_SITE_VAULTED[layout], host
        assert all(re.fullmatch(r"\{\{ (vault_\w+) \}\}", v) and v[3:-3] in secrets for v in vaulted.values()), vaulted


def test_new_site_inventory_passes_the_syntax_check(site):
    layout, folder, env = site
    proc = run([BIN / "ansible-playbook", "-i", folder, "--syntax-check", "prodready.django.site"],
               log=f"new-site-syntax-{layout}.log", cwd=folder.parent, env=env)
    assert proc.returncode == 0, tail(proc.stdout)


def test_new_site_inventory_passes_the_roles_checks(site):
    """tests/preflight_inventory.yml, run in the folder (its ansible.cfg names the inventory and
    the password file): each host's roles' argument specs and preflight checks pass on the
    values as written, the hosts standing in on this machine in check mode. With tiers, one
    host of each kind (web2 and app2 would repeat web1's and app1's checks)."""
    layout, folder, env = site
    hosts = NEW_SITE_HOSTS[layout] - {"web2", "app2"}
    proc = run([BIN / "ansible-playbook", ROOT / "tests" / "preflight_inventory.yml", "--check", "--tags", "preflight",
                "--limit", ",".join(sorted(hosts))], log=f"new-site-preflight-{layout}.log", cwd=folder, env=env)
    recap = {host: (int(failed), int(changed)) for host, _, changed, _, failed in RECAP.findall(proc.stdout)}
    assert proc.returncode == 0 and recap == dict.fromkeys(hosts, (0, 0)), tail(proc.stdout)


def test_new_site_refuses_a_folder_that_holds_files(site):
    """A second run into the same folder stops before any change, naming new_site_dir; the
    vault stays as it was."""
    layout, folder, env = site
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    proc = new_site(env, folder, NEW_SITE_ARGS[layout], f"new-site-{layout}-twice.log")
    assert proc.returncode != 0
    assert f"new_site_dir {folder} already holds files" in proc.stdout, tail(proc.stdout)
    assert [(int(c), int(f)) for _, _, c, _, f in RECAP.findall(proc.stdout)] == [(0, 1)]
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(("args", "says"), [
    (["-e", "new_site_layout=cluster"], "value of new_site_layout must be one of: single-host, tiers, got: cluster"),
    (["-e", "new_site_name=My-Site"], "new_site_name must be lower-case letters"),
    (["-e", "new_site_domains=localhost"], "new_site_domains must be one or more full DNS names"),
    (["-e", "new_site_tls=acme"], "new_site_tls=acme needs new_site_acme_terms_agreed=true"),
    (["-e", "new_site_layuot=tiers"], "Unknown input new_site_layuot"),
], ids=["layout", "name", "domains", "acme-terms", "unknown"])
def test_new_site_refuses_bad_inputs(installed, tmp_path, args, says):
    """A bad input stops the run before anything is written, naming the variable."""
    _, _, env = installed
    folder = tmp_path / "mysite"
    proc = new_site(env, folder, args, f"new-site-bad-{args[1].split('=')[0]}.log")
    assert proc.returncode != 0 and says in proc.stdout, tail(proc.stdout)
    assert not folder.exists()


def test_galaxy_version_is_released_or_next():
    """galaxy.yml's version is the newest release of changelogs/changelog.yaml (antsibull-changelog
    release), or the next one, not released yet."""
    from ansible.utils.version import SemanticVersion  # noqa: PLC0415

    version = SemanticVersion(yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"])
    released = [SemanticVersion(v) for v in yaml.safe_load((ROOT / "changelogs" / "changelog.yaml").read_text())["releases"]]
    assert all(version >= v for v in released), f"galaxy.yml's {version} is older than a release of the changelog"
