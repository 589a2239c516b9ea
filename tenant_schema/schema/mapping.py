"""Dataclasses (and existing tables) turned into Django model classes.

A plain annotated class is made a dataclass first (``make_dataclass_in_place``),
and every field name is checked against what a Django model already has
(``field_name_problem``): a field becomes a model attribute, so one called
``save`` or ``objects`` would break every write.

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
import functools
import hashlib
import inspect
import re
import threading
import types
import typing
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import models

from .. import dialects, django_private
from ..names import validate_identifier
from ..plugins import get_plugins

if TYPE_CHECKING:  # pragma: no cover
    from ..databases import TenantDatabase
    from ..dialects import Dialect

APP_LABEL = "tenant_schema_tables"
# An app config for the label, so ``get_models()`` sees the dynamic models and
# Django finds reverse foreign keys (delete cascades) between them.
dynamic_apps = django_private.isolated_apps(APP_LABEL)
_models_lock = threading.Lock()

#: Metadata keys understood in ``dataclasses.field(metadata=...)``.
METADATA_KEYS = frozenset(
    {"max_length", "unique", "index", "db_column", "references", "on_delete", "max_digits", "decimal_places"}
)
#: Length of ``str`` primary keys and unique columns declared without ``max_length``
#: (the default of ``Dialect.key_field_for``).
KEY_TEXT_LENGTH = dialects.KEY_TEXT_LENGTH
ON_DELETE = {
    "cascade": models.CASCADE,
    "protect": models.PROTECT,
    "set_null": models.SET_NULL,
    "restrict": models.RESTRICT,
}


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


# -- plain classes --------------------------------------------------------------

_dataclass_lock = threading.Lock()
ROW_TYPES = "a dataclass, a plain class with annotated fields, or a Django model class"


def make_dataclass_in_place(cls: Any) -> Callable[[], None] | None:
    """Make a plain annotated class a dataclass, exactly as ``@dataclass`` would.

    ``dataclasses.dataclass(cls)`` changes ``cls`` itself (it adds
    ``__init__``, ``__repr__``, ``__eq__`` and the field list), so the
    caller's own name for the class builds rows afterwards. Returns a
    function that undoes the change (for a registration refused before any
    SQL), or ``None`` when there was nothing to change: a dataclass, a plain
    subclass of one that declares no fields of its own, a Django model.
    A ``TypeError`` says why a class cannot be a row type; when
    ``@dataclass`` itself refuses the class, the class is left as it was.
    """
    if not isinstance(cls, type):
        raise TypeError(f"{cls!r} is not a class: a table is registered from {ROW_TYPES}")
    if issubclass(cls, models.Model):
        return None
    # Under the lock: another thread may be making this very class a dataclass
    # (after which it has an __init__ that is not the user's).
    with _dataclass_lock:
        own = inspect.get_annotations(cls)
        if "__dataclass_fields__" in vars(cls) or (dataclasses.is_dataclass(cls) and not own):
            return None
        name = cls.__qualname__
        for base, kind in ((tuple, "a tuple"), (dict, "a dict"), (enum.Enum, "an Enum")):
            if issubclass(cls, base):
                raise TypeError(
                    f"{name} is {kind} class (NamedTuple, TypedDict and Enum classes are not row "
                    f"types); a table is registered from {ROW_TYPES}"
                )
        if not own:
            raise TypeError(
                f"{name} has no annotated fields: declare each column as a class annotation (id: int, name: str = None)"
            )
        if "__init__" in vars(cls):
            raise TypeError(
                f"{name} defines its own __init__, which making it a dataclass would have to keep; "
                "decorate it with @dataclass yourself (your __init__ must then accept every field "
                "as a keyword argument)"
            )
        before = dict(vars(cls))
        try:
            dataclasses.dataclass(cls)
        except (TypeError, ValueError) as exc:
            _restore_class(cls, before)
            raise TypeError(
                f"{name} is not a dataclass and cannot be made one: {exc} (decorate it with "
                "@dataclass yourself to choose its options, e.g. @dataclass(kw_only=True) for "
                "fields with and without defaults in any order)"
            ) from None

    def undo() -> None:
        with _dataclass_lock:
            _restore_class(cls, before)

    return undo


def _restore_class(cls: type, before: dict[str, Any]) -> None:
    """Put back the class attributes ``before`` (``@dataclass`` only sets and deletes attributes)."""
    for attr in [a for a in vars(cls) if a not in before]:
        delattr(cls, attr)
    for attr, value in before.items():
        if attr not in ("__dict__", "__weakref__") and vars(cls).get(attr, dataclasses.MISSING) is not value:
            setattr(cls, attr, value)


# -- field names ----------------------------------------------------------------


@functools.cache
def model_attributes() -> frozenset[str]:
    """What every Django model instance has besides its fields, read from Django itself.

    ``dir()`` of an instance of a bare model: ``Model``'s methods and
    properties (``save``, ``delete``, ``pk``, ``clean``...), what the model
    metaclass adds to each model (``objects``, ``DoesNotExist``,
    ``MultipleObjectsReturned``, ``_meta``) and what ``__init__`` sets
    (``_state``). The bare model's own primary key, ``id``, is left out:
    ``id`` is a fine field name.
    """
    meta = type("Meta", (), {"app_label": "tenant_schema_probe", "apps": django_private.isolated_apps()})
    probe = type("Probe", (models.Model,), {"__module__": __name__, "Meta": meta})
    own = {n for f in probe._meta.concrete_fields for n in (f.name, f.attname)}
    return frozenset(set(dir(probe())) - own)


@functools.lru_cache(maxsize=4096)
def field_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a model field name, or ``None`` if it can.

    Django's own system check of a field named so (fields.E001-E003: no
    trailing ``_``, no ``__``, not ``pk``), then ``Meta`` (the class a model
    reads its options from), names starting with ``_`` (Django's internals
    live there, and new ones appear between releases), and every attribute
    of a Django model (``model_attributes``).
    """
    probe = models.Field()
    probe.name = name
    errors = probe.check()  # a bare field: only its name can be wrong
    if errors:
        return f"Django refuses it as a field name: {errors[0].msg.rstrip('.')}"
    if name == "Meta":
        return "a Django model class reads its options from Meta"
    if name.startswith("_"):
        return "names starting with '_' are reserved for Django's model internals (_state, _meta, ...)"
    if name in model_attributes():
        return f"{name!r} is an attribute of every Django model (Model.{name}), which the field would replace"
    return None


def check_field_name(owner: str, name: str) -> None:
    """``ValueError`` naming ``owner.name`` and why, if ``name`` cannot be a model field name."""
    problem = field_name_problem(name)
    if problem is not None:
        raise ValueError(_name_error(owner, name, problem))


def _name_error(owner: str, name: str, problem: str) -> str:
    return (
        f"field {owner}.{name}: {problem}; name the field otherwise (the column can keep the name "
        f"{name!r}: field(metadata={{'db_column': {name!r}}}))"
    )


def _added_attributes(name: str, field: models.Field) -> list[str]:
    """Attributes Django adds to a model for ``field`` besides the field itself."""
    added = []
    if field.choices is not None:
        added.append(f"get_{name}_display")
    if isinstance(field, models.DateField) and not field.null:  # DateTimeField too
        added += [f"get_next_by_{name}", f"get_previous_by_{name}"]
    return added


def check_model_fields(owner: str, fields: dict[str, models.Field]) -> None:
    """``ValueError`` for fields of one model that would clash with each other, before any SQL.

    A foreign key ``account`` is kept by Django as the attribute (and by
    default the column) ``account_id``, so a field of that name clashes with
    it; two fields cannot share a column; and Django adds ``get_<f>_display``
    for a field with choices (an Enum) and ``get_next_by_<f>`` /
    ``get_previous_by_<f>`` for a NOT NULL date, which no field may be named.
    """
    taken: dict[str, str] = {}  # attribute -> field that has it
    columns: dict[str, str] = {}
    for name, field in fields.items():
        attname = f"{name}_id" if isinstance(field, models.ForeignKey) else name
        for attr in dict.fromkeys((name, attname)):
            other = taken.setdefault(attr, name)
            if other != name:
                fk, plain = (other, name) if attr == f"{other}_id" else (name, other)
                raise ValueError(
                    f"field {owner}.{plain} clashes with {owner}.{fk}, a foreign key Django keeps "
                    f"as {fk}_id (its attribute, and its column unless db_column says otherwise); "
                    "rename one of them"
                )
        column = field.db_column or attname
        other = columns.setdefault(column, name)
        if other != name:
            raise ValueError(f"fields {owner}.{other} and {owner}.{name} both have column {column!r}")
    for name, field in fields.items():
        for attr in _added_attributes(name, field):
            if attr in fields:
                raise ValueError(_name_error(owner, attr, f"Django adds {attr} to the model for field {name}"))


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


def plan_dataclass(cls: type, pk: str, dialect: Dialect, known_tables: dict[type, str]) -> list[ColumnPlan]:
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
        raise ValueError(
            f"dataclass {cls.__name__} has no field {pk!r} to use as primary key; "
            f"fields are: {', '.join(sorted(names))}"
        )
    plans = []
    for f in dataclasses.fields(cls):
        validate_identifier(f.name, f"column name (field of {cls.__name__})", dialect.max_identifier_length)
        check_field_name(cls.__name__, f.name)
        metadata = dict(f.metadata)
        unknown = set(metadata) - METADATA_KEYS
        if unknown:
            raise TypeError(
                f"field {cls.__name__}.{f.name}: unknown metadata {sorted(unknown)}; allowed: {sorted(METADATA_KEYS)}"
            )
        if "db_column" in metadata:
            validate_identifier(
                metadata["db_column"],
                f"column name (db_column of {cls.__name__}.{f.name})",
                dialect.max_identifier_length,
            )
        annotation, null = unwrap_optional(hints[f.name])
        null = null or f.default is None  # ``category: str = None`` is a nullable column
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
        if field is not None and (f.name == pk or metadata.get("unique")):
            field = dialect.key_field_for(field)  # TEXT keys become VARCHAR(255)
        plan = ColumnPlan(
            f.name,
            field,
            references=references,
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
        django_private.set_unique(field)
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
        existing = django_private.registered_model(dynamic_apps, APP_LABEL, model_name)
        if existing is not None:
            return existing
        django_private.order_fields(fields.values())  # columns in declaration order, whenever each field was made
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
    from ..exceptions import TenantSchemaError

    connection = tenant_db.connection
    with connection.cursor() as cursor:
        introspection = connection.introspection
        if table_name not in introspection.table_names(cursor):
            raise TenantSchemaError(f"tenant {tenant_db.slug!r} has no table {table_name!r}")
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
    added = {a for name, f in fields.items() for a in _added_attributes(name, f)}
    # A column called get_next_by_<a date column>: in table order still.
    fields = {(_attr_name(n, safe=False) if n in added else n): f for n, f in fields.items()}
    if pk_column is None:
        raise TenantSchemaError(f"table {table_name!r} has no primary key; tenant-schema needs one")
    key = fingerprint(tenant_db.dialect.name, table_name, tuple((n, describe(f)) for n, f in fields.items()))
    return build_model(table_name, fields, "i" + key)


def _attr_name(column: str, safe: bool = True) -> str:
    """The model attribute for an existing column: its name, unless that cannot be a field name.

    A column called ``save``, ``objects``, ``pk``, ``a__b`` or ``first name``
    gets ``col_<hash>`` instead; rows, keys and messages still use the
    column's own name.
    """
    if safe and column.isidentifier() and field_name_problem(column) is None:
        return column
    return f"col_{hashlib.sha1(column.encode()).hexdigest()[:8]}"
