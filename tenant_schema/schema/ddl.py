"""Tables of a tenant database, created all-or-nothing (indexes: ``indexes``).

Everything runs through Django's schema editor on the tenant's alias. Where
the dialect can roll DDL back (PostgreSQL, SQLite) a batch runs in one
``schema_editor(atomic=True)``; where it cannot (MySQL/MariaDB, CockroachDB)
each statement commits on its own and a failure undoes what this call
created, newest first, then re-raises the original error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import DatabaseError, models

from ..databases import TenantDatabase
from ..names import validate_identifier
from ..ownership import MARKER_TABLE
from ..plugins import get_plugins
from ..registry import accepts_tenant, check_writable
from .batch import DDLBatch, run_hook_statements
from .building import build_models, fk_order, normalize_specs
from .compare import adopt_existing
from .tables import Table

__all__ = ["drop_table", "list_tables", "register_table", "register_tables", "table_exists"]


@accepts_tenant
def register_table(tenant_db: TenantDatabase, model: type, table_name: str | None = None, pk: str = "id") -> Table:
    """Create ``table_name`` from a dataclass or Django model if missing; return its ``Table``.

    A plain class with annotated fields is made a dataclass first, in place,
    as ``@dataclass`` would (see ``mapping.make_dataclass_in_place``).
    Calling it again returns the same ``Table``. If the table exists with
    other columns, ``SchemaMismatch`` names the differences.
    """
    spec = (model, table_name, pk)
    tables = register_tables(tenant_db, [spec])
    return next(iter(tables.values()))


@accepts_tenant
def register_tables(tenant_db: TenantDatabase, specs: Iterable[Any]) -> dict[str, Table]:
    """Create several tables, all or none; ``{name: Table}``.

    Each spec is a model class or a tuple ``(model, table_name=None, pk="id")``.
    Tables are created in foreign-key order; cycles are fine (the constraint
    is added once both tables exist).
    """
    normalized = normalize_specs(tenant_db, specs)
    registered = tenant_db._tables
    result: dict[str, Table] = {}
    todo = []
    for spec in normalized:
        table = registered.get(spec.table)
        if table is not None and table.source is spec.source:
            result[spec.table] = table
        else:
            todo.append(spec)
    if not todo:
        return result

    built = build_models(tenant_db, todo)
    existing = set(list_tables(tenant_db))
    for spec in todo:
        if spec.table in existing:
            adopt_existing(tenant_db, built[spec.table])
    to_create = [built[s.table] for s in fk_order(todo, built) if s.table not in existing]
    if to_create:
        check_writable(tenant_db.slug, tenant_db)  # no new tables in maintenance mode (TenantUnavailable)
        try:
            _create_tables(tenant_db, to_create)
        except DatabaseError:
            # A concurrent caller may have created the same tables first (our
            # CREATE failed, and what this call made is already undone): if
            # they are all there now, check them like any existing table.
            now = set(list_tables(tenant_db))
            if not all(m._meta.db_table in now for m in to_create):
                raise
            for model in to_create:
                adopt_existing(tenant_db, model)

    with tenant_db._tables_lock:
        for spec in todo:
            row_type = spec.source
            table = Table(tenant_db, built[spec.table], spec.table, row_type=row_type, source=spec.source)
            registered[spec.table] = table
            result[spec.table] = table
    return {spec.table: result[spec.table] for spec in normalized}


def _create_tables(tenant_db: TenantDatabase, to_create: list[type[models.Model]]) -> None:
    with DDLBatch(tenant_db) as batch:
        for model in to_create:
            batch.create_table(model)


@accepts_tenant
def table_exists(tenant_db: TenantDatabase, table_name: str) -> bool:
    """Whether ``table_name`` exists in the tenant's database."""
    return table_name in list_tables(tenant_db)


@accepts_tenant
def list_tables(tenant_db: TenantDatabase) -> list[str]:
    """The tenant's table names, sorted, live from the database.

    The ownership marker table (``tenant_schema_owner``) is tenant-schema's
    bookkeeping and is not listed.
    """
    connection = tenant_db.connection
    with connection.cursor() as cursor:
        return sorted(t for t in connection.introspection.table_names(cursor) if t != MARKER_TABLE)


@accepts_tenant
def drop_table(tenant_db: TenantDatabase, table_name: str) -> bool:
    """Drop ``table_name`` (and its indexes); ``False`` if it did not exist.

    The ``tenant_schema_before_drop_table`` hooks run first, in the same
    schema editor.
    """
    validate_identifier(table_name, "table name", tenant_db.dialect.max_identifier_length)
    check_writable(tenant_db.slug, tenant_db)
    if not table_exists(tenant_db, table_name):
        return False
    model = tenant_db.table(table_name).model
    with DDLBatch(tenant_db) as batch:
        run_hook_statements(
            batch.editor,
            get_plugins().hook.tenant_schema_before_drop_table(
                dialect=tenant_db.dialect, schema_editor=batch.editor, model=model, table_name=table_name
            ),
        )
        batch.execute(batch.editor.sql_delete_table % {"table": batch.editor.quote_name(table_name)})
    with tenant_db._tables_lock:
        tenant_db._tables.pop(table_name, None)
    return True


# -- indexes --------------------------------------------------------------------
