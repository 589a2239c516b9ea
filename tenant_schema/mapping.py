"""Dataclasses (and existing tables) turned into Django model classes.

The tables are created by Django's schema editor from these models, and the
CRUD layer queries through them with the ORM, so every identifier is quoted
by the backend and every value is a bound parameter.

Models live in their own app registry (not Django's), named after a hash of
their definition: tenants that register the same dataclasses share one model
class, so touching 10,000 tenants does not build 10,000 sets of models.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import hashlib
import re
import threading
import types
import typing
import uuid
from typing import TYPE_CHECKING, Any

from django.apps.registry import Apps
from django.db import models
from django.db.migrations.state import AppConfigStub

from .names import validate_identifier
from .plugins import get_plugins

if TYPE_CHECKING:  # pragma: no cover
    from .databases import TenantDatabase
    from .dialects import Dialect

APP_LABEL = "tenant_schema_tables"
# An app config for the label, so ``get_models()`` sees the dynamic models and
# Django finds reverse foreign keys (delete cascades) between them.
dynamic_apps = Apps([AppConfigStub(APP_LABEL)])
_models_lock = threading.Lock()

#: Metadata keys understood in ``dataclasses.field(metadata=...)``.
METADATA_KEYS = frozenset(
    {"max_length", "unique", "index", "db_column", "references", "on_delete", "max_digits", "decimal_places"}
)
#: Length of ``str`` primary keys and unique columns declared without ``max_length``.
KEY_TEXT_LENGTH = 255
ON_DELETE = {"cascade": models.CASCADE, "protect": models.PROTECT, "set_null": models.SET_NULL, "restrict": models.RESTRICT}


@dataclasses.dataclass
class ColumnPlan:
    """One dataclass field planned as a Django field."""

    name: str
    field: models.Field
    references: str | None = None  # target table name, resolved by the caller
    enum: type[enum.Enum] | None = None


def default_table_name(cls: type) -> str:
    """``TransactionLine`` -> ``transaction_line``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


def unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """``Optional[X]`` / ``X | None`` -> (X, True); anything else -> (it, False)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def default_field(annotation: Any, name: str, metadata: dict[str, Any]) -> models.Field | None:
    """The built-in annotation -> field mapping."""
    origin = typing.get_origin(annotation) or annotation
    if annotation is str:
        if "max_length" in metadata:
            return models.CharField(max_length=int(metadata["max_length"]))
        return models.TextField()
    if annotation is bool:
        return models.BooleanField()
    if annotation is int:
        return models.BigIntegerField()
    if annotation is float:
        return models.FloatField()
    if annotation is decimal.Decimal:
        return models.DecimalField(
            max_digits=int(metadata.get("max_digits", 19)), decimal_places=int(metadata.get("decimal_places", 4))
        )
    if annotation is datetime.datetime:
        return models.DateTimeField()
    if annotation is datetime.date:
        return models.DateField()
    if annotation is datetime.time:
        return models.TimeField()
    if annotation is uuid.UUID:
        return models.UUIDField()
    if annotation is bytes:
        return models.BinaryField()
    if origin in (dict, list):
        return models.JSONField()
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = [m.value for m in annotation]
        if all(isinstance(v, str) for v in values):
            return models.CharField(max_length=max(len(v) for v in values), choices=[(v, v) for v in values])
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return models.IntegerField(choices=[(v, v) for v in values])
    return None


def plan_dataclass(
    cls: type, pk: str, dialect: Dialect, known_tables: dict[type, str]
) -> list[ColumnPlan]:
    """Map each field of dataclass ``cls``; ``TypeError`` names a field we cannot map.

    ``known_tables`` maps dataclasses to table names, so a field annotated
    with another registered dataclass becomes a foreign key to its table.
    """
    if not dataclasses.is_dataclass(cls) or not isinstance(cls, type):
        raise TypeError(f"{cls!r} is not a dataclass or a Django model class")
    hints = typing.get_type_hints(cls)
    hook = get_plugins().hook.tenant_schema_field_for_annotation
    names = {f.name for f in dataclasses.fields(cls)}
    if pk not in names:
        raise ValueError(f"dataclass {cls.__name__} has no field {pk!r} to use as primary key; fields are: {', '.join(sorted(names))}")
    plans = []
    for f in dataclasses.fields(cls):
        validate_identifier(f.name, f"column name (field of {cls.__name__})", dialect.max_identifier_length)
        metadata = dict(f.metadata)
        unknown = set(metadata) - METADATA_KEYS
        if unknown:
            raise TypeError(f"field {cls.__name__}.{f.name}: unknown metadata {sorted(unknown)}; allowed: {sorted(METADATA_KEYS)}")
        if "db_column" in metadata:
            validate_identifier(metadata["db_column"], f"column name (db_column of {cls.__name__}.{f.name})",
                                dialect.max_identifier_length)
        annotation, null = unwrap_optional(hints[f.name])
        references = metadata.get("references")
        if isinstance(annotation, type) and annotation in known_tables:
            references = known_tables[annotation]
            annotation = None
        field: models.Field | None
        if references is not None:
            field = None  # built by the caller once the target model exists
        else:
            field = hook(dialect=dialect, annotation=annotation, name=f.name, metadata=metadata)
            if field is None:
                field = default_field(annotation, f.name, metadata)
            if field is None:
                raise TypeError(
                    f"field {cls.__name__}.{f.name}: unsupported annotation {hints[f.name]!r}; supported: "
                    "str, int, float, bool, Decimal, datetime, date, time, UUID, bytes, dict, list, Enum, "
                    "another registered dataclass, and Optional[...] of these"
                )
        if isinstance(field, models.TextField) and (f.name == pk or metadata.get("unique")):
            # Keys need a bounded type (MySQL cannot key a TEXT column without a prefix).
            field = models.CharField(max_length=KEY_TEXT_LENGTH)
        plan = ColumnPlan(
            f.name, field, references=references,
            enum=annotation if isinstance(annotation, type) and issubclass(annotation, enum.Enum) else None,
        )
        if field is not None:
            _apply_common(field, f, metadata, null, is_pk=f.name == pk)
        plan.null = null  # type: ignore[attr-defined]
        plan.dc_field = f  # type: ignore[attr-defined]
        plans.append(plan)
    return plans


def _apply_common(field: models.Field, f: dataclasses.Field, metadata: dict[str, Any], null: bool, is_pk: bool) -> None:
    field.null = null
    field.blank = null
    if metadata.get("db_column"):
        field.db_column = metadata["db_column"]
    if metadata.get("unique"):
        field._unique = True
    if metadata.get("index"):
        field.db_index = True
    if f.default is not dataclasses.MISSING:
        default = f.default
        field.default = default.value if isinstance(default, enum.Enum) else default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        field.default = f.default_factory  # type: ignore[misc]
    if is_pk:
        field.primary_key = True
        field.null = False


def pk_field(plan: ColumnPlan) -> models.Field:
    """The primary key: integers become auto-incrementing keys.

    ``id: int`` and ``id: int | None = None`` (the usual way to write "not
    saved yet" in a dataclass) both mean a generated key.
    """
    field = plan.field
    if isinstance(field, models.BigIntegerField) and field.default in (models.NOT_PROVIDED, None):
        auto = models.BigAutoField(primary_key=True)
        if field.db_column:
            auto.db_column = field.db_column
        return auto
    field.primary_key = True
    return field


def fingerprint(*parts: Any) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


def build_model(table_name: str, fields: dict[str, models.Field], key: str) -> type[models.Model]:
    """A model class for ``table_name`` in the dynamic app registry, shared by ``key``."""
    model_name = f"T{key}_{table_name}"
    with _models_lock:
        existing = dynamic_apps.all_models[APP_LABEL].get(model_name.lower())
        if existing is not None:
            return existing
        for field in fields.values():  # columns in declaration order, whenever each field was made
            field.creation_counter = models.Field.creation_counter
            models.Field.creation_counter += 1
        meta = type("Meta", (), {"app_label": APP_LABEL, "db_table": table_name, "apps": dynamic_apps})
        attrs: dict[str, Any] = {"__module__": __name__, "Meta": meta, **fields}
        return type(model_name, (models.Model,), attrs)


def describe(field: models.Field) -> tuple:
    """A hashable description of a field, for model fingerprints."""
    name, path, args, kwargs = field.deconstruct()
    kwargs.pop("to", None)
    return (path, tuple(args), tuple(sorted((k, repr(v)) for k, v in kwargs.items())))


# -- existing tables ----------------------------------------------------------

def introspect_model(tenant_db: TenantDatabase, table_name: str) -> type[models.Model]:
    """A model for an existing table, read from the database like ``inspectdb``."""
    from .exceptions import TenantSchemaError

    connection = tenant_db.connection
    with connection.cursor() as cursor:
        introspection = connection.introspection
        if table_name not in introspection.table_names(cursor):
            raise TenantSchemaError(f"tenant {tenant_db.tenant_id!r} has no table {table_name!r}")
        description = introspection.get_table_description(cursor, table_name)
        pk_column = introspection.get_primary_key_column(cursor, table_name)
    fields: dict[str, models.Field] = {}
    for row in description:
        field_type = introspection.get_field_type(row.type_code, row)
        kwargs: dict[str, Any] = {"null": bool(row.null_ok), "db_column": row.name}
        if field_type == "CharField":
            kwargs["max_length"] = row.display_size or row.internal_size or 255
            if kwargs["max_length"] < 0:
                kwargs["max_length"] = 255
        if field_type == "DecimalField":
            if row.scale is None:  # SQLite keeps no precision: read without rounding away the fraction
                kwargs["max_digits"], kwargs["decimal_places"] = 28, 10
            else:
                kwargs["max_digits"], kwargs["decimal_places"] = row.precision or 28, row.scale
        field_class = getattr(models, field_type, models.TextField)
        if row.name == pk_column:
            kwargs["primary_key"] = True
            kwargs.pop("null")
            if field_class is models.BigIntegerField or field_type == "IntegerField":
                field_class = models.BigAutoField
            elif field_type in ("AutoField", "BigAutoField", "SmallAutoField"):
                field_class = getattr(models, field_type)
        fields[_attr_name(row.name)] = field_class(**kwargs)
    if pk_column is None:
        raise TenantSchemaError(f"table {table_name!r} has no primary key; tenant-schema needs one")
    key = fingerprint(tenant_db.dialect.name, table_name, tuple((n, describe(f)) for n, f in fields.items()))
    return build_model(table_name, fields, "i" + key)


def _attr_name(column: str) -> str:
    return column if column.isidentifier() and column != "pk" else f"col_{hashlib.sha1(column.encode()).hexdigest()[:8]}"
