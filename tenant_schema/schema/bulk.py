"""Bulk inserts, upserts and updates: Django's SQL, compiled once per batch shape.

``QuerySet.bulk_create`` builds a model instance per row, compiles a fresh
INSERT for every batch and runs each field's conversion chain for every
value: at 100,000 rows that is three to six times slower than the driver's
own ``executemany``. Here the statement is still compiled by Django's
``SQLInsertCompiler`` / ``SQLUpdateCompiler`` (so quoting, multi-row
``VALUES`` or PostgreSQL's ``UNNEST``, the dialect's native upsert clause and
``RETURNING`` are Django's), but once per batch size, and values are
converted a column at a time. A value of the field's exact built-in type goes
through the backend's own ``connection.ops.adapt_*`` hook (skipped where that
hook is the identity); anything else goes through ``field.get_db_prep_save``
exactly as in the ORM. ``tests/test_tables.py`` checks the two agree.

Fields whose value depends on more than the row (``auto_now``, custom
``pre_save`` or ``get_placeholder``) take Django's ``bulk_create`` instead.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import operator
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.db import models

from .. import django_private
from .rows import RowCodec

_INTEGER = (
    models.IntegerField,
    models.BigIntegerField,
    models.SmallIntegerField,
    models.PositiveIntegerField,
    models.PositiveBigIntegerField,
    models.PositiveSmallIntegerField,
)
_AUTO = (models.AutoField, models.BigAutoField, models.SmallAutoField)
_IDENTITY = {models.CharField: str, models.TextField: str, models.FloatField: float, models.BooleanField: bool}


def _overridden(ops, name: str) -> bool:
    return django_private.ops_overrides(ops, name)


def _fast_path(field: models.Field, connection) -> tuple[type, Callable | None, Callable | None] | None:
    """``(native type, adapter, check)`` for values of the field's exact built-in type.

    ``adapter`` is what ``get_db_prep_save`` reduces to for such a value
    (``None``: the identity); ``check`` is a condition the value must meet
    for that to hold (a finite Decimal, an aware datetime), else the value
    takes the field's own path.
    """
    ops = connection.ops
    kind = type(field)
    if kind in _IDENTITY:
        return _IDENTITY[kind], None, None
    if kind in _AUTO:
        return int, (ops.validate_autopk_value if _overridden(ops, "validate_autopk_value") else None), None
    if kind in _INTEGER:
        if not _overridden(ops, "adapt_integerfield_value"):
            return int, None, None
        internal = field.get_internal_type()
        return int, lambda v: ops.adapt_integerfield_value(v, internal), None
    if kind is models.DecimalField:
        if not _overridden(ops, "adapt_decimalfield_value"):
            return decimal.Decimal, None, decimal.Decimal.is_finite
        digits, places = field.max_digits, field.decimal_places
        return decimal.Decimal, lambda v: ops.adapt_decimalfield_value(v, digits, places), decimal.Decimal.is_finite
    if kind is models.DateField:
        # The base adapter is str(value) for a date.
        return datetime.date, str if not _overridden(ops, "adapt_datefield_value") else ops.adapt_datefield_value, None
    if kind is models.DateTimeField:
        adapt = str if not _overridden(ops, "adapt_datetimefield_value") else ops.adapt_datetimefield_value
        # A naive datetime under USE_TZ is made aware, with a warning, by the field itself.
        return datetime.datetime, adapt, (lambda v: v.utcoffset() is not None) if settings.USE_TZ else None
    if kind is models.TimeField:
        return datetime.time, ops.adapt_timefield_value, None
    return None


def column_converter(field: models.Field, connection, norm: Callable[[models.Field, Any], Any]):
    """A function turning a list of Python values into what the driver gets.

    The same result as ``field.get_db_prep_save`` on each value (after
    ``norm``: Enum members to values, related rows to keys), without its
    per-value call chain when a column holds only the field's native type.
    """
    target = field.target_field if field.is_relation else field
    prep = field.get_db_prep_save

    def slow(v):
        return prep(norm(field, v), connection)

    spec = _fast_path(target, connection) if (not field.is_relation or type(field) is models.ForeignKey) else None
    if spec is None:
        return lambda column, types=None: [slow(v) for v in column]
    native, adapt, check = spec
    none = type(None)

    def one(v):
        if type(v) is native and (check is None or check(v)):
            return v if adapt is None else adapt(v)
        return None if v is None else slow(v)

    def convert(column: list, types: set[type] | None = None) -> list:
        types = set(map(type, column)) if types is None else types
        if not types <= {native, none}:
            return [one(v) for v in column]
        if none in types:
            if check is not None and not all(check(v) for v in column if v is not None):
                return [one(v) for v in column]
            return column if adapt is None else [None if v is None else adapt(v) for v in column]
        if check is not None and not all(map(check, column)):
            return [one(v) for v in column]
        return column if adapt is None else list(map(adapt, column))

    return convert


def plain_fields(fields: Sequence[models.Field]) -> bool:
    """Whether each field's saved value is its attribute's value (no auto_now, no custom placeholder)."""
    return all(not hasattr(f, "get_placeholder") and saved_as_given(f) for f in fields)


def saved_as_given(f: models.Field) -> bool:
    """Whether saving ``f`` stores its attribute's value (no ``auto_now``, no custom ``pre_save``)."""
    pre_save = type(f).pre_save
    if pre_save is models.Field.pre_save:
        return True
    return (
        isinstance(f, (models.DateField, models.TimeField))
        and pre_save in (models.DateField.pre_save, models.DateTimeField.pre_save, models.TimeField.pre_save)
        and not (f.auto_now or f.auto_now_add)
    )


# -- rows -> columns ------------------------------------------------------------


@dataclasses.dataclass
class Batch:
    """Rows turned into columns: ``columns[i]`` holds every row's value of ``fields[i]``."""

    fields: list[models.Field]
    columns: list[list[Any]]
    index: list[int]  # positions of these rows in the caller's list
    given: int = 0  # fields[:given] came from the rows, the rest are defaults

    @property
    def size(self) -> int:
        return len(self.index)

    def take(self, positions: list[int]) -> Batch:
        return Batch(
            self.fields,
            [[c[i] for i in positions] for c in self.columns],
            [self.index[i] for i in positions],
            self.given,
        )


def _shape(codec: RowCodec, row: Any) -> tuple[list[models.Field], list[Callable[[Any], Any]], type] | None:
    """Fields and one getter per field for rows shaped like ``row``; None when only the slow path fits."""
    if type(row) is dict:
        codec.to_values(row)  # checks every key before anything else
        return [codec.field_for(k) for k in row], [operator.itemgetter(k) for k in row], dict
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        keys = [f.name for f in dataclasses.fields(row)]
        fields = [codec.field_for(k) for k in keys]
        if len(set(fields)) != len(fields):
            return None
        return fields, [operator.attrgetter(k) for k in keys], type(row)
    if codec.kind == "model" and isinstance(row, codec.model):
        return list(codec.written), [operator.attrgetter(f.attname) for f in codec.written], type(row)
    return None


def collect(codec: RowCodec, rows: Sequence[Any], what: str = "row") -> Batch:
    """One ``Batch`` of every row; keys checked, required columns present, defaults filled.

    Rows of one shape (dicts with the same keys, instances of one class) are
    read a column at a time, without a tuple per row.
    """
    n = len(rows)
    shape = _shape(codec, rows[0])
    batch = None
    if shape is not None:
        fields, getters, kind = shape
        same = set(map(type, rows)) == {kind} and (kind is not dict or set(map(len, rows)) == {len(fields)})
        if same:
            try:
                batch = Batch(fields, [list(map(get, rows)) for get in getters], list(range(n)))
            except (KeyError, AttributeError):
                pass
    if batch is None:
        batch = _collect_slow(codec, rows, what)
    batch.given = len(batch.fields)
    _fill_defaults(codec, batch, what)
    return batch


def _collect_slow(codec: RowCodec, rows: Sequence[Any], what: str) -> Batch:
    """Rows of mixed shapes: each checked on its own, missing columns filled with their defaults."""
    per_row = []
    order: dict[models.Field, None] = {}
    for i, row in enumerate(rows):
        values = codec.to_values(row, what=f"{what} {i}")
        per_row.append(values)
        order.update(dict.fromkeys(values))
    columns = []
    for f in order:
        if all(f in values for values in per_row):
            columns.append([values[f] for values in per_row])
            continue
        if f in codec.required:
            i = next(i for i, values in enumerate(per_row) if f not in values)
            codec.check_required(per_row[i], what=f"{what} {i}")
        default = (lambda: None) if f.primary_key and codec.auto_pk else f.get_default
        columns.append([values[f] if f in values else default() for values in per_row])
    return Batch(list(order), columns, list(range(len(rows))))


def _fill_defaults(codec: RowCodec, batch: Batch, what: str) -> None:
    given = set(batch.fields)
    codec.check_required(given, what=what)
    for f in codec.written:
        if f in given or (f.primary_key and codec.auto_pk):
            continue
        if f.has_default() and callable(f.default):
            column = [f.get_default() for _ in range(batch.size)]
        else:
            column = [f.get_default()] * batch.size
        batch.fields.append(f)
        batch.columns.append(column)


def split_generated_keys(codec: RowCodec, batch: Batch) -> list[Batch]:
    """Batches whose auto primary key is all given or all left to the database."""
    if not codec.auto_pk or codec.pk not in batch.fields:
        return [batch]
    i = batch.fields.index(codec.pk)
    keys = batch.columns[i]
    missing = [j for j, v in enumerate(keys) if v is None]
    if not missing:
        return [batch]
    without = Batch(
        batch.fields[:i] + batch.fields[i + 1 :],
        batch.columns[:i] + batch.columns[i + 1 :],
        batch.index,
        batch.given - (i < batch.given),
    )
    if len(missing) == len(keys):
        return [without]
    given = [j for j, v in enumerate(keys) if v is not None]
    return [batch.take(given), without.take(missing)]


def has_expressions(types: list[set[type]]) -> bool:
    """Whether a value is a Django expression (``F("x") + 1``), which only the ORM path compiles."""
    return any(hasattr(t, "resolve_expression") for column_types in types for t in column_types)


# -- INSERT ---------------------------------------------------------------------

#: Values (rows x columns) per multi-row INSERT, under the backend's own limit.
VALUES_PER_STATEMENT = 6_000
#: Rows per INSERT where the backend sends one array per column (PostgreSQL's UNNEST).
ROWS_PER_ARRAY_STATEMENT = 20_000
#: Compiled statements kept per table.
STATEMENT_CACHE_SIZE = 64


@dataclasses.dataclass(frozen=True)
class _Statement:
    sql: str
    columnar: bool  # one array parameter per column (PostgreSQL's UNNEST), not one per value


def _compile_insert(model, connection, fields, rows, sample, conflict) -> _Statement | None:
    """Django's INSERT for ``rows`` rows of ``fields``; None if its shape is not one we can fill."""
    statements = django_private.compile_insert(model, connection, fields, rows, sample, conflict)
    if len(statements) != 1:
        return None
    text, params = statements[0]
    width = len(fields)
    if len(params) == rows * width:
        return _Statement(text, columnar=False)
    if rows > 1 and len(params) == width and all(isinstance(p, list) and len(p) == rows for p in params):
        return _Statement(text, columnar=True)
    return None


def _cached_statement(codec: RowCodec, connection, fields, rows: int, sample, conflict) -> _Statement | None:
    key = (
        connection.vendor,
        tuple(f.attname for f in fields),
        rows,
        conflict.get("on_conflict"),
        *(tuple(f.attname for f in conflict.get(k) or ()) for k in ("update_fields", "unique_fields", "returning")),
    )
    cache = codec.statements
    if key in cache:
        return cache.get(key)
    compiled = _compile_insert(codec.model, connection, fields, rows, sample, conflict)
    if len(cache) >= STATEMENT_CACHE_SIZE:
        cache.clear()
    cache[key] = compiled
    return compiled


def rows_per_statement(connection, fields, total: int, batch_size: int | None, columnar: bool = False) -> int:
    limit = connection.ops.bulk_batch_size(fields, range(total)) or total
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    size = batch_size or (ROWS_PER_ARRAY_STATEMENT if columnar else VALUES_PER_STATEMENT // max(1, len(fields)))
    return max(1, min(size, limit, total))


def insert(
    codec: RowCodec,
    connection,
    batch: Batch,
    *,
    batch_size: int | None = None,
    returning: bool = False,
    raw: bool = False,
    **conflict: Any,
) -> list[Any] | None:
    """INSERT ``batch`` (inside the caller's transaction); with ``returning``, each row's primary key.

    That is the key of the row each input row wrote (an upsert may update a
    row with another key), or ``None`` when the statement used cannot say.

    ``conflict`` holds ``on_conflict``, ``update_fields`` and ``unique_fields``
    as ``InsertQuery`` takes them. ``raw=True`` stores every value as given,
    as Django's raw save (``loaddata``) does: no ``auto_now`` or other
    ``pre_save`` replaces it (copying rows, ``tenant_move``).
    """
    fields, n = batch.fields, batch.size
    if returning:
        conflict["returning"] = [codec.pk]
    value_types = [set(map(type, c)) for c in batch.columns]
    plain = not any(hasattr(f, "get_placeholder") for f in fields) if raw else plain_fields(fields)
    if not fields or not plain or has_expressions(value_types):
        if raw and not returning and not conflict:
            # Django's raw insert, as loaddata's: bulk_create would let auto_now replace values, and
            # refuses a multi-table-inheritance child's table, which a copy writes on its own.
            _insert_raw(codec, connection, batch, batch_size)
            return None
        return _insert_orm(codec, connection, batch, batch_size, returning, conflict)
    sample = types.SimpleNamespace(**{f.attname: codec.norm(f, c[0]) for f, c in zip(fields, batch.columns)})

    def statement(rows: int) -> _Statement | None:
        return _cached_statement(codec, connection, fields, rows, sample, conflict)

    # Where Django sends arrays (UNNEST), the SQL does not grow with the rows: one statement fits all.
    two = statement(2) if n > 1 else None
    arrays = two is not None and two.columnar and statement(3) == two
    size = rows_per_statement(connection, fields, n, batch_size, arrays)
    statements = {k: two if arrays and k > 1 else statement(k) for k in {size, n % size or size}}
    if None in statements.values():
        return _insert_orm(codec, connection, batch, batch_size, returning, conflict)

    columns = [column_converter(f, connection, codec.norm)(c, t) for f, c, t in zip(fields, batch.columns, value_types)]
    width = len(columns)

    def params(start: int, rows: int) -> Any:
        chunk = [c[start : start + rows] for c in columns] if rows != n else columns
        if statements[rows].columnar:
            return chunk
        flat: list[Any] = [None] * (rows * width)  # row-major: every width-th slot is one column
        for j, column in enumerate(chunk):
            flat[j::width] = column
        return flat

    full = n - n % size
    with connection.cursor() as cursor:
        if returning:
            keys: list[Any] = []
            for start in range(0, n, size):
                rows = min(size, n - start)
                cursor.execute(statements[rows].sql, params(start, rows))
                keys.extend(row[0] for row in cursor.fetchall())
            return keys
        # Full batches share one statement: one executemany (SQLite prepares it once).
        if full > size:
            cursor.executemany(statements[size].sql, [params(start, size) for start in range(0, full, size)])
        elif full:
            cursor.execute(statements[size].sql, params(0, size))
        if full < n:
            cursor.execute(statements[n - full].sql, params(full, n - full))
    return None


def _insert_raw(codec, connection, batch, batch_size) -> None:
    """Django's raw INSERT (as ``loaddata`` saves): every value as given, placeholders as the fields want."""
    objs = [
        codec.model(**{f.attname: codec.norm(f, c[i]) for f, c in zip(batch.fields, batch.columns)})
        for i in range(batch.size)
    ]
    fields = list(batch.fields)
    size = max(1, min(batch_size or len(objs), connection.ops.bulk_batch_size(fields, objs) or len(objs)))
    for start in range(0, len(objs), size):
        django_private.raw_insert(codec.model, objs[start : start + size], fields, connection.alias)


def _insert_orm(codec, connection, batch, batch_size, returning, conflict) -> list[Any] | None:
    """Django's own ``bulk_create``, for fields the compiled path does not cover."""
    objs = [
        codec.model(**{f.attname: codec.norm(f, c[i]) for f, c in zip(batch.fields, batch.columns)})
        for i in range(batch.size)
    ]
    kwargs: dict[str, Any] = {}
    if conflict.get("on_conflict") == django_private.on_conflict("UPDATE"):
        kwargs = {
            "update_conflicts": True,
            "update_fields": [f.name for f in conflict["update_fields"]],
            "unique_fields": [f.name for f in conflict.get("unique_fields") or ()] or None,
        }
    elif conflict.get("on_conflict") == django_private.on_conflict("IGNORE"):
        kwargs = {"ignore_conflicts": True}
    codec.model._base_manager.db_manager(connection.alias).bulk_create(objs, batch_size=batch_size, **kwargs)
    if not returning:
        return None
    if kwargs and codec.pk in batch.fields and [f for f in conflict.get("unique_fields") or ()] != [codec.pk]:
        # bulk_create keeps a given key even when the upsert updated a row with another key.
        return None
    return [o.pk for o in objs]


# -- UPDATE ---------------------------------------------------------------------


def update(codec: RowCodec, connection, key: models.Field, rows: list[Mapping[models.Field, Any]]) -> int:
    """UPDATE each row (a ``{field: value}`` holding ``key``) by its key; rows matched.

    Rows setting the same columns share one statement, compiled by Django
    and run with ``executemany``.
    """
    groups: dict[tuple[models.Field, ...], list[Mapping[models.Field, Any]]] = {}
    for values in rows:
        groups.setdefault(tuple(f for f in values if f is not key), []).append(values)
    manager = codec.model._base_manager.db_manager(connection.alias)
    matched = 0
    for fields, group in groups.items():
        if not fields:
            continue
        text = None
        if not any(hasattr(v, "resolve_expression") for values in group for v in values.values()):
            text = _compile_update(manager, connection, key, fields, group[0])
        if text is None:  # expressions, or a statement shape we cannot fill: the ORM, row by row
            for values in group:
                matched += manager.filter(**{key.name: values[key]}).update(
                    **{f.name: v for f, v in values.items() if f is not key}
                )
            continue
        columns = [column_converter(f, connection, codec.norm)([values[f] for values in group]) for f in (*fields, key)]
        with connection.cursor() as cursor:
            cursor.executemany(text, list(zip(*columns)))
            matched += max(cursor.rowcount, 0)
    return matched


def _compile_update(manager, connection, key, fields, sample) -> str | None:
    """Django's ``UPDATE ... SET <fields> WHERE <key> = %s``; None unless its parameters are exactly those."""
    if any(hasattr(f, "get_placeholder") for f in (*fields, key)):
        return None
    text, params = django_private.compile_update(
        manager.filter(**{key.name: sample[key]}), connection, {f.name: sample[f] for f in fields}
    )
    return text if len(params) == len(fields) + 1 else None
