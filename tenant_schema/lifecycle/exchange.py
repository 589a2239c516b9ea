"""A tenant to a file and back: ``export_tenant`` (``tenant_export``) and ``import_tenant`` (``tenant_import``).

An export is a ``tenant-schema-export`` file (``schema.portable``: a ZIP of
one JSON Lines member per table and a manifest describing the tenant's
schema), engine-neutral, written while the tenant is served:

1. ``_check_exportable`` and ``move._check_source``, before anything is
   written: a ready (or archived) tenant, at the current migration plan,
   every table accounted for, each run-time table's class importable by
   its dotted path (``_definitions``);
2. ``_write``: in one snapshot of the tenant's database
   (``Dialect.read_snapshot``: one ``REPEATABLE READ`` transaction on
   PostgreSQL and MySQL/MariaDB, one read transaction on SQLite), each
   table's rows in keyset batches, streamed into its member, with its row
   count and checksum (``transfer.Checksum``, as a move computes it); each
   batch is decoded again and must give the same checksum (the table's
   verification); the manifest is written last, into a temporary file
   renamed to the path asked for once complete.

An import builds a new tenant from an export, on any engine, with the
machinery of ``lifecycle.move``:

1. ``_check_import``, before anything is created: the file's format and
   version (``ExportReader``), its migrations against this site's plan
   (``_check_plan``), what defines each table (``_resolve``: a model of the
   tenant apps with the same columns, ``django_migrations``, or a run-time
   table whose class imports), and the slug free;
2. ``_record_import``: a registry row of the reserved shape
   ``import-<hex>``, status ``provisioning``, ``held_by`` this process, on
   the server asked for or the one the placement policy chooses, with a
   fresh ``uid``;
3. ``move._build_target``: the row's database provisioned at the current
   plan as any tenant's (cloned or created, marked, its role, its tables);
   the row becomes ``moving``;
4. ``_prepare``: the run-time tables registered from their classes, their
   columns compared with the export's, rows that migration-signal
   receivers seeded flushed;
5. ``_fill``: every table's rows read from its member in batches, decoded
   through its fields and written with ``transfer.copy_tables`` (the bulk
   path, raw values, foreign keys checked afterwards, sequences reset);
6. ``_verify``: each table's rows and checksum read again from the new
   database must equal the manifest's;
7. ``_publish``: one registry statement renames the row to the tenant's
   slug and makes it ``ready``. Until then nothing serves it.

A failure before ``_publish`` drops the half-written database (its
ownership marker checked: the row's uid and ``import-<hex>`` slug) and
deletes the row. A process killed on the way leaves only its ``import-<hex>``
row (and the database it marked); the next ``import_tenant`` drops them
once that process is gone, as ``drop_abandoned_imports`` (``tenant_import
--cleanup``) does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.metadata
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from django.db import IntegrityError
from django.utils import timezone
from django.utils.module_loading import import_string

from .. import databases, django_private, ownership, placement
from ..databases import TenantDatabase
from ..exceptions import CopyFailed, ImportFailed, NotOurDatabase, TenantSchemaError
from ..migration_plan import migration_plan
from ..models import Tenant
from ..names import IMPORT_SLUG_PREFIX, IMPORT_SLUG_RE
from ..registry import lifecycle_writes, normalize_slug
from ..schema import portable, transfer
from ..schema.ddl import register_tables
from ..schema.transfer import TableCheck
from ..servers import Server
from ..signals import tenant_imported
from .archive import _row
from .build import applied_migrations
from .move import (
    _OPEN,
    DEFAULT_BATCH_SIZE,
    _alive,
    _build_target,
    _check_arguments,
    _check_filled,
    _check_source,
    _drop_filled,
    _free_name,
    _heartbeat,
    _holder,
    _model_tables,
    _notifier,
    _plan,
    _rebind,
    _undo,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ExportResult",
    "ExportStep",
    "ImportResult",
    "ImportStep",
    "drop_abandoned_imports",
    "export_tenant",
    "import_tenant",
]

EXPORTABLE = (Tenant.Status.READY, Tenant.Status.ARCHIVED)


class ExportStep(transfer.Step):
    """What ``export_tenant(progress=...)`` is called with, at each step.

    ``phase`` is ``"export"`` (the snapshot is taken; ``total``: rows to
    write), ``"rows"`` (``rows`` more of ``table`` written, of ``total``),
    ``"verified"`` (``table`` and its ``rows``: written, and read back the
    same) or ``"exported"`` (the file is complete).
    """


class ImportStep(transfer.Step):
    """What ``import_tenant(progress=...)`` is called with, at each step.

    ``phase`` is ``"target"`` (the new database is at the plan), ``"copy"``
    (``total``: rows to write), ``"rows"`` (``rows`` more of ``table``
    written, of ``total``), ``"copied"`` (every table written, nothing
    verified yet), ``"verified"`` (``table`` and its ``rows``) or
    ``"imported"`` (the tenant is ready).
    """


@dataclasses.dataclass
class ExportResult:
    """What ``export_tenant`` wrote."""

    tenant: Tenant
    file: str
    tables: list[TableCheck]
    seconds: float
    #: The file's size in bytes (``None`` for a file object that cannot tell).
    size: int | None

    def as_dict(self) -> dict[str, Any]:
        """The result as ``tenant_export --json`` prints it."""
        return {
            "tenant": self.tenant.slug,
            "uid": self.tenant.uid.hex,
            "file": self.file,
            "format": portable.FORMAT,
            "version": portable.VERSION,
            "tables": [t.as_dict() for t in self.tables],
            "rows": sum(t.rows for t in self.tables),
            "bytes": self.size,
            "seconds": round(self.seconds, 3),
        }


@dataclasses.dataclass
class ImportResult:
    """What ``import_tenant`` made: the new, ready tenant, and the export's ``tenant`` (``source``)."""

    tenant: Tenant
    file: str
    source: dict[str, Any]
    tables: list[TableCheck]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The result as ``tenant_import --json`` prints it."""
        return {
            "tenant": self.tenant.slug,
            "uid": self.tenant.uid.hex,
            "server": self.tenant.server,
            "database": self.tenant.database_name,
            "file": self.file,
            "source": self.source,
            "tables": [t.as_dict() for t in self.tables],
            "rows": sum(t.rows for t in self.tables),
            "seconds": round(self.seconds, 3),
        }


# -- exporting -------------------------------------------------------------------------------


def export_tenant(
    slug_or_tenant: Tenant | str,
    path_or_file: str | Path | IO[bytes],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[ExportStep], Any] | None = None,
    tables: Sequence[Any] = (),
) -> ExportResult:
    """Write the tenant's schema description and every row to ``path_or_file``; what was written (``ExportResult``).

    ``path_or_file`` is a path (written to a temporary file in the same
    directory and renamed to it once complete, replacing a file there) or a
    binary file object open for writing. The tenant stays served: its
    tables are read in one snapshot of its database, ``batch_size`` rows at
    a time, never a whole table in memory. ``tables`` are specs as
    ``register_tables`` takes them, for run-time tables neither
    ``TENANT_TABLES`` nor this process's registrations name. ``progress``
    is called with an ``ExportStep`` at each step.

    Refused before anything is written: a tenant that is not ready or
    archived, one behind the migration plan, tables nobody accounts for, a
    run-time table whose class cannot be imported by its dotted path.
    """
    started = time.monotonic()
    _check_arguments(batch_size, None)
    notify = _notifier(progress)
    tenant = _row(slug_or_tenant)
    _check_exportable(tenant)
    source_db = tenant.database
    specs = _check_source(tenant, source_db, tables, verb="export")
    plan = _plan(source_db, specs, source_db.tables)
    definitions = _definitions(plan, specs)
    connection = source_db.connection
    if connection.in_atomic_block:
        raise TenantSchemaError(
            f"export_tenant reads tenant {tenant.slug!r} in a snapshot of its own: call it outside any "
            "transaction on the tenant's database"
        )
    with _output(path_or_file) as (out, name):
        writer = portable.ExportWriter(out)
        try:
            with source_db.dialect.read_snapshot(connection):
                manifest, checks = _write(tenant, source_db, plan, definitions, writer, batch_size, notify)
        except BaseException:
            writer.discard()
            raise
        writer.close(manifest)
        size = _size(out)
    notify(ExportStep("exported"))
    return ExportResult(tenant, name, checks, time.monotonic() - started, size)


def _check_exportable(tenant: Tenant) -> None:
    if tenant.copy_of is not None or tenant.status == Tenant.Status.POOLED:
        raise TenantSchemaError(f"{tenant.slug!r} is {tenant.status}, not a tenant: only tenants are exported")
    if tenant.status not in EXPORTABLE:
        raise TenantSchemaError(
            f"tenant {tenant.slug!r} is {tenant.status}: only a ready or archived tenant is exported "
            f"(`manage.py tenant_register {tenant.slug}` completes it)"
        )


def _definitions(plan: list[transfer.TableCopy], specs: list[Any]) -> dict[str, dict[str, str]]:
    """What defines each table, as the manifest says it: a model, ``django_migrations``, or a run-time table's class."""
    out: dict[str, dict[str, str]] = {}
    labels = {m._meta.db_table: m._meta.label for m in _model_tables()}
    for source, name, pk in specs:
        out[name] = {"kind": "table", "class": _class_path(name, source), "table": name, "pk": pk}
    for table in plan:
        if table.name == django_private.migration_model()._meta.db_table:
            out[table.name] = {"kind": "migrations"}
        elif table.name not in out:
            out[table.name] = {"kind": "model", "model": labels[table.name]}
    return out


def _class_path(table: str, cls: type) -> str:
    """The dotted path an import finds ``cls`` by; ``TenantSchemaError`` when it would not."""
    path = f"{cls.__module__}.{cls.__qualname__}"
    try:
        found = import_string(path)
    except ImportError:
        found = None
    if found is not cls:
        raise TenantSchemaError(
            f"table {table!r} is registered from {cls!r}, which cannot be imported by its dotted path {path!r} "
            "(a class defined inside a function?), so an import could not create the table: define the "
            "class at module level, then export again"
        )
    return path


def _write(
    tenant: Tenant,
    source_db: TenantDatabase,
    plan: list[transfer.TableCopy],
    definitions: dict[str, dict[str, str]],
    writer: portable.ExportWriter,
    batch_size: int,
    notify: Callable[[ExportStep], None],
) -> tuple[dict[str, Any], list[TableCheck]]:
    """Every table into its member (inside the snapshot); the manifest and the tables' checks."""
    alias = source_db.alias
    applied = sorted(applied_migrations(source_db) or ())
    counts = {t.name: t.source._base_manager.db_manager(alias).count() for t in plan}
    notify(ExportStep("export", total=sum(counts.values())))
    entries, checks, differ = [], [], []
    for table in plan:
        name, total = table.name, counts[table.name]
        notify(ExportStep("rows", name, 0, total))
        pages = transfer.batches(table.source, alias, table.source_fields, batch_size)
        given, written = writer.write_table(
            name, table.source_fields, pages, lambda rows, n=name, t=total: notify(ExportStep("rows", n, rows, t))
        )
        if (given.rows, given.digest) != (written.rows, written.digest):
            differ.append(f"{name!r}: checksums differ (database {given.digest[:12]}, export {written.digest[:12]})")
        else:
            checks.append(TableCheck(name, given.rows, given.digest))
            notify(ExportStep("verified", name, given.rows))
        entries.append(
            {
                "name": name,
                "member": portable.member_name(name),
                "defined_by": definitions[name],
                "primary_key": table.pk,
                "columns": portable.describe_columns(table.source_fields),
                "rows": given.rows,
                "checksum": given.digest,
                "next_key": source_db.dialect.next_key(source_db.connection, name, table.pk),
            }
        )
    if differ:
        raise CopyFailed(f"tenant {tenant.slug!r}: values do not survive the export's encoding: {'; '.join(differ)}")
    return _manifest(tenant, source_db, applied, entries), checks


def _manifest(tenant: Tenant, source_db: TenantDatabase, applied: list, tables: list) -> dict[str, Any]:
    return {
        "format": portable.FORMAT,
        "version": portable.VERSION,
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "producer": f"tenant-schema {_version()}",
        "tenant": {
            "slug": tenant.slug,
            "name": tenant.name,
            "uid": tenant.uid.hex,
            "server": tenant.server,
            "dialect": source_db.dialect.name,
            "database": tenant.database_name,
        },
        "migrations": {"fingerprint": migration_plan().fingerprint, "applied": [list(key) for key in applied]},
        "tables": tables,
    }


def _version() -> str:
    try:
        return importlib.metadata.version("tenant-schema")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def _output(path_or_file: str | Path | IO[bytes]) -> Iterator[tuple[IO[bytes], str]]:
    """The file to write and its name; a path gets a temporary file beside it, renamed to it once complete."""
    if hasattr(path_or_file, "write"):
        yield path_or_file, portable.display_name(path_or_file)
        return
    path = Path(path_or_file)
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {path}: there is no directory {str(path.parent)!r}")
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with open(partial, "xb") as out:
            yield out, str(path)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _size(out: IO[bytes]) -> int | None:
    try:
        return out.tell()
    except (OSError, ValueError):
        return None


# -- importing -------------------------------------------------------------------------------


@dataclasses.dataclass
class _Incoming:
    """A table of the export, and what creates it here: a model, or a run-time table's spec."""

    entry: dict[str, Any]
    model: Any = None
    spec: tuple[type, str, str] | None = None

    @property
    def name(self) -> str:
        return self.entry["name"]


def import_tenant(
    path_or_file: str | Path | IO[bytes],
    *,
    slug: str | None = None,
    server: str | None = None,
    labels: Mapping[str, str] | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[ImportStep], Any] | None = None,
) -> ImportResult:
    """Create a new tenant from an export (a path or a binary file object); what was made (``ImportResult``).

    The tenant gets the export's slug (or ``slug``), a fresh ``uid``, and a
    new database on ``server`` (default: where the placement policy puts
    a new tenant, on a server carrying every one of ``labels`` as
    ``register_tenant`` takes them) at the current migration plan, holding the export's rows,
    verified table by table. It is ready, and served, only once all of that
    is done. ``progress`` is called with an ``ImportStep`` at each step.

    Refused before anything is created (``InvalidExport``,
    ``TenantSchemaError``): a file that is not an export this version
    reads, one exported at another migration plan, a table no model of the
    tenant apps and no importable class defines (or with other columns),
    a slug that is taken, an unknown server. A failure later
    (``ImportFailed``, naming the table, column and row key of a value the
    target cannot hold, or the tables that differ) drops what the import
    created.
    """
    started = time.monotonic()
    _check_arguments(batch_size, None)
    notify = _notifier(progress)
    with portable.ExportReader(path_or_file) as export:
        slug = normalize_slug(export.manifest["tenant"].get("slug") if slug is None else slug)
        incoming = _check_import(export, slug)
        target = placement.choose_server(server, labels)  # UnknownServer, or no server with the labels
        drop_abandoned_imports()
        row = _record_import(slug, target)
        me = row.held_by
        try:
            with transfer.failures_as(ImportFailed):
                row = _build_target(row)
                notify(ImportStep("target"))
                target_db, plan, specs = _prepare(export, row, incoming)
                job = _Filling(export, plan, target_db, batch_size, _heartbeat(row, me), notify)
                _fill(job)
                notify(ImportStep("copied"))
                checks = _verify(job)
                tenant = _publish(row, slug, me, export.manifest)
        except BaseException:
            _undo(row, me, lambda: _discard(row))
            raise
    tenant = _rebind(tenant, [target_db], specs)
    tenant_imported.send(sender=Tenant, tenant=tenant, source=export.manifest["tenant"])
    notify(ImportStep("imported"))
    return ImportResult(tenant, export.name, export.manifest["tenant"], checks, time.monotonic() - started)


def _check_import(export: portable.ExportReader, slug: str) -> list[_Incoming]:
    """Everything refused before anything is created; each table of the export with what creates it here."""
    migration_plan().check_complete()
    _check_plan(export)
    incoming = [_resolve(export, entry) for entry in export.manifest["tables"]]
    if Tenant.objects.filter(slug=slug).exists():
        raise TenantSchemaError(
            f"tenant {slug!r} is already registered: import under another slug "
            "(tenant_import --slug NEW, import_tenant(..., slug=...))"
        )
    return incoming


def _check_plan(export: portable.ExportReader) -> None:
    """``TenantSchemaError`` naming the migrations that differ, unless the export's are this site's plan."""
    plan = migration_plan()
    migrations = export.manifest["migrations"]
    if migrations.get("fingerprint") == plan.fingerprint:
        return
    applied = {tuple(key) for key in migrations.get("applied", ())}
    missing = plan.pending(applied)  # this site's, which the exported tenant had not applied
    extra = sorted(applied - set(plan.records()))  # the exported tenant's, which this site does not have
    if not missing and not extra:
        return  # the same migrations (TENANT_TABLES differ): each table is created from its own definition
    parts = []
    if missing:
        parts.append(
            f"this site has {_names(missing)}, which the exported tenant had not applied: migrate the source "
            f"(`manage.py tenant_migrate {export.manifest['tenant'].get('slug')}`) and export it again"
        )
    if extra:
        parts.append(
            f"the exported tenant had applied {_names(extra)}, which this site does not have: migrate this site "
            "(deploy the code with those migrations) first"
        )
    raise TenantSchemaError(f"{export.name} was exported at another migration plan: " + "; ".join(parts))


def _names(keys: Sequence[tuple[str, ...]]) -> str:
    shown = ", ".join(".".join(key) for key in keys[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _resolve(export: portable.ExportReader, entry: dict[str, Any]) -> _Incoming:
    """What creates the table here; ``TenantSchemaError`` when nothing does."""
    name, defined = entry["name"], entry["defined_by"]
    kind = defined.get("kind") if isinstance(defined, dict) else None
    if kind == "migrations":
        model = django_private.migration_model()
    elif kind == "model":
        models = {m._meta.label: m for m in _model_tables()}
        model = models.get(defined.get("model"))
        if model is None:
            raise TenantSchemaError(
                f"table {name!r} of {export.name} is defined by model {defined.get('model')!r}, which is not a "
                f"model of this site's tenant apps ({', '.join(sorted(models)) or 'none'})"
            )
    elif kind == "table":
        return _Incoming(entry, spec=(_importable(export, name, defined), name, defined.get("pk") or "id"))
    else:
        raise TenantSchemaError(f"table {name!r} of {export.name} is defined by {defined!r}, which is no kind known")
    if model._meta.db_table != name:
        raise TenantSchemaError(
            f"table {name!r} of {export.name} is defined by {model._meta.label}, whose table here is "
            f"{model._meta.db_table!r}"
        )
    _check_columns(export, entry, model)
    return _Incoming(entry, model=model)


def _importable(export: portable.ExportReader, name: str, defined: dict[str, Any]) -> type:
    path = defined.get("class")
    try:
        cls = import_string(str(path))
    except ImportError as exc:
        raise TenantSchemaError(
            f"table {name!r} of {export.name} is a run-time table of class {path!r}, which cannot be imported "
            f"here ({transfer.first_line(exc)}): install or define it, then import again"
        ) from None
    if not isinstance(cls, type):
        raise TenantSchemaError(f"table {name!r} of {export.name}: {path!r} is not a class")
    return cls


def _check_columns(export: portable.ExportReader, entry: dict[str, Any], model: Any) -> None:
    theirs = sorted(str(c.get("name")) for c in entry["columns"])
    ours = sorted(f.column for f in model._meta.local_concrete_fields)
    if theirs != ours:
        raise TenantSchemaError(
            f"table {entry['name']!r} has the columns {', '.join(theirs)} in {export.name} but "
            f"{', '.join(ours)} here ({model._meta.label}): nothing was imported"
        )


def _record_import(slug: str, server: Server) -> Tenant:
    """The import's registry row, ``provisioning``, of the reserved shape ``import-<hex>`` (never served)."""
    reserved = f"{IMPORT_SLUG_PREFIX}{uuid.uuid4().hex[:16]}"
    return Tenant.objects.create(
        slug=reserved,
        name=f"import of {slug}"[:200],
        server=server.key,
        database_name=_free_name(slug, server, reserved),
        status=Tenant.Status.PROVISIONING,
        held_by=_holder(),
    )


def _prepare(
    export: portable.ExportReader, row: Tenant, incoming: list[_Incoming]
) -> tuple[TenantDatabase, list[transfer.TableCopy], list[Any]]:
    """The new database's binding, the tables to fill and the run-time specs; run-time tables registered there
    (their columns compared with the export's) and rows migration-signal receivers seeded flushed."""
    target_db = row.database
    _check_filled(row, target_db)
    specs = [table.spec for table in incoming if table.spec is not None]
    with lifecycle_writes(row.slug):
        registered = register_tables(target_db, specs)
    plan = []
    for table in incoming:
        model = table.model if table.spec is None else registered[table.name].model
        _check_columns(export, table.entry, model)
        plan.append(transfer.TableCopy(table.name, model, model, transfer.depends_on(model)))
    transfer.flush(target_db, plan)
    return target_db, plan, specs


@dataclasses.dataclass
class _Filling:
    """An import's new database being filled from the export, and how (batches, heartbeat, progress)."""

    export: portable.ExportReader
    plan: list[transfer.TableCopy]
    target_db: TenantDatabase
    batch_size: int
    beat: Callable[[], None]
    notify: Callable[[ImportStep], None]


def _fill(job: _Filling) -> None:
    """Every table's rows from its member into the new database (``transfer.copy_tables``)."""
    tables = job.export.tables
    job.notify(ImportStep("copy", total=sum(int(tables[t.name]["rows"]) for t in job.plan)))

    def read(table: transfer.TableCopy) -> Iterator[list[tuple]]:
        return job.export.batches(tables[table.name], table.target_fields, job.batch_size)

    def written(table: transfer.TableCopy, rows: int) -> None:
        job.notify(ImportStep("rows", table.name, rows, tables[table.name]["rows"]))
        job.beat()

    transfer.copy_tables(job.plan, job.target_db, read, written)
    transfer.carry_key_positions(job.plan, job.target_db, lambda table: _next_key(tables[table.name]))


def _next_key(entry: dict[str, Any]) -> int | None:
    """A table's ``next_key`` in the manifest: a positive whole number, else none to carry over."""
    value = entry.get("next_key")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _verify(job: _Filling) -> list[TableCheck]:
    """Each table's rows and checksum on the new database against the manifest's; ``ImportFailed`` if any differ."""
    tables = job.export.tables
    checks, differ = transfer.verify_tables(
        job.plan,
        job.target_db,
        lambda table: (tables[table.name]["rows"], tables[table.name]["checksum"]),
        batch_size=job.batch_size,
        beat=job.beat,
        on_verified=lambda check: job.notify(ImportStep("verified", check.table, check.rows)),
        source=("in the export", "export"),
    )
    if differ:
        raise ImportFailed(f"verification failed, so nothing was imported from {job.export.name}: " + "; ".join(differ))
    return checks


def _publish(row: Tenant, slug: str, me: str, manifest: dict[str, Any]) -> Tenant:
    """The one registry write that makes the import a tenant: the row renamed to ``slug``, ``ready``."""
    now = timezone.now()
    try:
        done = Tenant.objects.filter(pk=row.pk, status=Tenant.Status.MOVING, held_by=me).update(
            slug=slug,
            name=str(manifest["tenant"].get("name") or "")[:200],
            status=Tenant.Status.READY,
            held_by="",
            last_error="",
            updated_at=now,
        )
    except IntegrityError:
        raise TenantSchemaError(
            f"tenant {slug!r} was registered while the import ran, so nothing was imported: import under another slug"
        ) from None
    if not done:
        raise ImportFailed(f"{row.slug!r} was taken over by another process before the import could finish")
    return Tenant.objects.get(pk=row.pk)


def _discard(row: Tenant) -> None:
    """The import's database dropped (its marker checked) and its row deleted.

    A database another registry row marked is not this import's to drop
    (two imports of one slug chose its name at once, and the other created
    it): it is left alone, and only this row goes.
    """
    try:
        _drop_filled(row)
    except NotOurDatabase:
        marker = ownership.read_marker(row.database)
        if marker is None or marker.origin == ownership.TEMPLATE_ORIGIN or marker.tenant_uid == row.uid.hex:
            raise  # possibly this import's (unmarked, or a clone): left for an operator, the row says why
        logger.warning(
            "%s: database %s is %s's, not this import's: only the row is deleted",
            row.slug,
            row.database_name,
            marker.slug,
        )
        databases.forget_binding(row.database)
    Tenant.objects.filter(pk=row.pk, status__in=_OPEN).delete()


# -- what interrupted imports leave ------------------------------------------------------------


def drop_abandoned_imports() -> list[Tenant]:
    """Drop what imports whose process is gone left behind; the registry rows dropped.

    Each ``import-<hex>`` row that is not ready and whose process is gone
    (on this host: its pid; elsewhere: ``LEASE_SECONDS`` without a
    heartbeat) loses its database, after the ownership marker proved it
    that row's, and is deleted. A row whose database cannot be dropped is
    left ``failed``, saying why. ``import_tenant`` calls this first;
    ``manage.py tenant_import --cleanup`` runs it alone.
    """
    me = _holder()
    dropped = []
    rows = Tenant.objects.filter(slug__regex=rf"^{IMPORT_SLUG_RE.pattern}$", status__in=_OPEN).order_by("pk")
    for row in rows:
        if _alive(row) or not _take_over(row, me):
            continue
        logger.warning(
            "dropping %s (database %s on %s), left by an interrupted import", row.slug, row.database_name, row.server
        )
        _undo(row, me, lambda row=row: _discard(row))
        if not Tenant.objects.filter(pk=row.pk).exists():
            dropped.append(row)
    return dropped


def _take_over(row: Tenant, me: str) -> bool:
    """Whether this process now holds ``row`` (nobody else took it meanwhile)."""
    return bool(
        Tenant.objects.filter(pk=row.pk, held_by=row.held_by, updated_at=row.updated_at).update(
            held_by=me, updated_at=timezone.now()
        )
    )
