"""The deploy's migration check (roles/deploy/files/_prodready/migration_check.py)
against real Django: a small project on SQLite, one migration written per case, the
check run as the deploy runs it (manage.py shell -c, in a process of its own)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import django
import pytest
from conftest import ROOT

PREFIX = "PRODREADY-MIGRATION-CHECK "
COMMAND = "from _prodready.migration_check import main; main()"
MIGRATION = "posts.0002_case"

SETTINGS = """
from pathlib import Path
BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "test"
INSTALLED_APPS = ["posts"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
"""

MANAGE = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
from django.core.management import execute_from_command_line
execute_from_command_line(sys.argv)
"""

# The schema the old release serves: Post has a nullable column (subtitle) and a
# many-to-many field; Note stands alone (nothing points at it).
INITIAL = """
from django.db import migrations, models

class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel("Tag", [
            ("id", models.BigAutoField(primary_key=True)),
            ("name", models.CharField(max_length=50)),
        ]),
        migrations.CreateModel("Post", [
            ("id", models.BigAutoField(primary_key=True)),
            ("title", models.CharField(max_length=100)),
            ("subtitle", models.CharField(max_length=100, null=True)),
            ("body", models.TextField()),
            ("tags", models.ManyToManyField(to="posts.tag")),
        ]),
        migrations.CreateModel("Note", [
            ("id", models.BigAutoField(primary_key=True)),
            ("text", models.TextField()),
        ]),
    ]
"""

# One migration after the initial one: its operations, then what the check finds
# ([] for a safe one) as (operation, target) pairs.
UNSAFE = {
    "remove-field": ('migrations.RemoveField("post", "subtitle")', [("RemoveField", "posts.Post.subtitle")]),
    "remove-many-to-many": ('migrations.RemoveField("post", "tags")', [("RemoveField", "posts.Post.tags")]),
    "delete-model": ('migrations.DeleteModel("Note")', [("DeleteModel", "posts.Note")]),
    "rename-field": ('migrations.RenameField("post", "title", "headline")', [("RenameField", "posts.Post.title")]),
    "rename-model": ('migrations.RenameModel("Note", "Memo")', [("RenameModel", "posts.Note")]),
    "alter-model-table": ('migrations.AlterModelTable("note", "notes")', [("AlterModelTable", "posts.Note")]),
    "alter-field-not-null": ('migrations.AlterField("post", "subtitle", models.CharField(max_length=100, default=""))',
                             [("AlterField", "posts.Post.subtitle")]),
    "alter-field-column": ('migrations.AlterField("post", "body", models.TextField(db_column="content"))',
                           [("AlterField", "posts.Post.body")]),
    "add-field-not-null": ('migrations.AddField("post", "slug", models.SlugField(default="post"))',
                           [("AddField", "posts.Post.slug")]),
    "add-foreign-key-not-null": (('migrations.AddField("post", "note", models.ForeignKey("posts.note", '
                                  'on_delete=models.CASCADE, default=1))'), [("AddField", "posts.Post.note")]),
    "remove-field-in-database-operations": (
        ('migrations.SeparateDatabaseAndState(state_operations=[migrations.RemoveField("post", "subtitle")], '
         'database_operations=[migrations.RemoveField("post", "subtitle")])'),
        [("RemoveField", "posts.Post.subtitle")]),
}
SAFE = {
    "add-field-nullable": 'migrations.AddField("post", "summary", models.TextField(null=True))',
    "add-many-to-many": 'migrations.AddField("post", "related", models.ManyToManyField(to="posts.note"))',
    "state-only-remove-field": ('migrations.SeparateDatabaseAndState(state_operations=['
                                'migrations.RemoveField("post", "subtitle")])'),
    "run-python": "migrations.RunPython(lambda apps, schema_editor: None, migrations.RunPython.noop)",
    "run-sql": 'migrations.RunSQL("SELECT 1", migrations.RunSQL.noop)',
    "add-and-rename-index": ('migrations.AddIndex("post", models.Index(fields=["title"], name="post_title_idx")), '
                             'migrations.RenameIndex("post", new_name="post_headline_idx", old_name="post_title_idx")'),
    "create-model": ('migrations.CreateModel("Draft", [("id", models.BigAutoField(primary_key=True)), '
                     '("text", models.TextField())])'),
    "alter-field-keeps-null": 'migrations.AlterField("post", "subtitle", models.CharField(max_length=200, null=True))',
    # Renamed in Python only: db_column keeps the table as the old release knows it.
    "rename-field-keeps-column": ('migrations.AlterField("post", "body", models.TextField(db_column="body")), '
                                  'migrations.RenameField("post", "body", "content")'),
    "alter-model-table-same-name": 'migrations.AlterModelTable("note", "posts_note")',
}
if django.VERSION >= (5, 0):  # db_default and GeneratedField
    SAFE.update({
        "add-field-db-default": 'migrations.AddField("post", "views", models.IntegerField(db_default=0))',
        "alter-field-not-null-db-default": ('migrations.AlterField("post", "subtitle", '
                                            'models.CharField(max_length=100, db_default=""))'),
        "add-generated-field": ('migrations.AddField("post", "title_length", models.GeneratedField('
                                'expression=models.functions.Length("title"), output_field=models.IntegerField(), '
                                'db_persist=True))'),
    })


def migration(operations, depends):
    return textwrap.dedent(f"""
        from django.db import migrations, models
        import django.db.models.functions

        class Migration(migrations.Migration):
            dependencies = [("posts", "{depends}")]
            operations = [{operations}]
        """)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The project with its initial migration applied: each case copies it."""
    path = tmp_path_factory.mktemp("template") / "project"
    (path / "project").mkdir(parents=True)
    (path / "project" / "__init__.py").write_text("")
    (path / "project" / "settings.py").write_text(SETTINGS)
    (path / "posts" / "migrations").mkdir(parents=True)
    (path / "posts" / "__init__.py").write_text("")
    (path / "posts" / "migrations" / "__init__.py").write_text("")
    (path / "posts" / "migrations" / "0001_initial.py").write_text(INITIAL)
    (path / "manage.py").write_text(MANAGE)
    manage(path, "migrate", "--noinput")
    return path


def manage(path, *args, allow=""):
    env = dict(os.environ, PRODREADY_ALLOW_MIGRATIONS=allow,
               PYTHONPATH=str(ROOT / "roles" / "deploy" / "files"), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "manage.py", *args], cwd=path, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def project(template, tmp_path, *migrations):
    """A copy of the template with these migrations added (name, operations), unapplied,
    each one after the one before it."""
    path = tmp_path / "project"
    shutil.copytree(template, path)
    depends = "0001_initial"
    for name, operations in migrations:
        (path / "posts" / "migrations" / f"{name}.py").write_text(migration(operations, depends))
        depends = name
    return path


def check(path, allow=""):
    """The check's report, as the deploy reads it: the one line with the prefix."""
    lines = [line for line in manage(path, "shell", "-c", COMMAND, allow=allow).splitlines()
             if line.startswith(PREFIX)]
    assert len(lines) == 1, lines
    return json.loads(lines[0][len(PREFIX):])


def pairs(findings):
    return [(f["operation"], f["target"]) for f in findings]


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_operation_is_reported(template, tmp_path, case):
    operations, expected = UNSAFE[case]
    report = check(project(template, tmp_path, ("0002_case", operations)))
    assert report["pending"] == [MIGRATION]
    assert pairs(report["unsafe"]) == expected
    assert all(f["migration"] == MIGRATION and f["why"].startswith("the old release") for f in report["unsafe"])
    assert report["allowed"] == []


@pytest.mark.parametrize("case", sorted(SAFE))
def test_safe_operation_passes(template, tmp_path, case):
    report = check(project(template, tmp_path, ("0002_case", SAFE[case])))
    assert report == {"pending": [MIGRATION], "unsafe": [], "allowed": []}


def test_allow_all_moves_every_finding_to_allowed(template, tmp_path):
    path = project(template, tmp_path, ("0002_case", UNSAFE["remove-field"][0]))
    report = check(path, allow="all")
    assert report["unsafe"] == []
    assert pairs(report["allowed"]) == [("RemoveField", "posts.Post.subtitle")]


def test_allow_list_names_migrations(template, tmp_path):
    path = project(template, tmp_path,
                   ("0002_case", UNSAFE["remove-field"][0]),
                   ("0003_drop_note", UNSAFE["delete-model"][0]))
    report = check(path, allow=f"other.0001_initial, {MIGRATION}")
    assert report["pending"] == [MIGRATION, "posts.0003_drop_note"]
    assert [(f["migration"], f["operation"]) for f in report["allowed"]] == [(MIGRATION, "RemoveField")]
    assert [(f["migration"], f["operation"]) for f in report["unsafe"]] == [("posts.0003_drop_note", "DeleteModel")]


def test_applied_migrations_are_the_starting_state(template, tmp_path):
    """Only unapplied migrations are read, against the schema the applied ones made."""
    path = project(template, tmp_path,
                   ("0002_case", 'migrations.AddField("post", "summary", models.TextField(null=True))'),
                   ("0003_require_summary", 'migrations.AlterField("post", "summary", models.TextField(default=""))'))
    manage(path, "migrate", "--noinput", "posts", "0002")
    report = check(path)
    assert report["pending"] == ["posts.0003_require_summary"]
    assert pairs(report["unsafe"]) == [("AlterField", "posts.Post.summary")]


def test_nothing_pending(template):
    assert check(template) == {"pending": [], "unsafe": [], "allowed": []}
