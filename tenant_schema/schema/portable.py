"""The ``tenant-schema-export`` format, version 1: a tenant's tables in one ZIP file, for any engine.

``tenant_export`` writes it and ``tenant_import`` reads it
(``lifecycle.exchange``); this module is the format alone and touches no
database. Members:

- ``tables/<table>.jsonl``, one per table: a line per row, ordered by
  primary key, each a JSON array of the row's values in the order of the
  table's ``columns`` in the manifest;
- ``manifest.json``, written last: ``format`` (``FORMAT``) and ``version``
  (``VERSION``), the tenant it came from, the migrations it had applied, and
  per table its member, what defines it, its columns, its row count and its
  checksum (``transfer.Checksum``).

Every value goes through its Django field both ways: ``encoder(field)``
makes it a JSON value (decimals as strings, datetimes, dates and times in
ISO 8601, durations in ISO 8601, bytes in base64, UUIDs in hex, a JSON
field's value in a one-element array (``[null]`` is JSON ``null``),
``None`` as ``null``, never ``""``) and ``decoder(field)``
turns that back with the field's ``to_python``, so a value read on one
engine is written as the same value on another. ``ExportWriter`` writes a
member as batches of rows come (``ZipFile.open(name, "w")``: never a whole
table in memory) and checks that each batch decodes to the rows it was
given; ``ExportReader`` reads and checks the manifest first (a ZIP file's
members can be read in any order) and yields a member's rows in batches,
decoded.
"""

from __future__ import annotations

import base64
import io
import json
import math
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.duration import duration_iso_string

from ..exceptions import InvalidExport
from .transfer import JSON_NULL, Checksum, first_line, value_field

__all__ = [
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "ExportReader",
    "ExportWriter",
    "decoder",
    "describe_columns",
    "encoder",
    "member_name",
]

FORMAT = "tenant-schema-export"
VERSION = 1
MANIFEST = "manifest.json"
#: Keys every manifest has, and every table entry in it.
MANIFEST_KEYS = ("format", "version", "tenant", "migrations", "tables")
TABLE_KEYS = ("name", "member", "defined_by", "columns", "rows", "checksum")


def member_name(table: str) -> str:
    """The member holding ``table``'s rows (table names are identifiers: safe as file names)."""
    return f"tables/{table}.jsonl"


# -- values ----------------------------------------------------------------------------------


def encoder(field: models.Field) -> Callable[[Any], Any]:
    """How the values of ``field`` are written: as a JSON value ``decoder(field)`` turns back into the same value."""
    encode = _encoding(value_field(field))
    return lambda value: None if value is None else encode(value)


def _encoding(field: models.Field) -> Callable[[Any], Any]:
    if isinstance(field, models.JSONField):
        return _json
    if isinstance(field, models.BooleanField):
        return bool
    if isinstance(field, models.IntegerField):  # AutoFields too
        return int
    if isinstance(field, models.FloatField):
        return _number
    if isinstance(field, models.DecimalField):
        return str
    if isinstance(field, models.DurationField):
        return duration_iso_string
    if isinstance(field, (models.DateField, models.TimeField)):  # DateTimeField is a DateField
        return _iso
    if isinstance(field, models.BinaryField):
        return _base64
    if isinstance(field, models.UUIDField):
        return _hex
    return _text


def _json(value: Any) -> list[Any]:
    """A JSON column's value in a one-element array, so JSON ``null`` (``[null]``) is not SQL ``NULL`` (``null``)."""
    return [None if value is JSON_NULL else value]


def _number(value: Any) -> float | str:
    value = float(value)
    return value if math.isfinite(value) else repr(value)  # "nan", "inf", "-inf": JSON has no such numbers


def _iso(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _base64(value: Any) -> str:
    return base64.b64encode(bytes(value)).decode("ascii")


def _hex(value: Any) -> str:
    return value.hex if isinstance(value, uuid.UUID) else uuid.UUID(str(value)).hex


def _text(value: Any) -> str:
    return value if type(value) is str else str(value)


def decoder(field: models.Field) -> Callable[[Any], Any]:
    """How values ``encoder(field)`` wrote are read back: the field's ``to_python`` (``null`` stays ``None``)."""
    field = field.output_field if field.generated else field
    to_python = field.to_python
    if isinstance(field, models.JSONField):
        return lambda value: None if value is None else _unwrap_json(value)
    return lambda value: None if value is None else to_python(value)


def _unwrap_json(value: Any) -> Any:
    if not isinstance(value, list) or len(value) != 1:
        raise ValueError(f"a JSON column's value is null or a one-element array, not {json.dumps(value)[:60]}")
    return JSON_NULL if value[0] is None else value[0]


def decode_line(decoders: list[Callable[[Any], Any]], line: str) -> tuple:
    """One line of a table's member as a row; ``ValueError``/``ValidationError`` saying what is wrong with it."""
    values = json.loads(line)
    if not isinstance(values, list) or len(values) != len(decoders):
        raise ValueError(f"not a JSON array of {len(decoders)} values")
    return tuple([decode(value) for decode, value in zip(decoders, values)])


def describe_columns(fields: list[models.Field]) -> list[dict[str, Any]]:
    """The manifest's ``columns`` of a table: name, Django field type, nullability, key, and size where it has one."""
    out = []
    for field in fields:
        column: dict[str, Any] = {
            "name": field.column,
            "type": field.get_internal_type(),
            "null": field.null,
            "primary_key": field.primary_key,
        }
        if field.is_relation and field.related_model is not None:
            column["references"] = field.related_model._meta.db_table
        for size in ("max_length", "max_digits", "decimal_places"):
            if getattr(field, size, None) is not None:
                column[size] = getattr(field, size)
        out.append(column)
    return out


# -- writing ---------------------------------------------------------------------------------


class ExportWriter:
    """An export being written to ``file`` (binary, open for writing): ``write_table`` per table, then ``close``."""

    def __init__(self, file: IO[bytes]) -> None:
        self.zip = zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED)
        self._dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode

    def write_table(
        self,
        name: str,
        fields: list[models.Field],
        batches: Iterable[list[tuple]],
        on_batch: Callable[[int], None],
    ) -> tuple[Checksum, Checksum]:
        """Write ``name``'s rows (batches of values in the order of ``fields``) to its member, batch by batch.

        Returns two checksums: of the rows as given, and of the rows the
        written lines decode to; they are equal when every value survives
        the encoding.
        """
        encoders = [encoder(f) for f in fields]
        decoders = [decoder(f) for f in fields]
        given, written = Checksum(fields), Checksum(fields)
        with self.zip.open(member_name(name), "w", force_zip64=True) as member:
            for rows in batches:
                lines = [self._dumps([encode(v) for encode, v in zip(encoders, row)]) for row in rows]
                member.write("".join(f"{line}\n" for line in lines).encode())
                given.add(rows)
                written.add(decode_line(decoders, line) for line in lines)
                on_batch(len(rows))
        return given, written

    def close(self, manifest: dict[str, Any]) -> None:
        """Write the manifest, last, and finish the ZIP file."""
        self.zip.writestr(MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        self.zip.close()

    def discard(self) -> None:
        """Stop writing (the caller removes what was written)."""
        try:
            self.zip.close()
        except Exception:  # noqa: BLE001 - a half-written member: the file is thrown away anyway
            pass


# -- reading ---------------------------------------------------------------------------------


def display_name(path_or_file: Any) -> str:
    """How messages name an export: its path, or a file object's name."""
    if isinstance(path_or_file, (str, Path)):
        return str(path_or_file)
    return str(getattr(path_or_file, "name", "") or "the export file")


def _problems(manifest: dict[str, Any]) -> list[str]:
    """What is missing from a manifest, or not of its shape."""
    problems = [f"no {key!r}" for key in MANIFEST_KEYS if key not in manifest]
    problems += [
        f"{key!r} is not an object" for key in ("tenant", "migrations") if not isinstance(manifest.get(key, {}), dict)
    ]
    tables = manifest.get("tables", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        return [*problems, "'tables' is not a list of objects"]
    seen: set[str] = set()
    for table in tables:
        name = table.get("name")
        problems += [f"table {name!r} has no {key!r}" for key in TABLE_KEYS if key not in table]
        if not isinstance(name, str) or name in seen:
            problems.append(f"table name {name!r} is not a string, or appears twice")
        seen.add(str(name))
        columns = table.get("columns", [])
        if not isinstance(columns, list) or not all(isinstance(c, dict) and "name" in c for c in columns):
            problems.append(f"the columns of table {name!r} are not a list of objects with a 'name'")
    return problems


class ExportReader:
    """An export opened for reading (a path or a binary file object); ``InvalidExport`` unless it is one.

    The manifest is read and checked when it is opened (``manifest``);
    ``batches`` reads a table's rows. Use it as a context manager.
    """

    def __init__(self, path_or_file: str | Path | IO[bytes]) -> None:
        self.name = display_name(path_or_file)
        try:
            self.zip = zipfile.ZipFile(path_or_file)
        except FileNotFoundError:
            raise InvalidExport(f"{self.name}: no such file") from None
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise InvalidExport(f"{self.name} is not a ZIP file, so not a {FORMAT} file ({first_line(exc)})") from None
        try:
            self.manifest = self._manifest()
        except BaseException:
            self.zip.close()
            raise
        #: The manifest's tables by name.
        self.tables: dict[str, dict[str, Any]] = {t["name"]: t for t in self.manifest["tables"]}

    def __enter__(self) -> ExportReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.zip.close()

    def _manifest(self) -> dict[str, Any]:
        try:
            manifest = json.loads(self.zip.read(MANIFEST))
        except KeyError:
            raise InvalidExport(f"{self.name} has no {MANIFEST}, so it is not a {FORMAT} file") from None
        except (ValueError, zipfile.BadZipFile, OSError) as exc:
            raise InvalidExport(f"{self.name}: its {MANIFEST} cannot be read ({first_line(exc)})") from None
        found = manifest.get("format") if isinstance(manifest, dict) else None
        if found != FORMAT:
            raise InvalidExport(f"{self.name} is not a {FORMAT} file (its manifest's format is {found!r})")
        if manifest.get("version") != VERSION:
            raise InvalidExport(
                f"{self.name} is {FORMAT} version {manifest.get('version')!r}; this tenant-schema reads version "
                f"{VERSION} only: import it with the tenant-schema release that wrote it, or a later one"
            )
        problems = _problems(manifest)
        if problems:
            raise InvalidExport(f"{self.name}: its manifest is incomplete or malformed: {'; '.join(problems)}")
        return manifest

    def batches(self, table: dict[str, Any], fields: list[models.Field], size: int) -> Iterator[list[tuple]]:
        """The rows of ``table`` (an entry of ``manifest["tables"]``), ``size`` at a time, decoded with ``fields``
        and in their order (matched to the entry's columns by name)."""
        columns = [column["name"] for column in table["columns"]]
        by_column = {f.column: f for f in fields}
        decoders = [decoder(by_column[name]) for name in columns]
        order = [columns.index(f.column) for f in fields]
        reorder = order != list(range(len(columns)))
        member = table["member"]
        batch: list[tuple] = []
        number = 0
        try:
            with self.zip.open(member) as raw:
                for line in io.TextIOWrapper(raw, encoding="utf-8"):
                    number += 1
                    row = decode_line(decoders, line)
                    batch.append(tuple([row[i] for i in order]) if reorder else row)
                    if len(batch) >= size:
                        yield batch
                        batch = []
        except KeyError:
            raise InvalidExport(f"{self.name} has no member {member!r} (table {table['name']!r})") from None
        except ValidationError as exc:
            raise InvalidExport(f"{self.name}: {member}, line {number}: {'; '.join(exc.messages)}") from None
        except (ValueError, TypeError, zipfile.BadZipFile, OSError) as exc:
            raise InvalidExport(f"{self.name}: {member}, line {number}: {first_line(exc)}") from None
        if batch:
            yield batch
