"""Table specs to Django models: what ``register_table(s)`` builds before any SQL.

A spec (a dataclass, a plain annotated class or a Django model, with its
table name and primary key) is normalised and validated, then turned into a
model class through the annotation mapping (``mapping``), sharing models
across tenants by fingerprint; foreign keys decide the creation order.
"""

from __future__ import annotations

import dataclasses
import graphlib
from collections.abc import Callable, Iterable
from typing import Any

from django.db import models

from ..databases import TenantDatabase
from ..names import validate_identifier
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


def normalize_specs(tenant_db: TenantDatabase, specs: Iterable[Any]) -> list[_TableSpec]:
    """Specs as ``_TableSpec``; plain classes made dataclasses (undone if a spec is refused)."""
    undos: list[Callable[[], None]] = []
    try:
        return normalize_into(tenant_db, specs, undos)
    except BaseException:
        for undo in reversed(undos):
            undo()
        raise


def undo_dataclasses(specs: list[_TableSpec]) -> None:
    """Put back plain classes these specs made dataclasses: the call was refused before any SQL."""
    for spec in reversed(specs):
        if spec.undo is not None:
            spec.undo()
            spec.undo = None


def normalize_into(
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


def build_models(tenant_db: TenantDatabase, specs: list[_TableSpec]) -> dict[str, type[models.Model]]:
    """Model classes for each spec; foreign keys point at models of this batch or registered tables.

    Nothing here runs SQL: if a spec is refused, plain classes this call
    made dataclasses are put back as they were.
    """
    try:
        return make_models(tenant_db, specs)
    except BaseException:
        undo_dataclasses(specs)
        raise


def make_models(tenant_db: TenantDatabase, specs: list[_TableSpec]) -> dict[str, type[models.Model]]:
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
            built[spec.table] = django_model(spec, key)
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


def django_model(spec: _TableSpec, key: str) -> type[models.Model]:
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


def fk_order(specs: list[_TableSpec], built: dict[str, type[models.Model]]) -> list[_TableSpec]:
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
