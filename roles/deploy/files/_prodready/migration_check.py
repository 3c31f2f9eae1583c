"""Which pending migrations would break the release that is still serving.

The deploy migrates while the old release keeps answering requests against the same
database, so every operation must leave a schema the old code still works with: add
before you remove. Before `manage.py migrate`, the deploy runs, in the new release:

    ./.venv/bin/python manage.py shell -c "from _prodready.migration_check import main; main()"

It reads the unapplied migrations of the default database with Django's own loader,
walks their operations in the order `migrate` would apply them, and prints one line:

    PRODREADY-MIGRATION-CHECK {"pending": [...], "unsafe": [...], "allowed": [...]}

where each finding is {"migration", "operation", "target", "why"}. Findings of the
migrations that PRODREADY_ALLOW_MIGRATIONS names (app_label.migration_name, comma
separated, or "all") go to "allowed" instead of "unsafe". It exits 0 either way: the
deploy decides. It never changes the database.
"""

import json
import os

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.utils import truncate_name
from django.db.migrations import operations
from django.db.migrations.executor import MigrationExecutor
from django.db.models.fields import NOT_PROVIDED

PREFIX = "PRODREADY-MIGRATION-CHECK "


def has_db_default(field):
    # db_default is Django >= 5.0; older fields have no database defaults at all.
    return getattr(field, "db_default", NOT_PROVIDED) is not NOT_PROVIDED


def column(name, field):
    """The column a field of the migration state uses (state fields are not bound to a model)."""
    field = field.clone()
    field.set_attributes_from_name(name)
    return field.get_attname_column()[1]


def default_table(app_label, model):
    """The table Django names a model of the migration state after, without a db_table."""
    return truncate_name(f"{app_label}_{model.name_lower}", connections[DEFAULT_DB_ALIAS].ops.max_name_length())


def finding(operation, target, why):
    return {"operation": type(operation).__name__, "target": target, "why": why}


def check(app_label, operation, state):
    """What the old release would fail at once `operation` has run, against `state` (the
    project state just before it): a list of findings, empty when the operation is safe."""
    if isinstance(operation, operations.SeparateDatabaseAndState):
        # Only database_operations touch the database (a state-only change is how a
        # release stops using a field before the next one drops it); each sees the
        # state the ones before it leave, as in SeparateDatabaseAndState.database_forwards.
        return inspect(app_label, operation.database_operations, state.clone())
    if isinstance(operation, (operations.DeleteModel, operations.RenameModel, operations.AlterModelTable)):
        return check_model(app_label, operation, state)
    if isinstance(operation, (operations.RemoveField, operations.RenameField, operations.AlterField,
                              operations.AddField)):
        return check_field(app_label, operation, state.models[app_label, operation.model_name_lower])
    # RunSQL, RunPython: what they do cannot be told; indexes, constraints, new models,
    # options: the old release works on.
    return []


def check_model(app_label, operation, state):
    is_rename = isinstance(operation, operations.RenameModel)
    model = state.models[app_label, operation.old_name_lower if is_rename else operation.name_lower]
    target, old = f"{app_label}.{model.name}", model.options.get("db_table") or default_table(app_label, model)
    if is_rename:
        # Even with a fixed db_table, the columns of its many-to-many tables are renamed.
        return [finding(operation, target, f"the old release still uses model {model.name} (table {old} "
                        f"and its many-to-many columns), renamed to {operation.new_name}")]
    if isinstance(operation, operations.DeleteModel):
        return [finding(operation, target, f"the old release still queries table {old}, which is dropped")]
    # AlterModelTable; table=None means back to the default name.
    new = operation.table or default_table(app_label, model)
    if new == old:
        return []
    return [finding(operation, target, f"the old release still queries table {old}, renamed to {new}")]


def check_field(app_label, operation, model):
    if isinstance(operation, operations.RenameField):
        field = model.fields[operation.old_name]
        old, new = column(operation.old_name, field), column(operation.new_name, field)
        # A field renamed in Python only (db_column kept) leaves the table as it is; a
        # many-to-many field's table is named after the field, so it moves.
        if old == new and not field.many_to_many:
            return []
        return [finding(operation, f"{app_label}.{model.name}.{operation.old_name}",
                        f"the old release still uses {operation.old_name} (column {old}), "
                        f"renamed to {operation.new_name}")]
    target = f"{app_label}.{model.name}.{operation.name}"
    if isinstance(operation, operations.RemoveField):
        field = model.fields[operation.name]
        if field.many_to_many:
            why = "the old release still reads and writes its many-to-many table, which is dropped"
        else:
            why = f"the old release still selects and writes column {column(operation.name, field)}, which is dropped"
        return [finding(operation, target, why)]
    if isinstance(operation, operations.AlterField):
        old, new = model.fields[operation.name], operation.field
        found = []
        if old.null and not new.null and not has_db_default(new):
            found.append(finding(operation, target, "the old release may still save NULL in it, "
                                 "and it becomes NOT NULL without a database default"))
        if column(operation.name, old) != column(operation.name, new):
            found.append(finding(operation, target, f"the old release still uses column "
                                 f"{column(operation.name, old)}, renamed to {column(operation.name, new)}"))
        return found
    # AddField. A many-to-many field has no column (a table of its own), a generated one
    # (Django >= 5.0) is computed by the database: the old release's inserts miss neither.
    field = operation.field
    if field.many_to_many or getattr(field, "generated", False) or field.null or has_db_default(field):
        return []
    return [finding(operation, target, f"the old release inserts rows without column {column(operation.name, field)}, "
                    "which is NOT NULL without a database default (db_default)")]


def inspect(app_label, migration_operations, state):
    """The findings of a list of operations, moving `state` forwards past each one."""
    found = []
    for operation in migration_operations:
        found += check(app_label, operation, state)
        operation.state_forwards(app_label, state)
    return found


def report(allow):
    """pending, unsafe and allowed for the default database, `allow` being the value of
    PRODREADY_ALLOW_MIGRATIONS."""
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    # To the leaf nodes: the unapplied migrations only, forwards, in the order `migrate` takes.
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    # The state of the applied migrations, as `migrate` starts from it (the loader's
    # project_state() holds the ancestors of given nodes, not every app's applied ones).
    state = executor._create_project_state(with_applied_migrations=True)  # pylint: disable=protected-access
    allowed = {label.strip() for label in allow.split(",") if label.strip()}
    result = {"pending": [], "unsafe": [], "allowed": []}
    for migration, _backwards in plan:
        label = f"{migration.app_label}.{migration.name}"
        result["pending"].append(label)
        key = "allowed" if "all" in allowed or label in allowed else "unsafe"
        for found in inspect(migration.app_label, migration.operations, state):
            result[key].append({"migration": label, **found})
    return result


def main():
    result = report(os.environ.get("PRODREADY_ALLOW_MIGRATIONS", ""))
    print(PREFIX + json.dumps(result, separators=(",", ":")), flush=True)
