"""Moving a live tenant to another server: ``move_tenant`` (``manage.py tenant_move``).

The tenant's whole database is copied to a new database on the target
server, verified, and the registry switched to it in one transaction; the
tenant keeps its row, slug and ``uid``. Any two configured servers, same
engine or not. The steps, each a function of this module:

1. ``_check_source``, before anything is written: the source must be at
   the current migration plan, and every table in it must be accounted for
   (a tenant app's model or its many-to-many table, ``django_migrations``,
   ``TENANT_TABLES``, a table registered in this process, or one of the
   ``tables`` given), else the move is refused naming the others.
2. ``_record_move``: a registry row for the target (slug ``move-<hex>``,
   status ``provisioning``, ``copy_of`` = the tenant's uid, ``held_by`` =
   this process, ``maintenance`` = the tenant's mode before the move),
   created under a lock on the tenant's row, so one tenant has at most one
   move in progress.
3. ``_build_target``: ``provision._provision_row`` brings the row's database
   to the plan, as for a tenant or a pooled database (cloned or created,
   marked, its role, its tables); its ownership marker holds the tenant's
   uid (``Tenant.owner_uid``) and the move row's slug. The row becomes
   ``moving``. The tenant's writes are still served meanwhile.
4. ``_pause_writes``: maintenance mode on, then a wait of
   ``ROUTING_CACHE_SECONDS`` (plus a second for writes in flight) so every
   process refuses writes before anything is copied; reads go on.
   ``_wait_for_writers`` (``Dialect.wait_for_writers``) then waits for the
   transactions that wrote before the pause to end, so none commits rows
   the copy misses.
5. ``_prepare_target``: the run-time tables are registered on the target
   with the same dataclasses, the indexes ``create_index`` added to any
   table (``_carry_indexes``) too, and rows a receiver of the migration signals
   seeded are flushed (Django's ``sql_flush``).
6. ``_copy`` (``transfer.copy_tables``): each table in
   foreign-key order, in keyset batches ordered by primary key, written
   with the bulk path of ``schema.bulk`` (``raw``: values as given, no
   ``auto_now``), one transaction per batch. Where the target can switch
   constraint checks off (MySQL/MariaDB, SQLite) they are off during the
   copy and checked after it; elsewhere (PostgreSQL) tables that reference
   themselves or each other in a cycle make the whole copy one
   transaction. Values the target cannot hold stop the move, naming
   table, column and row key. Then Django's ``sequence_reset_sql`` sets
   sequences past the copied keys, and ``_carry_key_positions``
   (``Dialect.next_key``) on to where the source's counters stand.
7. ``_verify``: per table, row count and a checksum of every row, read
   again from both databases and normalised through its Django field
   (``transfer.canonical``), so both engines compute it alike.
8. ``_switch``: one registry transaction: the tenant's row points at the
   target (its maintenance mode as before the move), the move row at the
   source, status ``copy``. Nothing else is ever needed to finish a move.

A failure before the switch (a value that does not fit, a checksum that
differs, Ctrl-C) puts the tenant's maintenance mode back, drops the target
(only after its marker proved it this move's) and deletes the move row.
A process killed at any point leaves the registry pointing at the source
until the switch commits, and at the complete, verified target after it;
the next ``move_tenant`` of the tenant takes the move row over once its
process is gone (the same host: its pid; another host: ``LEASE_SECONDS``
without a heartbeat) and finishes it (same target server: provisioning
resumed, the copy restarted) or discards it first (another server).

The source database is never dropped implicitly: ``drop_kept_copies`` (or
``drop_source=True``, ``tenant_move --drop-source``) drops it, its marker
checked.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.db import DatabaseError, models, transaction
from django.utils import timezone

from .. import conf, credentials, databases, django_private, ownership
from ..databases import TenantDatabase, database_name
from ..exceptions import CopyFailed, MoveFailed, NotOurDatabase, TenantSchemaError
from ..migration_plan import migration_plan
from ..models import Tenant
from ..names import MOVE_SLUG_PREFIX, validate_identifier
from ..plugins import get_plugins
from ..registry import lifecycle_writes, not_ready_hint, ready_tenants, registry_db
from ..schema import transfer
from ..schema.building import normalize_specs
from ..schema.ddl import list_tables, register_tables
from ..schema.indexes import create_indexes, list_indexes
from ..schema.transfer import TableCheck
from ..servers import Server, get_server
from ..signals import tenant_maintenance_changed, tenant_moved
from .archive import _row, drop_owned_database, set_maintenance
from .build import applied_migrations, tenant_models, tenant_table_specs
from .provision import _provision_row

logger = logging.getLogger(__name__)

__all__ = ["MoveResult", "MoveStep", "TableCheck", "drop_kept_copies", "kept_copies", "move_tenant"]

#: Rows read and written per batch.
DEFAULT_BATCH_SIZE = 2000
#: A move row whose process has not been heard of for this long is taken over by the next move.
LEASE_SECONDS = 120
#: At most one heartbeat (a registry UPDATE) per this many seconds.
HEARTBEAT_SECONDS = 5
#: Added to ``ROUTING_CACHE_SECONDS`` before copying: writes that passed their check just before it.
IN_FLIGHT_SECONDS = 1.0
#: Longest wait for transactions that wrote to the tenant before its writes paused (``Dialect.wait_for_writers``).
WRITERS_TIMEOUT_SECONDS = 30.0
_OPEN = (Tenant.Status.PROVISIONING, Tenant.Status.FAILED, Tenant.Status.MOVING)


# -- what a move reports ------------------------------------------------------------------


class MoveStep(transfer.Step):
    """What ``move_tenant(progress=...)`` is called with, at each step.

    ``phase`` is ``"target"`` (the target is at the plan; writes still
    served), ``"paused"`` (writes refused from now on), ``"copy"`` (``total``: rows to copy), ``"rows"`` (``rows``
    more of ``table`` copied, of ``total``), ``"copied"`` (every table
    copied, nothing verified yet), ``"verified"`` (``table`` and its
    ``rows``) or ``"switched"``.
    """


@dataclasses.dataclass
class MoveResult:
    """What ``move_tenant`` did. ``kept`` is the registry row of the kept source (``None`` once dropped)."""

    tenant: Tenant
    source: tuple[str, str]  # (server, database name)
    target: tuple[str, str]
    tables: list[TableCheck]
    kept: Tenant | None
    seconds: float
    write_pause: float
    #: Why ``drop_source=True`` could not drop the kept source (the move itself is done).
    drop_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The result as ``tenant_move --json`` prints it."""
        place = ("server", "database")
        return {
            "tenant": self.tenant.slug,
            "uid": self.tenant.uid.hex,
            "from": dict(zip(place, self.source)),
            "to": dict(zip(place, self.target)),
            "tables": [t.as_dict() for t in self.tables],
            "rows": sum(t.rows for t in self.tables),
            "kept_copy": None if self.kept is None else copy_dict(self.kept),
            "source_dropped": self.kept is None,
            "drop_error": self.drop_error,
            "seconds": round(self.seconds, 3),
            "write_pause_seconds": round(self.write_pause, 3),
        }


def copy_dict(row: Tenant) -> dict[str, str]:
    """A kept copy as ``--json`` shows it."""
    return {"slug": row.slug, "server": row.server, "database": row.database_name}


# -- the tables of a move -------------------------------------------------------------------


def _model_tables() -> list[type[models.Model]]:
    """The tenant apps' models, with their auto-created many-to-many tables."""
    out = []
    for model in tenant_models():
        out.append(model)
        for field in model._meta.local_many_to_many:
            through = field.remote_field.through
            if through._meta.auto_created:
                out.append(through)
    return out


def _specs(tenant_db: TenantDatabase, tables: Iterable[Any]) -> list[tuple[Any, str, str]]:
    """The run-time tables the move knows, as ``(class, table, pk)``: ``tables``, then this process's
    registrations, then ``TENANT_TABLES`` (the first to name a table wins)."""
    out: dict[str, tuple[Any, str, str]] = {}
    for spec in normalize_specs(tenant_db, tables):
        out.setdefault(spec.table, (spec.source, spec.table, spec.pk))
    for name, table in tenant_db.tables.items():
        if table.source is not None:
            out.setdefault(name, (table.source, name, table.model._meta.pk.name))
    for spec in normalize_specs(tenant_db, tenant_table_specs()):
        out.setdefault(spec.table, (spec.source, spec.table, spec.pk))
    return list(out.values())


# -- moving ----------------------------------------------------------------------------------


def move_tenant(
    slug_or_tenant: Tenant | str,
    server: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[MoveStep], Any] | None = None,
    drop_source: bool = False,
    tables: Sequence[Any] = (),
    settle: float | None = None,
) -> MoveResult:
    """Move the ready tenant to a new database on ``server``; what was done (``MoveResult``).

    The tenant keeps its row, slug and uid; its writes are refused
    (maintenance mode) from the start of the copy until the registry switches
    to the verified copy, its reads go on. The source database is kept,
    recorded as a registry row with status ``copy`` (``kept_copies``), unless
    ``drop_source``. ``tables`` are specs as ``register_tables`` takes them,
    for run-time tables neither ``TENANT_TABLES`` nor this process's
    registrations name. ``settle`` is the wait between refusing writes and
    copying (default ``ROUTING_CACHE_SECONDS`` + 1 s: other processes see
    maintenance mode within ``ROUTING_CACHE_SECONDS``). ``progress`` is
    called with a ``MoveStep`` at each step.

    Refused before anything is written: an unknown server, the tenant's own
    server, a tenant that is not ready, one another live process is moving,
    a source behind the migration plan, tables it cannot account for. A
    failure later (``MoveFailed``) leaves the tenant where it was, in its
    maintenance mode as before, and drops the half-written target.
    """
    started = time.monotonic()
    _check_arguments(batch_size, settle)
    notify = _notifier(progress)
    target = get_server(server)  # UnknownServer, naming the configured ones
    tenant = _row(slug_or_tenant)
    _check_movable(tenant, target)
    _refuse_if_moving(tenant)
    source_db = tenant.database
    specs = _check_source(tenant, source_db, tables)
    move = _claim_move(tenant, target)
    me = move.held_by
    paused = None
    try:
        with transfer.failures_as(MoveFailed):
            move = _build_target(move)  # before writes pause: building the target is no part of the pause
            notify(MoveStep("target"))
            paused = time.monotonic()
            _pause_writes(tenant, move, settle)
            notify(MoveStep("paused"))
            target_db, plan = _prepare_target(tenant, move, source_db, specs)
            _wait_for_writers(tenant, source_db, plan)
            beat = _heartbeat(move, me)
            _copy(plan, source_db, target_db, batch_size, beat, notify)
            _carry_key_positions(plan, source_db, target_db)
            notify(MoveStep("copied"))
            checks = _verify(tenant, plan, source_db, target_db, batch_size, beat, notify)
            tenant, kept = _switch(tenant, move, me)
    except BaseException:
        # Nothing to undo once the switch committed (the row is a copy then).
        _undo(move, me, lambda: _discard(tenant, move))
        raise
    pause = time.monotonic() - paused
    tenant = _rebind(tenant, [source_db, target_db], specs)
    kept, drop_error = _drop_if_asked(tenant, kept, drop_source)
    tenant_moved.send(sender=Tenant, tenant=tenant, source=(source_db.server.key, source_db.name), kept=kept)
    if not move.maintenance:
        tenant_maintenance_changed.send(sender=Tenant, tenant=tenant, maintenance=False)
    notify(MoveStep("switched"))
    return MoveResult(
        tenant=tenant,
        source=(source_db.server.key, source_db.name),
        target=(tenant.server, tenant.database_name),
        tables=checks,
        kept=kept,
        seconds=time.monotonic() - started,
        write_pause=pause,
        drop_error=drop_error,
    )


def _check_arguments(batch_size: object, settle: object) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive whole number of rows, not {batch_size!r}")
    if settle is not None and not (isinstance(settle, (int, float)) and not isinstance(settle, bool) and settle >= 0):
        raise ValueError(f"settle must be a number of seconds (0 or more), not {settle!r}")


def _drop_if_asked(tenant: Tenant, kept: Tenant, drop_source: bool) -> tuple[Tenant | None, str | None]:
    """The kept copy (``None`` once dropped) and why it could not be dropped; the move itself is done."""
    if not drop_source:
        return kept, None
    try:
        _drop_copy(tenant, kept)
    except Exception as exc:  # reported in the result; the copy stays for a later drop
        logger.exception("tenant %s: moved, but the kept copy %s could not be dropped", tenant.slug, kept.slug)
        return kept, f"{type(exc).__name__}: {exc}"
    return None, None


def _notifier(progress: Callable[[MoveStep], Any] | None) -> Callable[[MoveStep], None]:
    if progress is None:
        return lambda step: None
    if not callable(progress):
        raise TypeError(f"progress must be a callable taking a MoveStep, not {progress!r}")
    return progress


def _check_movable(tenant: Tenant, target: Server) -> None:
    """Bad input, found in the registry row alone: what cannot be moved, or not there."""
    if tenant.copy_of is not None or tenant.status == Tenant.Status.POOLED:
        raise TenantSchemaError(f"{tenant.slug!r} is {tenant.status}, not a tenant: only tenants are moved")
    if tenant.status != Tenant.Status.READY:
        raise TenantSchemaError(
            f"tenant {tenant.slug!r} is {tenant.status}, not ready: only a ready tenant is moved "
            f"({not_ready_hint(tenant)})"
        )
    if tenant.server == target.key:
        raise TenantSchemaError(
            f"tenant {tenant.slug!r} is already on server {target.key!r} (database {tenant.database_name!r}): "
            "nothing to move; name another server"
        )


def _holder() -> str:
    """This process, as ``held_by`` records it."""
    return f"{socket.gethostname()}:{os.getpid()}"[:100]


def _alive(row: Tenant) -> bool:
    """Whether the process holding a move row may still be at work on it."""
    if not row.held_by:
        return False
    if (timezone.now() - row.updated_at).total_seconds() > LEASE_SECONDS:
        return False
    host, _, pid = row.held_by.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another host: only its heartbeat can tell
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _open_move(tenant: Tenant) -> Tenant | None:
    return Tenant.objects.filter(copy_of=tenant.uid, status__in=_OPEN).order_by("pk").first()


def _refuse_if_moving(tenant: Tenant) -> None:
    """``TenantSchemaError`` when a live process is moving the tenant."""
    row = _open_move(tenant)
    if row is not None and _alive(row):
        raise _being_moved(tenant, row)


def _being_moved(tenant: Tenant, row: Tenant) -> TenantSchemaError:
    return TenantSchemaError(
        f"tenant {tenant.slug!r} is being moved to server {row.server!r} by process {row.held_by} "
        f"(registry row {row.slug!r}, last heard of {row.updated_at:%Y-%m-%d %H:%M:%S %Z}); wait for it to "
        f"finish; if that process is gone, the next move takes over after {LEASE_SECONDS} s"
    )


def _check_source(tenant: Tenant, source_db: TenantDatabase, tables: Sequence[Any], verb: str = "move") -> list[Any]:
    """Refuse a source behind the plan or holding tables nobody accounts for; the run-time table specs to copy.

    ``verb`` (``"move"``, ``"export"``) is what the messages tell the user to do afterwards.
    """
    plan = migration_plan()
    plan.check_complete()
    missing = plan.pending(applied_migrations(source_db) or set())
    if missing:
        names = ", ".join(f"{app}.{name}" for app, name in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise TenantSchemaError(
            f"tenant {tenant.slug!r} is not at the current migration plan (it lacks {names}): "
            f"`manage.py tenant_migrate {tenant.slug}` first, then {verb} it"
        )
    present = set(list_tables(source_db))
    model_tables = {m._meta.db_table for m in _model_tables()} | {django_private.migration_model()._meta.db_table}
    specs = [s for s in _specs(source_db, tables) if s[1] in present and s[1] not in model_tables]
    unknown = sorted(present - model_tables - {s[1] for s in specs})
    if unknown:
        raise TenantSchemaError(
            f"tenant {tenant.slug!r} holds tables tenant-schema cannot account for: {', '.join(unknown)} "
            "(not a tenant app's, not in TENANT_TABLES, not registered in this process); register them "
            f"with register_tables() first, or name them ({verb}_tenant(..., tables=[(Class, 'table')]), "
            f"tenant_{verb} --table module.Class:table), then {verb} again"
        )
    register_tables(source_db, specs)  # SchemaMismatch when a class does not describe its table
    return specs


def _free_name(slug: str, server: Server, reserved_slug: str) -> str:
    """Tenant ``slug``'s usual database name on ``server`` when nothing uses it, else one derived from the
    slug of the reserved row (``move-<hex>``, ``import-<hex>``) that fills it."""
    hook = get_plugins().hook
    for name in (database_name(slug, server), database_name(reserved_slug, server)):
        taken = Tenant.objects.filter(server=server.key, database_name=name).exists()
        if not taken and not hook.tenant_schema_database_exists(dialect=server.dialect, server=server, name=name):
            return name
    raise TenantSchemaError(
        f"no free database name for tenant {slug!r} on server {server.key!r}: both "
        f"{database_name(slug, server)!r} and {database_name(reserved_slug, server)!r} exist"
    )


def _claim_move(tenant: Tenant, target: Server) -> Tenant:
    """The move row this call works on: a new one, or the one a dead process left (taken over)."""
    me = _holder()
    for _attempt in range(3):
        with transaction.atomic(using=registry_db()):
            locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
            if (locked.server, locked.database_name, locked.status) != (
                tenant.server,
                tenant.database_name,
                Tenant.Status.READY,
            ):
                raise TenantSchemaError(f"tenant {tenant.slug!r} changed while the move was being prepared")
            left = Tenant.objects.select_for_update().filter(copy_of=tenant.uid, status__in=_OPEN).first()
            if left is None:
                return _record_move(locked, target, me)
            if _alive(left):
                raise _being_moved(tenant, left)
            Tenant.objects.filter(pk=left.pk).update(held_by=me, updated_at=timezone.now())
            left.refresh_from_db()
        if left.server == target.key:
            logger.warning("tenant %s: resuming the move %s a gone process left", tenant.slug, left.slug)
            return left
        logger.warning(
            "tenant %s: discarding the move %s to %s a gone process left", tenant.slug, left.slug, left.server
        )
        _discard(tenant, left)
    raise TenantSchemaError(f"tenant {tenant.slug!r}: other moves keep appearing; try again")


def _record_move(tenant: Tenant, target: Server, me: str) -> Tenant:
    """The move's registry row, ``provisioning``: its target's place, and the tenant's mode before the move."""
    slug = f"{MOVE_SLUG_PREFIX}{uuid.uuid4().hex[:16]}"
    return Tenant.objects.create(
        slug=slug,
        name=f"move of {tenant.slug}"[:200],
        server=target.key,
        database_name=_free_name(tenant.slug, target, slug),
        status=Tenant.Status.PROVISIONING,
        copy_of=tenant.uid,
        maintenance=tenant.maintenance,
        held_by=me,
    )


def _pause_writes(tenant: Tenant, move: Tenant, settle: float | None) -> None:
    """Maintenance mode on, then wait until every process refuses writes (``settle`` seconds)."""
    set_maintenance(tenant, True)
    wait = float(conf.get("ROUTING_CACHE_SECONDS")) + IN_FLIGHT_SECONDS if settle is None else float(settle)
    if wait > 0:
        time.sleep(wait)


def _wait_for_writers(tenant: Tenant, source_db: TenantDatabase, plan: list[transfer.TableCopy]) -> None:
    """Wait for the source's transactions that wrote before the pause to end, so their rows are copied.

    Maintenance mode refuses each write from the pause on, but a transaction
    that wrote before it may commit later; copied without its rows, they
    would stay behind on the source. ``MoveFailed`` after
    ``WRITERS_TIMEOUT_SECONDS``: the tenant then stays where it is.
    """
    connection = source_db.connection
    try:
        source_db.dialect.wait_for_writers(connection, [t.name for t in plan], WRITERS_TIMEOUT_SECONDS)
    except TimeoutError as exc:
        raise MoveFailed(
            f"a transaction that wrote to tenant {tenant.slug!r} before its writes paused was still open after "
            f"{WRITERS_TIMEOUT_SECONDS:g} s, so it stays on server {tenant.server!r}; move it again once that "
            f"transaction ends ({transfer.first_line(exc)})"
        ) from exc
    except DatabaseError as exc:
        raise MoveFailed(
            f"waiting for the writes to tenant {tenant.slug!r} to end failed, so it stays on server "
            f"{tenant.server!r}: {transfer.first_line(exc)}"
        ) from exc


def _build_target(row: Tenant) -> Tenant:
    """The database of a move's (or an import's) row at the current plan (``provisioning`` -> ``moving``),
    as provisioning makes any."""
    if row.status == Tenant.Status.MOVING:
        return row
    built = _provision_row(row, Tenant.Status.MOVING)
    if built.status != Tenant.Status.MOVING:
        raise CopyFailed(f"the target's registry row {row.slug!r} is {built.status}, not moving")
    return built


def _check_target(tenant: Tenant, move: Tenant, target_db: TenantDatabase) -> None:
    """``NotOurDatabase`` unless the target is this move's: marked with the tenant's uid and the move's slug."""
    _refuse_own_database(tenant, move)
    _check_filled(move, target_db)


def _refuse_own_database(tenant: Tenant, move: Tenant) -> None:
    """``NotOurDatabase`` when the move's row names the database the tenant lives in."""
    if (move.server, move.database_name) == (tenant.server, tenant.database_name):
        raise NotOurDatabase(f"the move's target {move.database_name!r} is the tenant's own database")


def _check_filled(row: Tenant, target_db: TenantDatabase) -> None:
    """``NotOurDatabase`` unless the database is the one ``row`` (a move's, an import's) fills: its marker
    holds the row's ``owner_uid`` and slug."""
    marker = ownership.read_marker(target_db) if target_db.exists() else None
    if marker is None or marker.tenant_uid != row.owner_uid.hex or marker.slug != row.slug:
        owner = "no marker" if marker is None else f"the marker of {marker.slug!r}"
        raise NotOurDatabase(
            f"database {row.database_name!r} on server {row.server!r} is not the one {row.slug!r} fills "
            f"({owner}); tenant-schema will not write to or drop it"
        )


def _prepare_target(
    tenant: Tenant, move: Tenant, source_db: TenantDatabase, specs: list[Any]
) -> tuple[TenantDatabase, list[transfer.TableCopy]]:
    """The target's binding and the tables to copy; run-time tables registered there, seeded rows flushed."""
    target_db = move.database
    _check_target(tenant, move, target_db)
    with lifecycle_writes(move.slug):
        target_tables = register_tables(target_db, specs)
        plan = _plan(source_db, specs, target_tables)
        _carry_indexes(source_db, target_db, plan)
    transfer.flush(target_db, plan)
    return target_db, plan


def _carry_indexes(source_db: TenantDatabase, target_db: TenantDatabase, plan: list[transfer.TableCopy]) -> None:
    """The indexes ``create_index`` added on the source (to any table), created on the target before the
    copy, so a row that breaks a unique one is named.

    An index the table's model declares (a field's, ``Meta.indexes`` and
    ``constraints``, and what Django's schema editor adds for them, such as
    PostgreSQL's ``_like`` indexes) is left to the target's engine, which
    builds it or cannot (a partial index on MySQL); the others are matched
    by columns and uniqueness, not name (engines name their own indexes
    differently), and keep the source's name where the target can take it.
    """
    limit = target_db.dialect.max_identifier_length
    migrations = django_private.migration_model()._meta.db_table
    quote = source_db.connection.ops.quote_name
    wanted = []
    for table in plan:
        if table.name == migrations:
            continue
        declared = _declared_sql(source_db, table.source)
        present = list_indexes(target_db, table.name)
        have = {(i.columns, i.unique) for i in present}
        taken = {i.name for i in present}
        for index in list_indexes(source_db, table.name):
            if (index.columns, index.unique) in have or not all(index.columns) or quote(index.name) in declared:
                continue  # there already, on an expression (no columns to name), or the model's own
            name = index.name if index.name not in taken and _valid_name(index.name, limit) else None
            wanted.append((table.name, index.columns, index.unique, name))
    if wanted:
        create_indexes(target_db, wanted)


def _declared_sql(tenant_db: TenantDatabase, model: type[models.Model]) -> str:
    """The SQL Django's schema editor would create ``model``'s table with on ``tenant_db``: only collected."""
    with tenant_db.connection.schema_editor(collect_sql=True, atomic=False) as editor:
        editor.create_model(model)
    return "\n".join(editor.collected_sql)


def _valid_name(name: str, limit: int) -> bool:
    try:
        validate_identifier(name, "index name", limit)
    except ValueError:
        return False
    return True


def _plan(source_db: TenantDatabase, specs: list[Any], target_tables: dict[str, Any]) -> list[transfer.TableCopy]:
    """The source's tables, each paired with its model on the target: the tenant apps' tables it has,
    ``django_migrations``, and the run-time tables of ``specs`` (registered on both sides)."""
    source_tables = source_db.tables
    present = set(list_tables(source_db))
    plan = [
        transfer.TableCopy(m._meta.db_table, m, m, transfer.depends_on(m))
        for m in _model_tables()
        if m._meta.db_table in present
    ]
    migrations = django_private.migration_model()
    plan.append(transfer.TableCopy(migrations._meta.db_table, migrations, migrations, set()))
    for _source, name, _pk in specs:
        src, dst = source_tables[name].model, target_tables[name].model
        plan.append(transfer.TableCopy(name, src, dst, transfer.depends_on(src)))
    return plan


def _heartbeat(row: Tenant, me: str) -> Callable[[], None]:
    """A function telling the registry this process still works on ``row`` (a move's, an import's; at most
    every few seconds)."""
    last = [time.monotonic()]

    def beat() -> None:
        now = time.monotonic()
        if now - last[0] < HEARTBEAT_SECONDS:
            return
        last[0] = now
        if not Tenant.objects.filter(pk=row.pk, held_by=me).update(updated_at=timezone.now()):
            raise CopyFailed(f"{row.slug!r} was taken over by another process")

    return beat


# -- copying -----------------------------------------------------------------------------------


def _copy(
    plan: list[transfer.TableCopy],
    source_db: TenantDatabase,
    target_db: TenantDatabase,
    batch_size: int,
    beat: Callable[[], None],
    notify: Callable[[MoveStep], None],
) -> None:
    """Copy every table (``transfer.copy_tables``), reading the source in keyset batches."""
    counts = {t.name: t.source._base_manager.db_manager(source_db.alias).count() for t in plan}
    notify(MoveStep("copy", total=sum(counts.values())))

    def read(table: transfer.TableCopy):
        return transfer.batches(table.source, source_db.alias, table.source_fields, batch_size)

    def copied(table: transfer.TableCopy, rows: int) -> None:
        notify(MoveStep("rows", table.name, rows, counts[table.name]))
        beat()

    transfer.copy_tables(plan, target_db, read, copied)


def _carry_key_positions(plan: list[transfer.TableCopy], source_db: TenantDatabase, target_db: TenantDatabase) -> None:
    """Each table's generated keys continue on the target where the source's counter stands."""
    dialect, connection = source_db.dialect, source_db.connection

    def position(table: transfer.TableCopy) -> int | None:
        return dialect.next_key(connection, table.name, table.source._meta.pk.column)

    transfer.carry_key_positions(plan, target_db, position)


# -- verifying -----------------------------------------------------------------------------------


def _verify(
    tenant: Tenant,
    plan: list[transfer.TableCopy],
    source_db: TenantDatabase,
    target_db: TenantDatabase,
    batch_size: int,
    beat: Callable[[], None],
    notify: Callable[[MoveStep], None],
) -> list[TableCheck]:
    """Compare every table's rows and checksum on both sides; ``MoveFailed`` naming the tables that differ."""

    def expected(table: transfer.TableCopy) -> tuple[int, str]:
        return transfer.checksum(table.source, source_db.alias, table.source_fields, batch_size, beat)

    checks, differ = transfer.verify_tables(
        plan,
        target_db,
        expected,
        batch_size=batch_size,
        beat=beat,
        on_verified=lambda check: notify(MoveStep("verified", check.table, check.rows)),
    )
    if differ:
        raise MoveFailed(
            f"verification failed, so tenant {tenant.slug!r} stays on server {tenant.server!r}: " + "; ".join(differ)
        )
    return checks


# -- switching, and undoing -----------------------------------------------------------------------


def _switch(tenant: Tenant, move: Tenant, me: str) -> tuple[Tenant, Tenant]:
    """One registry transaction: the tenant's row to the target, the move's row to the source (a kept copy)."""
    now = timezone.now()
    with transaction.atomic(using=registry_db()):
        # The write first: on SQLite it takes the lock the rest runs under.
        if not Tenant.objects.filter(pk=move.pk, status=Tenant.Status.MOVING, held_by=me).update(updated_at=now):
            raise MoveFailed(f"move {move.slug!r} was taken over by another process before it could switch")
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        row = Tenant.objects.select_for_update().get(pk=move.pk)
        if (locked.server, locked.database_name, locked.status, locked.uid) != (
            tenant.server,
            tenant.database_name,
            Tenant.Status.READY,
            row.copy_of,
        ):
            raise MoveFailed(f"tenant {tenant.slug!r} was changed while it was being moved; it stays where it is")
        if not locked.maintenance:
            # Someone switched maintenance mode off during the copy: writes reached the source after
            # their table may have been copied. Switching would lose them.
            raise MoveFailed(
                f"maintenance mode of tenant {tenant.slug!r} was switched off while it was being moved, so "
                "writes may have reached the source after it was copied; it stays where it is (move it again)"
            )
        Tenant.objects.filter(pk=locked.pk).update(
            server=row.server,
            database_name=row.database_name,
            migrated_to=row.migrated_to,
            maintenance=row.maintenance,
            updated_at=now,
        )
        Tenant.objects.filter(pk=row.pk).update(
            server=locked.server,
            database_name=locked.database_name,
            migrated_to=locked.migrated_to,
            status=Tenant.Status.COPY,
            name=f"copy of {tenant.slug}"[:200],
            maintenance=False,
            held_by="",
            last_error="",
            updated_at=now,
        )
    return Tenant.objects.get(pk=tenant.pk), Tenant.objects.get(pk=move.pk)


def _rebind(tenant: Tenant, old: Iterable[TenantDatabase], specs: list[Any]) -> Tenant:
    """This process forgets the ``old`` bindings at once (other processes within ``ROUTING_CACHE_SECONDS``):
    the source, and the alias of the reserved row that filled the tenant's database.

    The run-time tables stay registered in this process, on the new binding.
    """
    ready_tenants.forget(tenant.slug)
    for binding in old:
        databases.forget_binding(binding)
    try:
        register_tables(tenant.database, specs)  # the tables exist: checked, not created
    except Exception:
        logger.exception("tenant %s: its run-time tables could not be registered again", tenant.slug)
    return tenant


def _undo(row: Tenant, me: str, undo: Callable[[], None]) -> None:
    """Undo a move (or an import) that stopped before it was done; if that fails too, leave its row
    ``failed`` for the next run to clean up."""
    if not Tenant.objects.filter(pk=row.pk, held_by=me, status__in=_OPEN).exists():
        return  # taken over by another process: it is that process's to finish or undo
    try:
        undo()
    except Exception as exc:
        logger.exception("could not undo %s", row.slug)
        Tenant.objects.filter(pk=row.pk, held_by=me).update(
            status=Tenant.Status.FAILED,
            held_by="",
            last_error=f"undoing {row.slug} failed: {type(exc).__name__}: {exc}"[:5000],
            updated_at=timezone.now(),
        )


def _discard(tenant: Tenant, move: Tenant) -> None:
    """The tenant's maintenance mode as before the move, the move's target dropped, its row deleted."""
    current = Tenant.objects.get(pk=tenant.pk)
    if (current.server, current.database_name) != (move.server, move.database_name):
        if current.maintenance != move.maintenance:
            set_maintenance(current, move.maintenance)
        _drop_target(current, move)
    Tenant.objects.filter(pk=move.pk, status__in=_OPEN).delete()


def _drop_target(tenant: Tenant, move: Tenant) -> None:
    """Drop the move's target if it is there and provably this move's (or an unmarked clone of a template)."""
    _refuse_own_database(tenant, move)
    _drop_filled(move)


def _drop_filled(row: Tenant) -> None:
    """Drop the database a move's (or an import's) row fills, if it is there and provably that row's
    (``_check_filled``), or an unmarked clone of a template."""
    target_db = row.database
    if not target_db.exists():
        databases.forget_binding(target_db)
        credentials.drop_tenant_role(target_db.server, target_db.name)
        return
    if not ownership.is_unclaimed_clone(target_db):
        _check_filled(row, target_db)
    target_db.close()
    databases.drop_bound_database(target_db)
    credentials.drop_tenant_role(target_db.server, target_db.name)


# -- kept copies --------------------------------------------------------------------------------


def kept_copies(slug_or_tenant: Tenant | str) -> list[Tenant]:
    """The registry rows of the databases ``move_tenant`` moved the tenant away from and kept, oldest first."""
    tenant = _row(slug_or_tenant)
    return list(Tenant.objects.filter(copy_of=tenant.uid, status=Tenant.Status.COPY).order_by("created_at", "pk"))


def drop_kept_copies(slug_or_tenant: Tenant | str) -> list[Tenant]:
    """Drop every kept copy of the tenant (its marker checked) and delete its row; the rows dropped.

    Never the tenant's own database: a copy recorded where the tenant lives
    is refused. A copy whose database is already gone just loses its row.
    """
    tenant = _row(slug_or_tenant)
    dropped = []
    for copy in kept_copies(tenant):
        _drop_copy(tenant, copy)
        dropped.append(copy)
    return dropped


def _drop_copy(tenant: Tenant, copy: Tenant) -> None:
    if (copy.server, copy.database_name) == (tenant.server, tenant.database_name) or copy.copy_of != tenant.uid:
        raise NotOurDatabase(
            f"{copy.slug!r} records tenant {tenant.slug!r}'s own database {copy.database_name!r} on server "
            f"{copy.server!r}: it is not dropped"
        )
    drop_owned_database(copy)  # NotOurDatabase unless the marker holds the tenant's uid
    Tenant.objects.filter(pk=copy.pk, status=Tenant.Status.COPY).delete()
