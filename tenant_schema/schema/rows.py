"""Rows in and out of a tenant table: keys checked, values converted.

A ``Table`` takes rows as dicts or as instances of its row type and hands
back instances of its row type. Everything here runs before any SQL, so a
key that is not a column is a ``ValueError`` naming it and listing the
valid ones, and never reaches the database.

Keys may be spelled three ways, all meaning the same column: the dataclass
field (or Django field) name, the Django attname, or the database column.
For ``account: Account`` that is ``account`` or ``account_id``.

A ``where`` key is ``column`` or ``column__lookup``, with a lookup from
``LOOKUPS`` that the column's field supports; a date or time column also
takes a part (``booked_on__year``, ``booked_on__month__gte``). Nothing else
after the column: a key never follows a foreign key into another table
(``account__name``), and neither does an ``F()`` in a value or an
``order_by`` term. ``pk`` names the primary key, unless a column is called
``pk``.

A ``None`` for a NOT NULL column is refused here too, on every write path,
except for a key the database generates (``None`` there means "generate it").
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import re
import typing
from collections.abc import Iterable, Mapping
from itertools import repeat
from typing import Any

from django.core.exceptions import FieldDoesNotExist, FieldError
from django.db import models
from django.db.models import F, Q

from .. import django_private
from .mapping import dynamic_apps, unwrap_optional

ORDER_RE = re.compile(
    r"^\s*(?P<minus>-)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:\s+(?P<dir>ASC|DESC))?(?:\s+NULLS\s+(?P<nulls>FIRST|LAST))?\s*$",
    re.IGNORECASE,
)
ORDER_FORMS = '"col", "-col", "col ASC", "col DESC", optionally followed by NULLS FIRST / NULLS LAST'

#: Lookups a ``where`` key may end with (when the column's field supports them).
LOOKUPS = (
    "exact",
    "iexact",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "contains",
    "icontains",
    "startswith",
    "istartswith",
    "endswith",
    "iendswith",
    "range",
    "isnull",
)
#: Parts of a date, datetime or time column a key may take (those its field supports) ...
DATE_PARTS = (
    "year",
    "iso_year",
    "quarter",
    "month",
    "week",
    "week_day",
    "iso_week_day",
    "day",
    "hour",
    "minute",
    "second",
    "date",
    "time",
)
#: ... then optionally one of these.
PART_LOOKUPS = ("exact", "gt", "gte", "lt", "lte", "in", "range")
WHERE_FORMS = (
    "a key is column or column__lookup (column__part or column__part__lookup for a date or time "
    "column), and cannot follow a foreign key into another table's columns: query that table"
)


def is_auto(field: models.Field) -> bool:
    """Whether ``field`` is a key the database generates."""
    return django_private.is_auto_field(field)


def lookups_of(field: models.Field) -> list[str]:
    """The ``LOOKUPS`` Django registers for ``field`` (a foreign key has no text lookups)."""
    return [name for name in LOOKUPS if field.get_lookup(name) is not None]


def parts_of(field: models.Field) -> list[str]:
    """The ``DATE_PARTS`` of a date, datetime or time column; none for other columns."""
    if not isinstance(field, (models.DateField, models.TimeField)):  # DateTimeField is a DateField
        return []
    return [name for name in DATE_PARTS if field.get_transform(name) is not None]


def _saved_as_given(field: models.Field) -> bool:
    """Whether saving stores the attribute as it is (no ``auto_now``, no custom ``pre_save``)."""
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return False
    return type(field).pre_save in (
        models.Field.pre_save,
        models.DateField.pre_save,
        models.DateTimeField.pre_save,
        models.TimeField.pre_save,
    )


def value_field(field: models.Field) -> models.Field:
    """The field whose type a column's values have: a foreign key's target, a generated column's output field."""
    if field.is_relation:
        field = field.target_field
    return field.output_field if field.generated else field


class RowCodec:
    """Key checking and row conversion for one model and its row type.

    ``kind`` is ``"dataclass"``, ``"model"`` (rows are model instances) or
    ``"dict"`` (rows are dicts keyed by column).
    """

    def __init__(self, model: type[models.Model], row_type: Any) -> None:
        self.model = model
        self.row_type = row_type
        self.table = model._meta.db_table
        self.fields: list[models.Field] = list(model._meta.concrete_fields)
        #: The fields a write sets: all but those the database computes (``GeneratedField``).
        self.written: list[models.Field] = [f for f in self.fields if not f.generated]
        self.pk: models.Field = model._meta.pk
        self.auto_pk = is_auto(self.pk)
        if isinstance(row_type, type) and issubclass(row_type, models.Model):
            self.kind = "model"
        elif dataclasses.is_dataclass(row_type) and isinstance(row_type, type):
            self.kind = "dataclass"
        else:
            self.kind = "dict"
        # name first, then attname, then column: a name always wins.
        self.by_key: dict[str, models.Field] = {}
        for attr in ("name", "attname", "column"):
            for f in self.fields:
                self.by_key.setdefault(getattr(f, attr), f)
        self.by_key.setdefault("pk", self.pk)
        #: Columns a row may not set to None (a generated key's None means "generate it").
        self.not_null = {
            f for f in self.fields if not f.null and not (f.primary_key and self.auto_pk) and _saved_as_given(f)
        }
        self.required = (
            [f for f in self.fields if f in self.not_null and (not f.has_default() or f.default is None)]
            if self.kind != "model"
            else []
        )
        if self.kind == "dataclass":
            self._plan_dataclass_output()
        #: Compiled bulk statements (``bulk.py``), by shape.
        self.statements: dict[tuple, Any] = {}
        self.out_attnames = (
            [f.attname for _, f, _ in self.dc_fields] if self.kind == "dataclass" else [f.attname for f in self.fields]
        )

    # -- keys -----------------------------------------------------------
    def valid_keys(self) -> str:
        names = []
        for f in sorted(self.fields, key=lambda f: f.column):
            names.append(f.column if f.name == f.column or self.kind == "dict" else f"{f.name} (column {f.column})")
        return ", ".join(names)

    def label(self, field: models.Field) -> str:
        """How messages name a field: as rows key it (a table opened by name keys rows by column)."""
        return field.column if self.kind == "dict" else field.name

    def field_for(self, key: Any, where: str = "") -> models.Field:
        """The field a key names; ``ValueError`` listing the valid keys otherwise.

        ``where`` says which argument the key came from ("where", "order_by").
        """
        field = self.by_key.get(key) if isinstance(key, str) else None
        if field is None:
            raise self.no_column(key, where)
        return field

    def no_column(self, key: Any, where: str = "") -> ValueError:
        context = f" (in {where})" if where else ""
        return ValueError(f"table {self.table!r} has no column {key!r}{context}; columns are: {self.valid_keys()}")

    # -- values in --------------------------------------------------------
    def norm(self, field: models.Field, value: Any) -> Any:
        """A value as the ORM wants it: Enum members as their value, related rows as their key."""
        if isinstance(value, enum.Enum):
            return value.value
        if field.is_relation:
            if isinstance(value, models.Model):
                return value.pk
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                target = field.related_model._meta.pk
                return getattr(value, target.name, getattr(value, target.attname, None))
        return value

    def to_values(self, data: Any, *, what: str = "row") -> dict[models.Field, Any]:
        """``{field: value}`` for the keys ``data`` gives (a dict, dataclass or model instance)."""
        if isinstance(data, Mapping):
            items: Iterable[tuple[Any, Any]] = data.items()
        elif dataclasses.is_dataclass(data) and not isinstance(data, type):
            items = ((f.name, getattr(data, f.name)) for f in dataclasses.fields(data))
        elif isinstance(data, models.Model) and self.kind == "model" and isinstance(data, self.model):
            return {f: getattr(data, f.attname) for f in self.written}
        else:
            raise TypeError(
                f"a {what} of table {self.table!r} is a dict or a {self.type_name()} instance, "
                f"not {type(data).__name__}"
            )
        values: dict[models.Field, Any] = {}
        for key, value in items:
            field = self.field_for(key)
            if field.generated:
                raise ValueError(
                    f"{what} sets column {field.column!r} of table {self.table!r}, which the database computes "
                    f"(a GeneratedField): leave it out"
                )
            if field in values:
                raise ValueError(
                    f"{what} gives column {field.column!r} of table {self.table!r} twice "
                    f"(as {field.name!r} and {field.column!r})"
                )
            values[field] = self.norm(field, value)
        return values

    def check_nulls(self, values: Mapping[models.Field, Any], what: str = "row") -> None:
        """``ValueError`` if ``values`` (``{field: value}``) gives None for a NOT NULL column."""
        for f, value in values.items():
            if value is None and f in self.not_null:
                raise self._null_error(f, what)

    def check_batch_nulls(self, fields: list[models.Field], columns: list[list[Any]], index: list[int]) -> None:
        """``check_nulls`` for rows collected a column at a time; ``index`` maps rows to input positions."""
        for f, column in zip(fields, columns):
            # By identity, in C: no value's __eq__ runs (half the time of ``None in column``).
            if f in self.not_null and not all(map(operator.is_not, column, repeat(None))):
                first = next(i for i, v in enumerate(column) if v is None)
                raise self._null_error(f, f"row {index[first]}")

    def _null_error(self, field: models.Field, what: str) -> ValueError:
        hint = " (a nullable field is declared Optional[...] or = None)" if self.kind == "dataclass" else ""
        return ValueError(
            f"{what} of table {self.table!r} gives None for {self.label(field)}, but column "
            f"{field.column!r} is NOT NULL{hint}"
        )

    def check_required(self, given: Iterable[models.Field], what: str = "row") -> None:
        missing = [f.column for f in self.required if f not in given]
        if missing:
            raise ValueError(
                f"{what} of table {self.table!r} has no value for required column(s) "
                f"{', '.join(missing)} (not null, no default)"
            )

    def type_name(self) -> str:
        return getattr(self.row_type, "__name__", "dict")

    # -- rows out ---------------------------------------------------------
    def _plan_dataclass_output(self) -> None:
        hints = typing.get_type_hints(self.row_type)
        self.dc_fields: list[tuple[str, models.Field, type[enum.Enum] | None]] = []
        self.dc_late: list[str] = []
        for f in dataclasses.fields(self.row_type):
            try:
                model_field = self.model._meta.get_field(f.name)
            except FieldDoesNotExist:
                continue
            annotation, _ = unwrap_optional(hints.get(f.name))
            enum_type = annotation if isinstance(annotation, type) and issubclass(annotation, enum.Enum) else None
            self.dc_fields.append((f.name, model_field, enum_type))
            if not f.init:
                self.dc_late.append(f.name)
        self.enums = [(i, e) for i, (_, _, e) in enumerate(self.dc_fields) if e is not None]

    def from_values(self, values: tuple) -> Any:
        """A row from values ordered like ``out_attnames``."""
        if self.kind == "dict":
            return dict(zip((f.column for f in self.fields), values))
        if self.enums:
            values = list(values)
            for i, enum_type in self.enums:
                if values[i] is not None:
                    values[i] = enum_type(values[i])
        if not self.dc_late:
            return self.row_type(**dict(zip((n for n, _, _ in self.dc_fields), values)))
        init = {n: v for (n, _, _), v in zip(self.dc_fields, values) if n not in self.dc_late}
        row = self.row_type(**init)
        for (n, _, _), v in zip(self.dc_fields, values):
            if n in self.dc_late:
                object.__setattr__(row, n, v)
        return row

    def from_instance(self, obj: models.Model) -> Any:
        if self.kind == "model":
            return obj
        return self.from_values(tuple(getattr(obj, a) for a in self.out_attnames))

    def from_field_values(self, values: Mapping[models.Field, Any]) -> Any:
        """A row from ``{field: value}`` (every field present, but those the database computes)."""
        if self.kind == "model":  # a computed field is loaded when first read
            return self.model(**{f.attname: values[f] for f in self.written})
        if self.kind == "dict":
            return {f.column: values[f] for f in self.fields}
        return self.from_values(tuple(values[f] for _, f, _ in self.dc_fields))

    # -- where and order_by -------------------------------------------------
    def where_q(self, where: Any) -> Q:
        """A ``Q`` from a dict of (Django-lookup) conditions, or a ``Q`` whose keys are checked."""
        if where is None:
            return Q()
        if isinstance(where, Q):
            return self._check_q(where)
        if not isinstance(where, Mapping):
            raise TypeError(f"where is a dict of column -> value (or a Q object), not {type(where).__name__}")
        return Q(*(self._condition(k, v) for k, v in where.items()))

    def _check_q(self, q: Q) -> Q:
        children = []
        for child in q.children:
            if isinstance(child, Q):
                children.append(self._check_q(child))
            elif isinstance(child, tuple) and len(child) == 2:
                children.append(self._condition(*child))
            else:
                raise ValueError(
                    f"invalid where for table {self.table!r}: a Q in where holds column conditions "
                    f"(Q(amount__gte=10), combined with &, | and ~), not {child!r}"
                )
        return Q(*children, _connector=q.connector, _negated=q.negated)

    def _split_key(self, key: str) -> tuple[models.Field, list[str]]:
        """The column a ``where`` key starts with and the words after it.

        The longest column the key is or starts with (followed by ``__``):
        a column of an existing table may itself hold ``__`` or end with
        ``_`` (``trailing___startswith`` is ``trailing_`` + ``startswith``).
        """
        if key in self.by_key:
            return self.by_key[key], []
        column = max((k for k in self.by_key if key.startswith(f"{k}__")), key=len, default=None)
        if column is None:
            raise self.no_column(key.split("__")[0], "where")
        return self.by_key[column], key[len(column) + 2 :].split("__")

    def _condition(self, key: Any, value: Any) -> tuple[str, Any]:
        """A checked ``(django_lookup, value)`` for one ``where`` condition; see the module docstring."""
        if not isinstance(key, str):
            raise ValueError(f"where keys are column names, not {key!r}")
        field, words = self._split_key(key)
        column = self.label(field)
        lookups, parts = lookups_of(field), parts_of(field)

        def refuse(word: str, subject: str, allowed: list[str] | tuple[str, ...], more: str = "") -> ValueError:
            return ValueError(
                f"invalid where for table {self.table!r}: key {key!r}: {word!r} is not a lookup of {subject}; "
                f"{WHERE_FORMS}. lookups of {subject}: {', '.join(allowed)}{more}"
            )

        if words:
            head, tail = words[0], words[1:]
            if head in parts:
                if tail and tail[0] not in PART_LOOKUPS:
                    raise refuse(tail[0], f"{column}__{head}", PART_LOOKUPS)
            elif head not in lookups:
                more = (
                    f"; parts of column {column}: {', '.join(parts)} (then {', '.join(PART_LOOKUPS)})" if parts else ""
                )
                raise refuse(head, f"column {field.column}", lookups, more)
            if len(tail) > (1 if head in parts else 0):
                extra, after = (tail[1], tail[0]) if head in parts else (tail[0], head)
                raise ValueError(
                    f"invalid where for table {self.table!r}: key {key!r}: {extra!r} after {after!r}: "
                    f"a key takes at most one lookup; {WHERE_FORMS}"
                )
        if isinstance(value, (list, tuple, set, frozenset)):  # __in, __range
            value = [self.norm(field, self._refs(v)) for v in value]
        else:
            value = self.norm(field, self._refs(value))
        return ("__".join((field.name, *words)), value)

    def _refs(self, value: Any) -> Any:
        """``value`` with every ``F()`` in it checked to name a column of this table (and spelled as Django's)."""
        if isinstance(value, F):
            field = self.by_key.get(value.name) if isinstance(value.name, str) else None
            if field is None:
                raise ValueError(
                    f"invalid where for table {self.table!r}: F({value.name!r}) names no column; "
                    "F() in where takes a column of this table, not a lookup or a path through a "
                    f"foreign key; columns are: {self.valid_keys()}"
                )
            return type(value)(field.name)
        sources = getattr(value, "get_source_expressions", None)
        if sources is None or isinstance(value, type):
            return value
        before = sources()
        after = [self._refs(e) for e in before]
        if all(a is b for a, b in zip(before, after)):
            return value
        value = value.copy()
        value.set_source_expressions(after)
        return value

    def filter(self, queryset: models.QuerySet, where: Any) -> models.QuerySet:
        """``queryset`` filtered by ``where``; a bad lookup is a ``ValueError`` (no SQL has run)."""
        q = self.where_q(where)
        if not q:
            return queryset
        try:
            return queryset.filter(q)
        except FieldError as exc:
            raise ValueError(f"invalid where for table {self.table!r}: {exc}") from exc

    def ordering(self, order_by: Any) -> list:
        """Order expressions from ``"a ASC, b DESC"``, ``"-a"`` or a list of those; ``[]`` for none."""
        if order_by is None:
            return []
        if isinstance(order_by, str):
            parts = [p for p in order_by.split(",")]
        elif isinstance(order_by, (list, tuple)):
            parts = [p for item in order_by for p in (item.split(",") if isinstance(item, str) else [item])]
        else:
            raise TypeError(
                f"order_by is a string like 'name ASC, amount DESC' or a list of them, not {type(order_by).__name__}"
            )
        out = []
        for part in parts:
            match = ORDER_RE.match(part) if isinstance(part, str) else None
            if match is None:
                raise ValueError(f"invalid order_by term {part!r} for table {self.table!r}; use {ORDER_FORMS}")
            key = match["key"]
            if key not in self.by_key and any(key.startswith(f"{k}__") for k in self.by_key):
                raise ValueError(
                    f"order_by takes a column, not a lookup or a path through a foreign key: "
                    f"{key!r}; table {self.table!r} has columns: {self.valid_keys()}"
                )
            field = self.field_for(key, "order_by")
            if match["minus"] and match["dir"]:
                raise ValueError(f"order_by term {part!r} has both '-' and {match['dir']!r}; use one")
            descending = bool(match["minus"]) or (match["dir"] or "").upper() == "DESC"
            nulls = (match["nulls"] or "").upper()
            expr = F(field.attname)
            kwargs = {"nulls_first": True} if nulls == "FIRST" else {"nulls_last": True} if nulls == "LAST" else {}
            out.append((field, expr.desc(**kwargs) if descending else expr.asc(**kwargs)))
        return out


def foreign_to_tenant(related_model: type[models.Model], tenant_db) -> bool:
    """Whether a dynamic model is not this tenant's model of its table.

    Tenants that register the same dataclasses share model classes, so a
    reverse foreign key found on a shared model may belong to a table this
    tenant never created.
    """
    opts = related_model._meta
    if opts.apps is not dynamic_apps:
        return False
    table = tenant_db._tables.get(opts.db_table)
    return table is None or table.model is not related_model
