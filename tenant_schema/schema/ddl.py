"""Tables and indexes of a tenant database, created all-or-nothing.

Everything runs through Django's schema editor on the tenant's alias. Where
the dialect can roll DDL back (PostgreSQL, SQLite) a batch runs in one
``schema_editor(atomic=True)``; where it cannot (MySQL/MariaDB, CockroachDB)
each statement commits on its own and a failure undoes what this call
created, newest first, then re-raises the original error.
"""

from __future__ import annotations

import dataclasses
import graphlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from django.db import DatabaseError, models

from .. import django_private
from ..databases import TenantDatabase
from ..dialects import IndexSpec, column_field
from ..exceptions import SchemaMismatch
from ..names import shorten, validate_identifier
from ..ownership import MARKER_TABLE
from ..plugins import get_plugins
from ..registry import accepts_tenant
from .batch import DDLBatch, run_hook_statements
from .mapping import (
    APP_LABEL,
    build_model,
    check_model_fields,
    default_table_name,
    describe,
    fingerprint,
    make_dataclass_in_place,
    pk_field,
    plan_dataclass,
)
from .tables import Table

__all__ = [
    "IndexInfo",
    "create_index",
    "create_indexes",
    "drop_index",
    "drop_table",
    "list_indexes",
    "list_tables",
    "register_table",
    "register_tables",
    "table_exists",
]


class IndexInfo(NamedTuple):
    """An index as ``list_indexes`` reports it."""

    name: str
    columns: tuple[str, ...]
    unique: bool


@dataclasses.dataclass
class _TableSpec:
    source: type
    table: str
    pk: str
    #: Undoes making a plain class a dataclass, if this call did that.
    undo: Callable[[], None] | None = None

    @property
    def is_django_model(self) -> bool:
        return isinstance(self.source, type) and issubclass(self.source, models.Model)


# -- tables -------------------------------------------------------------------


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
    normalized = _normalize_specs(tenant_db, specs)
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

    built = _build_models(tenant_db, todo)
    existing = set(list_tables(tenant_db))
    for spec in todo:
        if spec.table in existing:
            _adopt_existing(tenant_db, built[spec.table])
    to_create = [built[s.table] for s in _fk_order(todo, built) if s.table not in existing]
    if to_create:
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
                _adopt_existing(tenant_db, model)

    with tenant_db._tables_lock:
        for spec in todo:
            row_type = spec.source
            table = Table(tenant_db, built[spec.table], spec.table, row_type=row_type, source=spec.source)
            registered[spec.table] = table
            result[spec.table] = table
    return {spec.table: result[spec.table] for spec in normalized}


def _normalize_specs(tenant_db: TenantDatabase, specs: Iterable[Any]) -> list[_TableSpec]:
    """Specs as ``_TableSpec``; plain classes made dataclasses (undone if a spec is refused)."""
    undos: list[Callable[[], None]] = []
    try:
        return _normalize_into(tenant_db, specs, undos)
    except BaseException:
        for undo in reversed(undos):
            undo()
        raise


def _undo_dataclasses(specs: list[_TableSpec]) -> None:
    """Put back plain classes these specs made dataclasses: the call was refused before any SQL."""
    for spec in reversed(specs):
        if spec.undo is not None:
            spec.undo()
            spec.undo = None


def _normalize_into(
    tenant_db: TenantDatabase, specs: Iterable[Any], undos: list[Callable[[], None]]
) -> list[_TableSpec]:
    limit = tenant_db.dialect.max_identifier_length
    out: list[_TableSpec] = []
    seen: set[str] = set()
    for raw in specs:
        parts = tuple(raw) if isinstance(raw, (tuple, list)) else (raw,)
        if not 1 <= len(parts) <= 3:
            raise ValueError(f"a table spec is (model, table_name=None, pk='id'), got {raw!r}")
        source, table, pk = (*parts, None, None)[:3]
        undo = make_dataclass_in_place(source)  # TypeError for what cannot be a row type
        if undo is not None:
            undos.append(undo)
        if isinstance(source, type) and issubclass(source, models.Model):
            table = source._meta.db_table if table is None else table
            pk = source._meta.pk.attname if pk is None else pk
            if pk not in (source._meta.pk.name, source._meta.pk.attname):
                raise ValueError(f"model {source.__name__}'s primary key is {source._meta.pk.name!r}, not {pk!r}")
        elif dataclasses.is_dataclass(source) and isinstance(source, type):
            table = default_table_name(source) if table is None else table
            pk = "id" if pk is None else pk
        else:
            raise TypeError(f"{source!r} is not a dataclass or a Django model class")
        validate_identifier(table, "table name", limit)
        validate_identifier(pk, "primary key column", limit)
        if table in seen:
            raise ValueError(f"table {table!r} appears twice in one register_tables call")
        seen.add(table)
        out.append(_TableSpec(source, table, pk, undo=undo))
    return out


def _build_models(tenant_db: TenantDatabase, specs: list[_TableSpec]) -> dict[str, type[models.Model]]:
    """Model classes for each spec; foreign keys point at models of this batch or registered tables.

    Nothing here runs SQL: if a spec is refused, plain classes this call
    made dataclasses are put back as they were.
    """
    try:
        return _make_models(tenant_db, specs)
    except BaseException:
        _undo_dataclasses(specs)
        raise


def _make_models(tenant_db: TenantDatabase, specs: list[_TableSpec]) -> dict[str, type[models.Model]]:
    dialect = tenant_db.dialect
    registered = tenant_db.tables
    known = {s.source: s.table for s in specs if not s.is_django_model}
    for name, table in registered.items():
        if isinstance(table.source, type) and table.source not in known:
            known[table.source] = name
    batch_tables = {s.table for s in specs}
    plans = {s.table: plan_dataclass(s.source, s.pk, dialect, known) for s in specs if not s.is_django_model}

    # One key for the whole batch: identical batches share model classes.
    shape = []
    for spec in specs:
        if spec.is_django_model:
            shape.append((spec.table, "django", spec.source._meta.label, spec.source._meta.db_table))
            continue
        cols = []
        for plan in plans[spec.table]:
            if plan.references is not None:
                target = plan.references
                outside = registered.get(target)
                cols.append(
                    (
                        plan.name,
                        "fk",
                        target,
                        plan.null,
                        outside.model._meta.label if outside else None,
                        tuple(sorted(plan.dc_field.metadata.items())),
                    )
                )
            else:
                cols.append((plan.name, describe(plan.field)))
        shape.append((spec.table, spec.pk, tuple(cols)))
    key = fingerprint(dialect.name, tuple(shape))

    built: dict[str, type[models.Model]] = {}
    planned: dict[str, dict[str, models.Field]] = {}
    for spec in specs:
        if spec.is_django_model:
            built[spec.table] = _django_model(spec, key)
            continue
        fields: dict[str, models.Field] = {}
        for plan in plans[spec.table]:
            if plan.references is None:
                fields[plan.name] = pk_field(plan) if plan.name == spec.pk else plan.field
                continue
            target = plan.references
            if target in batch_tables:
                to: Any = f"{APP_LABEL}.T{key}_{target}"
            elif target in registered:
                to = registered[target].model
            else:
                raise ValueError(
                    f"field {spec.source.__name__}.{plan.name} references table {target!r}, which is neither "
                    "in this call nor registered for this tenant"
                )
            metadata = plan.dc_field.metadata
            on_delete = metadata.get("on_delete", "set_null" if plan.null else "cascade")
            from .mapping import ON_DELETE

            if on_delete not in ON_DELETE:
                raise ValueError(
                    f"field {spec.source.__name__}.{plan.name}: on_delete must be one of {sorted(ON_DELETE)}"
                )
            column = metadata.get("db_column") or (plan.name if metadata.get("references") else f"{plan.name}_id")
            fields[plan.name] = models.ForeignKey(
                to,
                on_delete=ON_DELETE[on_delete],
                null=plan.null,
                blank=plan.null,
                db_column=column,
                related_name="+",
                unique=bool(metadata.get("unique")),
                primary_key=plan.name == spec.pk,
            )
        planned[spec.table] = fields
    for spec in specs:  # every spec is checked before any model of the batch is built
        if spec.table in planned:
            check_model_fields(spec.source.__name__, planned[spec.table])
    for table, fields in planned.items():
        built[table] = build_model(table, fields, key)
    limit = dialect.max_identifier_length
    for table, model in built.items():
        for f in model._meta.concrete_fields:
            validate_identifier(f.column, f"column name in table {table!r}", limit)
    return built


def _django_model(spec: _TableSpec, key: str) -> type[models.Model]:
    source = spec.source
    if source._meta.db_table == spec.table:
        return source
    fields = {}
    for f in source._meta.local_concrete_fields:
        if f.is_relation:
            raise TypeError(
                f"{source.__name__}.{f.name} is a relation: register {source.__name__} under its own "
                f"db_table {source._meta.db_table!r} to keep its foreign keys"
            )
        fields[f.name] = f.clone()
    return build_model(spec.table, fields, key)


def _fk_order(specs: list[_TableSpec], built: dict[str, type[models.Model]]) -> list[_TableSpec]:
    """Specs sorted so referenced tables come first; cycles keep their given order."""
    by_table = {s.table: s for s in specs}
    graph: dict[str, set[str]] = {}
    for spec in specs:
        deps = set()
        for f in built[spec.table]._meta.concrete_fields:
            if f.is_relation and f.related_model is not None:
                target = f.related_model._meta.db_table
                if target in by_table and target != spec.table:
                    deps.add(target)
        graph[spec.table] = deps
    sorter = graphlib.TopologicalSorter(graph)
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError:
        # Django defers foreign keys to the end of the schema editor: any order works.
        order = [s.table for s in specs]
    return [by_table[t] for t in order]


#: Django field types that store alike, for comparing a model with an existing
#: table: introspection reports the database's type, which is coarser than the
#: model's (MySQL's JSON is LONGTEXT and its LONGBLOB introspects as text, a
#: UUID is CHAR(32) outside PostgreSQL, a boolean is TINYINT(1) on MySQL).
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


def _check_columns(tenant_db: TenantDatabase, model: type[models.Model], table: str) -> None:
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
        if bool(row.null_ok) != bool(field.null) and not field.primary_key:
            problems.append(f"column {column!r} should be {'nullable' if field.null else 'NOT NULL'}")
        target = field.target_field if field.is_relation else field
        want = _FAMILY.get(target.get_internal_type())
        have = _FAMILY.get(_introspected_type(connection, row) or "")
        if want and have and want != have:
            problems.append(f"column {column!r} holds {have} values, the model wants {want}")
    if problems:
        raise SchemaMismatch(
            f"table {table!r} of tenant {tenant_db.slug!r} exists with different columns: " + "; ".join(problems)
        )


def _adopt_existing(tenant_db: TenantDatabase, model: type[models.Model]) -> None:
    """Accept an existing table for ``model``: same columns, and its indexes and keys complete.

    Where DDL cannot roll back, a process killed between ``CREATE TABLE`` and
    the statements Django defers (indexes, foreign keys) leaves a table without
    them; re-registering creates what is missing, by Django's deterministic
    names, instead of accepting the table as it is.
    """
    table = model._meta.db_table
    _check_columns(tenant_db, model, table)
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
        parts = (*tuple(raw), False, None, None)
        table, columns, unique, name, options = parts[:5]
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
