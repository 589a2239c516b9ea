"""Copying a tenant's tables to another database, on any engine, and proving the copy equal.

``tenant_move`` (``lifecycle.move``) moves a tenant with these, and
``tenant_export``/``tenant_import`` (``lifecycle.exchange``) write and read
an export with them. A ``TableCopy`` pairs the model reading a table on the
source with the one writing it on the target (the same Django model, or the
same dataclass built for each dialect), columns matched by name. Rows are
read in keyset batches ordered by primary key (``batches``: never a whole
table in memory) and written by ``copy_tables`` with the bulk path of
``bulk.insert`` (``raw``: values stored as given), one transaction per
batch, wherever they come from (another database, an export); ``check_fits``
names the table, column and row key of a value the target's column cannot
hold before any SQL, and ``unstorable`` singles out the row of a batch the
database refused. ``Checksum`` hashes every row with each value in the form
``canonical`` gives it, the same whatever the engine returned;
``checksum`` reads a table for it, and ``verify_tables`` compares the
target's with what the rows came from. Failures are ``CopyFailed``, which
``failures_as`` raises as the caller's own class. Only Django's ORM,
compiler and ``connection.ops`` (``sql_flush``, ``sequence_reset_sql``,
``integer_field_range``) write SQL here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import decimal
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from django.core.management.color import no_style
from django.db import models, transaction

from ..databases import TenantDatabase
from ..exceptions import CopyFailed, TenantSchemaError
from . import bulk
from .rows import RowCodec, value_field

logger = logging.getLogger(__name__)

__all__ = [
    "JSON_NULL",
    "Checksum",
    "Step",
    "TableCheck",
    "TableCopy",
    "batches",
    "canonical",
    "canonicalizer",
    "check_fits",
    "checksum",
    "copy_groups",
    "copy_tables",
    "depends_on",
    "does_not_fit",
    "failures_as",
    "first_line",
    "flush",
    "reset_sequences",
    "unstorable",
    "value_field",
    "verify_tables",
    "write_batch",
]

_HASH_MOD = 2**256


class _JsonNull:
    """JSON ``null`` in a JSON column, where Django reads both it and SQL ``NULL`` as ``None``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "JSON_NULL"


#: What ``batches`` yields for a JSON column holding JSON ``null``; ``None`` is SQL ``NULL``. Written back
#: as ``Value(None, JSONField())`` (Django's way to store JSON ``null``), canonical ``"null"``.
JSON_NULL = _JsonNull()


@dataclasses.dataclass(frozen=True)
class Step:
    """What a copy reports to its ``progress`` callable: a ``phase``, and for some phases a table and rows.

    ``MoveStep``, ``ExportStep`` and ``ImportStep`` say which phases each sends.
    """

    phase: str
    table: str | None = None
    rows: int = 0
    total: int | None = None


@dataclasses.dataclass(frozen=True)
class TableCheck:
    """One table copied and verified: its rows and checksum, the same on both sides."""

    table: str
    rows: int
    checksum: str

    def as_dict(self) -> dict[str, Any]:
        """The table as the commands' ``--json`` shows it."""
        return {**dataclasses.asdict(self), "verified": True}


@contextlib.contextmanager
def failures_as(error: type[CopyFailed]) -> Iterator[None]:
    """The block's ``CopyFailed`` raised as ``error`` (a subclass: ``MoveFailed``, ``ImportFailed``), message kept."""
    try:
        yield
    except CopyFailed as exc:
        if isinstance(exc, error):
            raise
        raise error(str(exc)) from exc


@dataclasses.dataclass
class TableCopy:
    """One table to copy: the model reading it on the source and the one writing it on the target."""

    name: str
    source: type[models.Model]
    target: type[models.Model]
    depends: set[str]

    def __post_init__(self) -> None:
        src = {f.column: f for f in self.source._meta.local_concrete_fields}
        dst = {f.column: f for f in self.target._meta.local_concrete_fields}
        if set(src) != set(dst):
            raise CopyFailed(
                f"table {self.name!r} has columns {sorted(src)} on the source but {sorted(dst)} on the target"
            )
        columns = sorted(src)
        self.source_fields = [src[c] for c in columns]
        self.target_fields = [dst[c] for c in columns]
        self.pk = self.source._meta.pk.column
        self.pk_index = columns.index(self.pk)
        self.json_indexes = [i for i, f in enumerate(self.target_fields) if isinstance(f, models.JSONField)]
        #: What is written: every column but the ones the target's engine computes (``GeneratedField``),
        #: which are read, and verified, like any other.
        self.write_indexes = [i for i, f in enumerate(self.target_fields) if not f.generated]
        self.write_fields = [self.target_fields[i] for i in self.write_indexes]
        self.codec = RowCodec(self.target, dict)


def depends_on(model: type[models.Model]) -> set[str]:
    """The tables ``model``'s foreign keys point at (its own included)."""
    return {
        f.related_model._meta.db_table
        for f in model._meta.local_concrete_fields
        if f.is_relation and f.related_model is not None
    }


def copy_groups(plan: list[TableCopy], checks_off: bool) -> list[list[TableCopy]]:
    """Tables in foreign-key order, each a group of its own; one group of all of them when a cycle needs it.

    Where the target cannot switch constraint checks off, a table that
    references itself or sits in a cycle of references is only consistent
    once all of them are copied: the whole copy is then one transaction.
    """
    by_name = {t.name: t for t in plan}
    pending = {t.name: (t.depends & set(by_name)) - {t.name} for t in plan}
    done: list[str] = []
    while True:
        ready = sorted(name for name, deps in pending.items() if deps <= set(done))
        if not ready:
            break
        for name in ready:
            done.append(name)
            del pending[name]
    ordered = [by_name[name] for name in [*done, *sorted(pending)]]
    cyclic = bool(pending) or any(t.name in t.depends for t in plan)
    if cyclic and not checks_off:
        return [ordered]
    return [[t] for t in ordered]


def batches(model, alias: str, fields: list[models.Field], size: int) -> Iterator[list[tuple]]:
    """The table's rows in batches of ``size``, ordered by primary key (keyset pagination).

    A JSON column's JSON ``null`` is ``JSON_NULL``, its SQL ``NULL`` ``None``:
    a nullable one is read with ``<column>__isnull`` alongside (true for SQL
    ``NULL`` only); in one that is not nullable, ``None`` is JSON ``null``.
    """
    pk = model._meta.pk.attname
    attnames = [f.attname for f in fields]
    position = attnames.index(pk)
    queryset = model._base_manager.db_manager(alias).order_by(pk)
    json_columns = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
    flags = {
        f"_tenant_schema_sql_null_{i}": models.ExpressionWrapper(
            models.Q(**{f"{attnames[i]}__isnull": True}), output_field=models.BooleanField()
        )
        for i in json_columns
        if fields[i].null
    }
    if flags:
        queryset = queryset.annotate(**flags)
    after = None
    while True:
        page = queryset if after is None else queryset.filter(**{f"{pk}__gt": after})
        rows = list(page.values_list(*attnames, *flags)[:size])
        if not rows:
            return
        if json_columns:
            rows = [_json_nulls(row, fields, json_columns, len(attnames)) for row in rows]
        yield rows
        if len(rows) < size:
            return
        after = rows[-1][position]


def _json_nulls(row: tuple, fields: list[models.Field], json_columns: list[int], width: int) -> tuple:
    """``row`` with its JSON ``null`` values as ``JSON_NULL`` (and without the ``__isnull`` flags after ``width``)."""
    values = list(row[:width])
    flag = width
    for i in json_columns:
        sql_null = bool(row[flag]) if fields[i].null else False
        flag += fields[i].null
        if values[i] is None and not sql_null:
            values[i] = JSON_NULL
    return tuple(values)


def write_batch(table: TableCopy, rows: list[tuple], target_db: TenantDatabase) -> None:
    """Insert one batch on the target, in one transaction; a row it cannot hold is named."""
    connection = target_db.connection
    if table.json_indexes:
        rows = [_storable(row, table.json_indexes) for row in rows]
    every = list(zip(*rows))
    columns = [list(every[i]) for i in table.write_indexes]
    check_fits(table, columns, rows, connection)
    batch = bulk.Batch(list(table.write_fields), columns, list(range(len(rows))), len(table.write_fields))
    try:
        with transaction.atomic(using=target_db.alias):
            bulk.insert(table.codec, connection, batch, raw=True)
    except Exception as exc:
        raise unstorable(table, rows, target_db, exc) from exc


def _storable(row: tuple, json_indexes: list[int]) -> tuple:
    """``row`` with ``JSON_NULL`` as the expression Django stores JSON ``null`` with."""
    if not any(row[i] is JSON_NULL for i in json_indexes):
        return row
    return tuple(models.Value(None, output_field=models.JSONField()) if v is JSON_NULL else v for v in row)


def check_fits(table: TableCopy, columns: list[list[Any]], rows: list[tuple], connection) -> None:
    """``CopyFailed`` naming table, column and row key for a value the target's column cannot hold.

    A column is checked as a whole first (its longest text, its smallest
    and largest integer), value by value only where that finds a problem
    or cannot tell (decimals).
    """
    for field, column in zip(table.write_fields, columns):
        if _column_fits(field, column, connection):
            continue
        for i, value in enumerate(column):
            if value is None:
                continue
            problem = does_not_fit(field, value, connection)
            if problem:
                raise CopyFailed(
                    f"table {table.name!r}, row {table.pk}={rows[i][table.pk_index]!r}, column {field.column!r}: "
                    f"{problem}; the target would not store it as it is"
                )


def _column_fits(field: models.Field, column: list[Any], connection) -> bool:
    """True when every value of ``column`` surely fits ``field`` (checked as a whole); False: check each value."""
    target = field.target_field if field.is_relation else field
    if isinstance(target, models.CharField) and target.max_length:
        texts = [v for v in column if v is not None]
        return all(type(v) is str for v in texts) and max(map(len, texts), default=0) <= target.max_length
    if isinstance(target, models.IntegerField) and not isinstance(target, models.BooleanField):
        numbers = [v for v in column if v is not None]
        if not all(type(v) is int for v in numbers) or not numbers:
            return not numbers
        return does_not_fit(target, min(numbers), connection) is None and (
            does_not_fit(target, max(numbers), connection) is None
        )
    return not isinstance(target, models.DecimalField)


def does_not_fit(field: models.Field, value: Any, connection) -> str | None:
    """Why ``value`` does not fit ``field``'s column on ``connection`` (``None`` when it does)."""
    if field.is_relation:
        field = field.target_field
    if isinstance(field, models.CharField) and field.max_length and isinstance(value, str):
        if len(value) > field.max_length:
            return f"{len(value)} characters, longer than its max_length {field.max_length}"
    elif isinstance(field, models.DecimalField) and isinstance(value, decimal.Decimal) and value.is_finite():
        _sign, digits, exponent = value.normalize().as_tuple()
        places = max(-exponent, 0)
        whole = max(len(digits) + exponent, 0) if value != 0 else 0
        if places > field.decimal_places or whole > field.max_digits - field.decimal_places:
            return (
                f"{value} has more digits than its max_digits={field.max_digits}, "
                f"decimal_places={field.decimal_places} allow"
            )
    elif isinstance(field, models.IntegerField) and isinstance(value, int) and not isinstance(value, bool):
        try:
            low, high = connection.ops.integer_field_range(field.get_internal_type())
        except KeyError:
            return None
        if (low is not None and value < low) or (high is not None and value > high):
            return f"{value} is outside its range [{low}, {high}] on {connection.display_name}"
    return None


def unstorable(table: TableCopy, rows: list[tuple], target_db: TenantDatabase, exc: Exception) -> CopyFailed:
    """The error for a batch the target refused: the first row it refuses alone, and its column when known.

    The column is the one Django's field refuses to prepare, else the one
    a unique index named in the error covers, else the one whose value,
    swapped for ``None`` or for the accepted row's before it, lets the row
    in (each try rolled back).
    """
    connection = target_db.connection
    alias = target_db.alias
    found = None
    try:
        with transaction.atomic(using=alias):
            for i, row in enumerate(rows):
                try:
                    _insert_one(table, row, connection, alias)
                except Exception as error:  # noqa: BLE001 - reported below
                    columns = unique_columns_named(connection, table.name, str(error))
                    found = (row, error, columns or _culprit(table, row, rows[i - 1] if i else None, target_db))
                    break
            transaction.set_rollback(True, using=alias)
    except Exception:
        logger.debug("could not single out the row table %s refused", table.name, exc_info=True)
    if found is None:
        return CopyFailed(f"table {table.name!r}: the target refused a batch of rows: {first_line(exc)}")
    row, error, columns = found
    where = f"table {table.name!r}, row {table.pk}={row[table.pk_index]!r}"
    for field, value in zip(table.write_fields, [row[i] for i in table.write_indexes]):
        try:
            field.get_db_prep_save(value, connection)
        except Exception as bad:  # noqa: BLE001 - it names the column
            return CopyFailed(f"{where}, column {field.column!r}: {first_line(bad)}")
    if columns:
        where += f", column{'s' if len(columns) > 1 else ''} {', '.join(repr(c) for c in columns)}"
    return CopyFailed(f"{where}: {connection.display_name} refuses it: {first_line(error)}")


class _Accepted(Exception):
    """Rolls a probing insert back once the target accepted it."""


def _insert_one(table: TableCopy, row: Sequence[Any], connection, alias: str) -> None:
    one = bulk.Batch(list(table.write_fields), [[row[i]] for i in table.write_indexes], [0], len(table.write_fields))
    with transaction.atomic(using=alias):
        bulk.insert(table.codec, connection, one, raw=True)


def _culprit(table: TableCopy, row: tuple, accepted: tuple | None, target_db: TenantDatabase) -> list[str]:
    """The column whose value alone keeps ``row`` out: swapped for ``None`` (where the column allows it) or
    for the value of the ``accepted`` row, the row gets in. Every try is rolled back."""
    for index in table.write_indexes:
        field = table.target_fields[index]
        if index == table.pk_index:
            continue
        swaps = ([None] if field.null else []) + ([accepted[index]] if accepted is not None else [])
        for value in swaps:
            if value is row[index]:
                continue
            probe = list(row)
            probe[index] = value
            try:
                with transaction.atomic(using=target_db.alias):
                    _insert_one(table, probe, target_db.connection, target_db.alias)
                    raise _Accepted
            except _Accepted:
                return [field.column]
            except Exception:  # noqa: BLE001 - refused for another reason: try the next
                continue
    return []


def unique_columns_named(connection, table: str, message: str) -> list[str]:
    """The columns of ``table``'s unique index whose name ``message`` quotes (a duplicate key error names
    it: MySQL's prefix indexes on TEXT refuse values other engines hold apart)."""
    try:
        with connection.cursor() as cursor:
            constraints = connection.introspection.get_constraints(cursor, table)
    except Exception:  # noqa: BLE001 - the message without the columns, then
        return []
    for name, info in constraints.items():
        if info.get("unique") and not info.get("primary_key") and name and name in message:
            return [c for c in info["columns"] if c]
    return []


def reset_sequences(target_db: TenantDatabase, plan: list[TableCopy]) -> None:
    """Generated keys continue after the copied rows (Django's ``sequence_reset_sql``; nothing where they follow)."""
    connection = target_db.connection
    statements = connection.ops.sequence_reset_sql(no_style(), [t.target for t in plan])
    if statements:
        with transaction.atomic(using=target_db.alias), connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)


def carry_key_positions(
    plan: list[TableCopy], target_db: TenantDatabase, position: Callable[[TableCopy], int | None]
) -> None:
    """Each table's generated key continues at ``position(table)`` on the target, where that is further on.

    ``position`` is the source's next key (``Dialect.next_key``), ``None``
    where it has no counter. After ``reset_sequences`` the target's counter
    is past the copied rows; a source whose last rows were deleted is
    further on, and its keys are not handed out again. ``CopyFailed`` naming
    the table when the target cannot follow.
    """
    dialect, connection = target_db.dialect, target_db.connection
    for table in plan:
        wanted = position(table)
        if wanted is None:
            continue
        column = table.target._meta.pk.column
        current = dialect.next_key(connection, table.name, column)
        if current is not None and current >= wanted:
            continue
        if not dialect.set_next_key(connection, table.name, column, wanted):
            continue  # no counter on the target (CockroachDB's unique_rowid())
        reached = dialect.next_key(connection, table.name, column)
        if reached is None or reached < wanted:
            raise CopyFailed(
                f"table {table.name!r}: its next key on the target is {reached}, not {wanted} as on the source"
            )


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def flush(target_db: TenantDatabase, plan: list[TableCopy]) -> None:
    """Empty the target's tables that hold rows (seeded by migration signals, or a copy cut short)."""
    connection = target_db.connection
    alias = target_db.alias
    full = [t.name for t in plan if t.target._base_manager.db_manager(alias).exists()]
    if full:
        statements = connection.ops.sql_flush(no_style(), full, allow_cascade=True)
        connection.ops.execute_sql_flush(statements)


def canonical(field: models.Field, value: Any) -> Any:
    """``value`` of ``field`` in a form every engine agrees on (JSON-serialisable).

    ``None`` stays ``None`` (never ``""``); decimals without trailing zeros,
    datetimes as UTC ISO strings, dates and times ISO, booleans and integers
    as such, JSON dumped with sorted keys, bytes in hex, UUIDs as hex.
    """
    if value is None:
        return None
    if value is JSON_NULL:
        return "null"  # as json.dumps(None): no other JSON value dumps to it, and None stays SQL NULL's
    field = value_field(field)
    if isinstance(field, models.BooleanField):
        return bool(value)
    if isinstance(field, models.JSONField):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return str(value)
        return "0" if value == 0 else format(value.normalize(), "f")
    if isinstance(value, datetime.datetime):
        if value.utcoffset() is not None:
            value = value.astimezone(datetime.UTC)
        return value.isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(field, models.UUIDField):
        return uuid.UUID(str(value)).hex
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return repr(value + 0.0)  # -0.0 is 0.0, as every engine compares it (MySQL and SQLite store it so)
    return str(value)


def canonicalizer(field: models.Field) -> Callable[[Any], Any]:
    """``canonical`` for ``field``, with the field's type looked at once: for the values of a whole column.

    The values each engine returns for the field's own type take a short
    path; anything else goes through ``canonical``, so the result is the
    same as ``canonical(field, value)`` for every value.
    """
    target = value_field(field)

    def slow(value: Any) -> Any:
        return canonical(target, value)

    if isinstance(target, (models.BooleanField, models.JSONField, models.UUIDField)):
        return slow
    if isinstance(target, (models.CharField, models.TextField)):
        return lambda v: v if v is None or type(v) is str else slow(v)
    if isinstance(target, models.IntegerField):
        return lambda v: v if v is None or type(v) is int else slow(v)
    if isinstance(target, models.DecimalField):

        def number(v: Any) -> Any:
            if type(v) is decimal.Decimal and v.is_finite():
                return "0" if v == 0 else format(v.normalize(), "f")
            return slow(v)

        return number
    if isinstance(target, models.DateField) and not isinstance(target, models.DateTimeField):
        return lambda v: v.isoformat() if type(v) is datetime.date else slow(v)
    return slow


class Checksum:
    """Rows and checksum of a table, fed batch by batch: each row's canonical values hashed, the hashes added up.

    Adding the hashes makes the sum independent of the order of the rows,
    so engines that sort keys differently (text collations) agree. A row is
    hashed as the ``repr`` of its canonical values (``None``, booleans,
    integers and strings only: the same text on every platform). ``fields``
    are the table's fields in the order of the rows' values.
    """

    def __init__(self, fields: list[models.Field]) -> None:
        self.convert = [canonicalizer(f) for f in fields]
        self.rows = 0
        self._total = 0

    def add(self, rows: Iterable[tuple]) -> None:
        convert, total, count, sha256 = self.convert, self._total, 0, hashlib.sha256
        for row in rows:
            data = repr(tuple([c(v) for c, v in zip(convert, row)]))
            total += int.from_bytes(sha256(data.encode()).digest(), "big")
            count += 1
        self._total = total % _HASH_MOD
        self.rows += count

    @property
    def digest(self) -> str:
        return f"{self._total:064x}"


def checksum(model, alias: str, fields: list[models.Field], size: int, beat: Callable[[], None]) -> tuple[int, str]:
    """Rows and checksum (``Checksum``) of a table, read in batches in primary-key order."""
    summed = Checksum(fields)
    for rows in batches(model, alias, fields, size):
        summed.add(rows)
        beat()
    return summed.rows, summed.digest


# -- copying and verifying a whole plan ----------------------------------------------------


def copy_tables(
    plan: list[TableCopy],
    target_db: TenantDatabase,
    read: Callable[[TableCopy], Iterator[list[tuple]]],
    on_rows: Callable[[TableCopy, int], None],
) -> None:
    """Write every table's rows on the target, in batches as ``read(table)`` yields them; then reset sequences.

    Each batch's values are in the order of ``table.target_fields``.
    Constraint checks are off during the copy where the target can switch
    them off (MySQL/MariaDB, SQLite) and checked after it; elsewhere tables
    that reference themselves or each other in a cycle make the whole copy
    one transaction (``copy_groups``). ``on_rows(table, n)`` is called when
    a table starts (``n`` = 0) and after each batch.
    """
    connection = target_db.connection
    checks_off = connection.disable_constraint_checking()
    try:
        for group in copy_groups(plan, checks_off):
            with transaction.atomic(using=target_db.alias) if len(group) > 1 else contextlib.nullcontext():
                for table in group:
                    _copy_table(table, read, target_db, on_rows)
    finally:
        if checks_off:
            connection.enable_constraint_checking()
    if checks_off:
        try:
            connection.check_constraints(table_names=[t.name for t in plan])
        except Exception as exc:
            raise CopyFailed(f"the copy breaks a foreign key on the target: {first_line(exc)}") from exc
    reset_sequences(target_db, plan)


def _copy_table(
    table: TableCopy,
    read: Callable[[TableCopy], Iterator[list[tuple]]],
    target_db: TenantDatabase,
    on_rows: Callable[[TableCopy, int], None],
) -> int:
    """Copy one table, batch by batch; how many rows."""
    copied = 0
    on_rows(table, 0)
    pages = read(table)
    while True:
        try:
            rows = next(pages, None)
        except TenantSchemaError:
            raise  # it says what is wrong (a malformed row of an export)
        except Exception as exc:
            raise CopyFailed(
                f"table {table.name!r}: reading the source failed after {copied} rows: {first_line(exc)}"
            ) from exc
        if rows is None:
            return copied
        write_batch(table, rows, target_db)
        copied += len(rows)
        on_rows(table, len(rows))


def verify_tables(
    plan: list[TableCopy],
    target_db: TenantDatabase,
    expected: Callable[[TableCopy], tuple[int, str]],
    *,
    batch_size: int,
    beat: Callable[[], None],
    on_verified: Callable[[TableCheck], None],
    source: tuple[str, str] = ("on the source", "source"),
) -> tuple[list[TableCheck], list[str]]:
    """Each table's rows and checksum read again from the target and compared with ``expected(table)``.

    The tables that agree (``TableCheck``), and a line for each that does
    not; ``source`` is how those lines name where the rows came from
    (``"4 rows on the source, 5 on the target"``, ``"checksums differ
    (source ..., target ...)"``).
    """
    where, label = source
    checks, differ = [], []
    for table in plan:
        rows, digest = expected(table)
        copied, copied_digest = checksum(table.target, target_db.alias, table.target_fields, batch_size, beat)
        if rows != copied:
            differ.append(f"{table.name!r}: {rows} rows {where}, {copied} on the target")
        elif digest != copied_digest:
            differ.append(f"{table.name!r}: checksums differ ({label} {digest[:12]}, target {copied_digest[:12]})")
        else:
            checks.append(TableCheck(table.name, rows, digest))
            on_verified(checks[-1])
    return checks, differ
