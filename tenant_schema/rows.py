"""Rows in and out of a tenant table: keys checked, values converted.

A ``Table`` takes rows as dicts or as instances of its row type and hands
back instances of its row type. Everything here runs before any SQL, so a
key that is not a column is a ``ValueError`` naming it and listing the
valid ones, and never reaches the database.

Keys may be spelled three ways, all meaning the same column: the dataclass
field (or Django field) name, the Django attname, or the database column.
For ``account: Account`` that is ``account`` or ``account_id``.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from django.core.exceptions import FieldDoesNotExist, FieldError
from django.db import models
from django.db.models import F, Q
from django.db.models.fields import AutoFieldMixin

from .mapping import dynamic_apps, unwrap_optional

ORDER_RE = re.compile(
    r"^\s*(?P<minus>-)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:\s+(?P<dir>ASC|DESC))?(?:\s+NULLS\s+(?P<nulls>FIRST|LAST))?\s*$",
    re.IGNORECASE,
)
ORDER_FORMS = '"col", "-col", "col ASC", "col DESC", optionally followed by NULLS FIRST / NULLS LAST'


def is_auto(field: models.Field) -> bool:
    """Whether ``field`` is a key the database generates."""
    return isinstance(field, AutoFieldMixin)


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
        self.required = [
            f for f in self.fields
            if not f.has_default() and not f.null and not (f.primary_key and self.auto_pk)
        ] if self.kind != "model" else []
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
            names.append(f.column if f.name == f.column else f"{f.name} (column {f.column})")
        return ", ".join(names)

    def field_for(self, key: Any, where: str = "") -> models.Field:
        """The field a key names; ``ValueError`` listing the valid keys otherwise.

        ``where`` says which argument the key came from ("where", "order_by").
        """
        field = self.by_key.get(key) if isinstance(key, str) else None
        if field is None:
            context = f" (in {where})" if where else ""
            raise ValueError(f"table {self.table!r} has no column {key!r}{context}; columns are: {self.valid_keys()}")
        return field

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
            return {f: getattr(data, f.attname) for f in self.fields}
        else:
            raise TypeError(f"a {what} of table {self.table!r} is a dict or a {self.type_name()} instance, "
                            f"not {type(data).__name__}")
        values: dict[models.Field, Any] = {}
        for key, value in items:
            field = self.field_for(key)
            if field in values:
                raise ValueError(f"{what} gives column {field.column!r} of table {self.table!r} twice "
                                 f"(as {field.name!r} and {field.column!r})")
            values[field] = self.norm(field, value)
        return values

    def check_required(self, given: Iterable[models.Field], what: str = "row") -> None:
        missing = [f.column for f in self.required if f not in given]
        if missing:
            raise ValueError(f"{what} of table {self.table!r} has no value for required column(s) "
                             f"{', '.join(missing)} (not null, no default)")

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
        """A row from ``{field: value}`` (every field present)."""
        if self.kind == "model":
            return self.model(**{f.attname: values[f] for f in self.fields})
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
        children = [self._check_q(c) if isinstance(c, Q) else self._condition(*c) for c in q.children]
        return Q(*children, _connector=q.connector, _negated=q.negated)

    def _condition(self, key: Any, value: Any) -> tuple[str, Any]:
        if not isinstance(key, str):
            raise ValueError(f"where keys are column names, not {key!r}")
        head, sep, rest = key.partition("__")
        field = self.field_for(head, "where")
        if isinstance(value, (list, tuple, set, frozenset)):  # __in, __range
            value = [self.norm(field, v) for v in value]
        else:
            value = self.norm(field, value)
        return (f"{field.name}{sep}{rest}", value)

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
            raise TypeError(f"order_by is a string like 'name ASC, amount DESC' or a list of them, "
                            f"not {type(order_by).__name__}")
        out = []
        for part in parts:
            match = ORDER_RE.match(part) if isinstance(part, str) else None
            if match is None:
                raise ValueError(f"invalid order_by term {part!r} for table {self.table!r}; use {ORDER_FORMS}")
            field = self.field_for(match["key"], "order_by")
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
