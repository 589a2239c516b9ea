"""Indexes of a tenant's tables: created all-or-nothing in a ``DDLBatch``, listed, dropped."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from django.db import models

from ..databases import TenantDatabase
from ..dialects import IndexSpec, column_field
from ..names import shorten, validate_identifier
from ..plugins import get_plugins
from ..registry import accepts_tenant, check_writable
from .batch import DDLBatch
from .ddl import list_tables

__all__ = ["IndexInfo", "create_index", "create_indexes", "drop_index", "index_name", "list_indexes"]


class IndexInfo(NamedTuple):
    """An index as ``list_indexes`` reports it."""

    name: str
    columns: tuple[str, ...]
    unique: bool


def index_name(table: str, columns: Sequence[str], max_length: int) -> str:
    """``idx_{table}_{cols}``, shortened with a stable hash to ``max_length``."""
    return shorten(f"idx_{table}_{'_'.join(columns)}", max_length)


@accepts_tenant
def create_index(
    tenant_db: TenantDatabase,
    table_name: str,
    columns: str | Sequence[str],
    unique: bool = False,
    index_name: str | None = None,
    **options: Any,
) -> str:
    """Create an index if it does not exist; returns its name.

    ``options`` reach the dialect (``hash_sharded=True`` on CockroachDB).
    """
    return create_indexes(tenant_db, [(table_name, columns, unique, index_name, options)])[0]


@accepts_tenant
def create_indexes(tenant_db: TenantDatabase, specs: Iterable[Any]) -> list[str]:
    """Create several indexes, all or none; returns their names.

    Each spec is ``(table, columns, unique=False, name=None, options={})`` or
    a dict with those keys. An index that already exists with the same
    columns is left alone; one with the same name and other columns is an
    error, raised before any SQL.
    """
    normalized = _normalize_index_specs(tenant_db, specs)
    current: dict[str, dict[str, IndexInfo]] = {}
    todo: list[tuple[type[models.Model], IndexSpec]] = []
    for spec in normalized:
        if spec.table not in current:
            current[spec.table] = {i.name: i for i in list_indexes(tenant_db, spec.table)}
        found = current[spec.table].get(spec.name)
        if found is not None:
            if found.columns != spec.columns or found.unique != spec.unique:
                raise ValueError(
                    f"index {spec.name!r} already exists on {spec.table!r} as "
                    f"{'unique ' if found.unique else ''}{list(found.columns)}, not "
                    f"{'unique ' if spec.unique else ''}{list(spec.columns)}"
                )
            continue
        model = tenant_db.table(spec.table).model
        for column in spec.columns:
            column_field(model, column)  # ValueError naming the valid columns
        todo.append((model, spec))
    if not todo:
        return [s.name for s in normalized]

    check_writable(tenant_db.slug, tenant_db)  # no new indexes in maintenance mode (TenantUnavailable)
    with DDLBatch(tenant_db) as batch:
        for model, spec in todo:
            batch.create_index(model, spec)
    return [s.name for s in normalized]


def _normalize_index_specs(tenant_db: TenantDatabase, specs: Iterable[Any]) -> list[IndexSpec]:
    limit = tenant_db.dialect.max_identifier_length
    out: list[IndexSpec] = []
    names: set[str] = set()
    for raw in specs:
        if isinstance(raw, dict):
            raw = (raw.get("table"), raw.get("columns"), raw.get("unique", False), raw.get("name"), raw.get("options"))
        raw = tuple(raw)
        # What a spec leaves out takes its default: (table, columns, unique=False, name=None, options=None).
        table, columns, unique, name, options = raw[:5] + (None, None, False, None, None)[len(raw) :]
        validate_identifier(table, "table name", limit)
        if isinstance(columns, str):
            columns = [c.strip() for c in columns.split(",")] if "," in columns else [columns]
        columns = tuple(columns or ())
        if not columns:
            raise ValueError(f"an index on {table!r} needs at least one column")
        for column in columns:
            validate_identifier(column, "column name", limit)
        name = index_name(table, columns, limit) if name is None else name
        validate_identifier(name, "index name", limit)
        if name in names:
            raise ValueError(f"index name {name!r} appears twice in one create_indexes call")
        names.add(name)
        options = dict(options or {})
        if options.get("hash_sharded") and not tenant_db.dialect.supports_hash_sharded_indexes:
            options.pop("hash_sharded")  # a performance hint: a plain index where the engine has none
        out.append(IndexSpec(table=table, columns=columns, unique=bool(unique), name=name, options=options))
    return out


@accepts_tenant
def list_indexes(tenant_db: TenantDatabase, table_name: str) -> list[IndexInfo]:
    """Indexes of ``table_name`` (not the primary key or foreign-key constraints), by name."""
    validate_identifier(table_name, "table name", tenant_db.dialect.max_identifier_length)
    connection = tenant_db.connection
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table_name)
    out = []
    for name, info in constraints.items():
        if info.get("primary_key") or info.get("foreign_key") or info.get("check"):
            continue
        if not (info.get("index") or info.get("unique")):
            continue
        out.append(IndexInfo(name, tuple(info["columns"]), bool(info["unique"])))
    return sorted(out)


@accepts_tenant
def drop_index(tenant_db: TenantDatabase, index_name: str, table_name: str | None = None) -> bool:
    """Drop an index; ``False`` if there was none by that name.

    Without ``table_name`` the table is looked up (MySQL needs it for
    ``DROP INDEX ... ON table``).
    """
    limit = tenant_db.dialect.max_identifier_length
    validate_identifier(index_name, "index name", limit)
    check_writable(tenant_db.slug, tenant_db)
    tables = [table_name] if table_name else list_tables(tenant_db)
    connection = tenant_db.connection
    for table in tables:
        validate_identifier(table, "table name", limit)
        with connection.cursor() as cursor:
            info = connection.introspection.get_constraints(cursor, table).get(index_name)
        if info is None or info.get("primary_key"):
            continue
        model = tenant_db.table(table).model
        constraint = bool(info.get("unique") and not info.get("index"))
        plugins = get_plugins()
        dialect = tenant_db.dialect
        with connection.schema_editor(atomic=tenant_db.can_rollback_ddl) as editor:
            editor.execute(
                plugins.hook.tenant_schema_drop_index_sql(
                    dialect=dialect, schema_editor=editor, model=model, name=index_name, constraint=constraint
                )
            )
        return True
    return False
