"""An existing table compared with the model being registered for it.

Columns, nullability and the kind of type (text, integer, ...) must agree,
or ``SchemaMismatch`` names each difference; indexes and foreign keys an
interrupted creation left out are added back.
"""

from __future__ import annotations

from django.db import models

from .. import django_private
from ..databases import TenantDatabase
from ..exceptions import SchemaMismatch
from .rows import value_field

TYPE_FAMILIES = {
    "integer": {
        "AutoField",
        "BigAutoField",
        "SmallAutoField",
        "IntegerField",
        "BigIntegerField",
        "SmallIntegerField",
        "PositiveIntegerField",
        "PositiveBigIntegerField",
        "PositiveSmallIntegerField",
        "BooleanField",
    },
    "text": {
        "CharField",
        "TextField",
        "SlugField",
        "EmailField",
        "URLField",
        "UUIDField",
        "JSONField",
        "GenericIPAddressField",
        "IPAddressField",
        "FilePathField",
        "FileField",
        "ImageField",
        "BinaryField",
    },
    "float": {"FloatField"},
    "decimal": {"DecimalField"},
    "datetime": {"DateTimeField"},
    "date": {"DateField"},
    "time": {"TimeField"},
    "duration": {"DurationField"},
}
_FAMILY = {name: family for family, names in TYPE_FAMILIES.items() for name in names}


def _introspected_type(connection, row) -> str | None:
    try:
        return connection.introspection.get_field_type(row.type_code, row)
    except (KeyError, TypeError):
        return None


def check_columns(tenant_db: TenantDatabase, model: type[models.Model], table: str) -> None:
    """``SchemaMismatch`` naming every difference between ``model`` and the live table.

    Compares column names, nullability and the kind of type (see
    ``TYPE_FAMILIES``; lengths and precisions are not compared).
    """
    connection = tenant_db.connection
    with connection.cursor() as cursor:
        description = connection.introspection.get_table_description(cursor, table)
    rows = {row.name: row for row in description}
    fields = {f.column: f for f in model._meta.concrete_fields}
    problems = []
    missing = sorted(set(fields) - set(rows))
    extra = sorted(set(rows) - set(fields))
    if missing:
        problems.append(f"missing columns {missing}")
    if extra:
        problems.append(f"unexpected columns {extra}")
    for column in sorted(set(rows) & set(fields)):
        field, row = fields[column], rows[column]
        # A generated column's nullability is the engine's (NULL where its expression is).
        if bool(row.null_ok) != bool(field.null) and not field.primary_key and not field.generated:
            problems.append(f"column {column!r} should be {'nullable' if field.null else 'NOT NULL'}")
        target = value_field(field)
        want = _FAMILY.get(target.get_internal_type())
        have = _FAMILY.get(_introspected_type(connection, row) or "")
        if want and have and want != have:
            problems.append(f"column {column!r} holds {have} values, the model wants {want}")
    if problems:
        raise SchemaMismatch(
            f"table {table!r} of tenant {tenant_db.slug!r} exists with different columns: " + "; ".join(problems)
        )


def adopt_existing(tenant_db: TenantDatabase, model: type[models.Model]) -> None:
    """Accept an existing table for ``model``: same columns, and its indexes and keys complete.

    Where DDL cannot roll back, a process killed between ``CREATE TABLE`` and
    the statements Django defers (indexes, foreign keys) leaves a table without
    them; re-registering creates what is missing, by Django's deterministic
    names, instead of accepting the table as it is.
    """
    table = model._meta.db_table
    check_columns(tenant_db, model, table)
    connection = tenant_db.connection
    with connection.cursor() as cursor:
        present = set(connection.introspection.get_constraints(cursor, table))
    with connection.schema_editor(atomic=False, collect_sql=False) as editor:
        wanted = django_private.model_index_statements(editor, model)
        if editor.sql_create_fk and connection.features.supports_foreign_keys:
            wanted += [
                django_private.foreign_key_statement(editor, model, f, "_fk_%(to_table)s_%(to_column)s")
                for f in model._meta.local_fields
                if f.remote_field and f.db_constraint
            ]
        quoted_present = {editor.quote_name(name) for name in present}
        missing = [st for st in wanted if str(st.parts["name"]) not in quoted_present]
        for statement in missing:
            editor.execute(statement)
        editor.deferred_sql.clear()
