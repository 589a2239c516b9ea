"""Tenant life cycle: register (provision), migrate, archive, purge.

``register_tenant`` is a small state machine over the registry row:

1. the row is created with status ``provisioning`` (committed at once, so a
   crash leaves a row that is visibly not ready);
2. under a lock on the row (a registry transaction: ``SELECT ... FOR UPDATE``
   where the database has row locks, a write lock on SQLite) the database
   is created (idempotent; where DDL cannot roll back, the database an
   interrupted attempt left for a never-ready tenant is created again), the
   tenant apps' tables are created and the ``TENANT_TABLES`` registered;
3. the status becomes ``ready`` as the very last write of that transaction.

Re-running it resumes from whatever a crash left; two processes registering
the same slug serialize on the lock and the second finds the tenant ready.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone
from django.utils.module_loading import import_string

from . import conf, credentials, databases, ownership, registry
from .databases import TenantDatabase, database_name
from .exceptions import TenantNotFound, TenantSchemaError
from .migration_plan import Key, MigrationPlan, migration_plan
from .models import Tenant
from .plugins import get_plugins
from .registry import check_server, get_tenant, normalize_slug, ready_tenants, registry_db, tenant_app_labels
from .schema.batch import DDLBatch
from .schema.ddl import register_tables
from .servers import get_server
from .signals import tenant_archived, tenant_dropped, tenant_provisioned

logger = logging.getLogger(__name__)

__all__ = [
    "MigrationReport",
    "aget_or_create_tenant_db",
    "drop_tenant_db",
    "get_or_create_tenant_db",
    "TenantMigration",
    "aregister_tenant",
    "archive_tenant",
    "get_tenant",
    "migrate_tenant",
    "migrate_tenants",
    "purge_tenant",
    "register_tenant",
]


def _row(tenant_or_slug: Tenant | str) -> Tenant:
    slug = tenant_or_slug.slug if isinstance(tenant_or_slug, Tenant) else tenant_or_slug
    return get_tenant(slug)


# -- register -----------------------------------------------------------------


def register_tenant(slug: str, *, server: str | None = None, name: str = "") -> Tenant:
    """Create the tenant ``slug`` (or finish creating it) and return it, ready.

    Idempotent: a ready tenant is returned as is. On failure the row is left
    ``failed`` with ``last_error`` set and the error is re-raised; calling
    again resumes. Sends ``tenant_provisioned`` when this call made it ready.
    """
    slug = normalize_slug(slug)
    srv = get_server(server)
    tenant, _ = Tenant.objects.get_or_create(
        slug=slug, defaults={"name": name, "server": srv.key, "database_name": database_name(slug, srv)}
    )
    if tenant.status == Tenant.Status.ARCHIVED:
        raise TenantSchemaError(
            f"tenant {slug!r} is archived (its data is kept); purge_tenant({slug!r}) before registering it again"
        )
    check_server(tenant, None if server is None else srv.key)
    if tenant.status == Tenant.Status.READY:
        return tenant

    using = registry_db()
    try:
        with transaction.atomic(using=using):
            # Take the lock with a write first: SQLite has no row locks, and a
            # write makes the second registrant wait here for the first.
            claimed = Tenant.objects.filter(
                pk=tenant.pk, status__in=[Tenant.Status.PROVISIONING, Tenant.Status.FAILED]
            ).update(status=Tenant.Status.PROVISIONING)
            locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
            if not claimed:  # another process finished (or archived) it meanwhile
                if locked.status == Tenant.Status.ARCHIVED:
                    raise TenantSchemaError(f"tenant {slug!r} was archived while this call waited for it")
                return locked
            provision(locked)
            locked.status = Tenant.Status.READY
            locked.last_error = ""
            locked.provisioned_at = timezone.now()
            if name and not locked.name:
                locked.name = name
            locked.save(update_fields=["status", "last_error", "provisioned_at", "name", "updated_at"])
    except Exception as exc:
        _mark_failed(tenant.pk, exc)
        raise
    finally:
        # Onboarding many tenants from one loop must not hold a connection to each.
        tenant.database.close()
    tenant_provisioned.send(sender=Tenant, tenant=locked)
    return locked


async def aregister_tenant(slug: str, *, server: str | None = None, name: str = "") -> Tenant:
    """Async twin of ``register_tenant`` (runs it in Django's sync thread)."""
    return await sync_to_async(register_tenant)(slug, server=server, name=name)


def _mark_failed(pk: int, exc: BaseException) -> None:
    message = _describe(exc)[:5000]
    try:
        Tenant.objects.filter(pk=pk).exclude(status=Tenant.Status.READY).update(
            status=Tenant.Status.FAILED, last_error=message, updated_at=timezone.now()
        )
    except DatabaseError:  # the registry itself is down: the original error matters more
        logger.exception("could not record the failure of tenant %s", pk)


def provision(tenant: Tenant) -> None:
    """Bring the tenant's database to the current schema; safe to repeat.

    The registry row is not changed here (``register_tenant`` does that).
    """
    tenant_db = tenant.database
    server = tenant_db.server
    hook = get_plugins().hook
    fresh = hook.tenant_schema_create_database(dialect=server.dialect, server=server, name=tenant_db.name)
    if fresh:
        _mark_or_undo(tenant_db, tenant)
    else:
        ownership.check_owner(tenant_db, tenant)  # never adopt or recreate someone else's database
    # Before anything connects as the tenant: with ?tenant_roles=true the
    # tenant's alias logs in as its own role, which this creates or re-keys.
    credentials.ensure_tenant_role(server, tenant_db.name)
    if (
        not fresh
        and tenant.provisioned_at is None
        and not tenant_db.can_rollback_ddl
        and ownership.was_created_here(tenant_db)  # never a claimed database: it holds someone's data
    ):
        recreate_database(tenant_db)
        ownership.write_marker(tenant_db, tenant)
        credentials.ensure_tenant_role(server, tenant_db.name)
        fresh = True
    plan = migration_plan()
    # A database this call created is empty: no need to ask it what it has.
    applied = set() if fresh else applied_migrations(tenant_db)
    if not applied and plan.direct_ok:
        create_from_models(tenant_db, plan, fresh=bool(fresh))
    elif plan.pending(applied or set()):
        migrate_tenant(tenant)
    create_tenant_tables(tenant_db)


def _mark_or_undo(tenant_db: TenantDatabase, tenant: Tenant) -> None:
    """Write the ownership marker into the database this call just created, or drop it again.

    If writing the marker fails (the server dropped the connection), the
    empty database this call made is dropped, so a retry creates it afresh
    instead of finding an unmarked database it must refuse. Only a process
    killed between the two steps leaves one (``tenant_claim`` resolves it).
    """
    try:
        ownership.write_marker(tenant_db, tenant)
    except BaseException:
        server = tenant_db.server
        try:
            tenant_db.close_everywhere()
            get_plugins().hook.tenant_schema_drop_database(dialect=server.dialect, server=server, name=tenant_db.name)
        except Exception:
            logger.exception("tenant %s: could not drop the unmarked database %s", tenant.slug, tenant_db.name)
        raise


def recreate_database(tenant_db: TenantDatabase) -> None:
    """Drop the database of a tenant that was never ready and create it again.

    Where DDL cannot roll back, an interrupted attempt leaves tables (a
    half-applied migration, some ``TENANT_TABLES``) that every re-run would
    trip over. Nothing was ever served from this database, so starting over
    loses nothing and covers every path (models, migrations, dataclass tables).
    """
    server = tenant_db.server
    hook = get_plugins().hook
    logger.warning(
        "tenant %s: recreating database %s left by an interrupted provisioning", tenant_db.slug, tenant_db.name
    )
    tenant_db.close_everywhere()
    hook.tenant_schema_drop_database(dialect=server.dialect, server=server, name=tenant_db.name)
    hook.tenant_schema_create_database(dialect=server.dialect, server=server, name=tenant_db.name)


def tenant_table_specs() -> list[tuple[Any, ...]]:
    """``TENANT_TABLES`` with each dotted path imported."""
    specs = []
    for raw in conf.get("TENANT_TABLES"):
        parts = (raw,) if isinstance(raw, str) else tuple(raw)
        specs.append((import_string(parts[0]), *parts[1:]))
    return specs


def create_tenant_tables(tenant_db: TenantDatabase) -> None:
    specs = tenant_table_specs()
    if specs:
        register_tables(tenant_db, specs)


def tenant_models() -> list:
    """Concrete, managed models of the tenant apps (auto-created M2M tables come with them)."""
    from django.apps import apps

    out = []
    for label in sorted(tenant_app_labels()):
        for model in apps.get_app_config(label).get_models():
            if model._meta.managed and not model._meta.proxy and not model._meta.swapped:
                out.append(model)
    return out


def create_from_models(tenant_db: TenantDatabase, plan: MigrationPlan, *, fresh: bool = False) -> None:
    """Create the tenant apps' tables from the current models and record every migration.

    One ``DDLBatch``: a single transaction where DDL rolls back; elsewhere
    a failure undoes the tables this call created, and the migrations are
    recorded last, so "recorded" means "complete".
    """
    connection = tenant_db.connection
    models = tenant_models()
    recorder = MigrationRecorder(connection)
    rows = [recorder.Migration(app=app, name=name) for app, name in plan.records()]
    if not models:
        return  # no tenant apps: no tables to create, nothing to record yet
    with DDLBatch(tenant_db, hooks=False) as batch:
        if fresh or not recorder.has_table():
            batch.create_table(recorder.Migration)
        for model in models:
            batch.create_table(model)
        if batch.atomic:
            recorder.migration_qs.bulk_create(rows)
    if not batch.atomic:
        recorder.migration_qs.bulk_create(rows)  # last: "recorded" means "complete"


def applied_migrations(tenant_db: TenantDatabase) -> set[Key] | None:
    """The tenant's ``django_migrations`` rows in one query; ``None`` without that table."""
    connection = tenant_db.connection
    qs = MigrationRecorder.Migration.objects.using(tenant_db.alias).values_list("app", "name")
    try:
        return set(qs)
    except DatabaseError:
        with connection.cursor() as cursor:
            if MigrationRecorder.Migration._meta.db_table in connection.introspection.table_names(cursor):
                raise
        return None


# -- migrate ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TenantMigration:
    """What migrating one tenant did."""

    slug: str
    applied: list[str] = dataclasses.field(default_factory=list)
    skipped: bool = False
    error: str | None = None


@dataclasses.dataclass
class MigrationReport:
    """Per-tenant results of ``migrate_tenants``, in the order they finished."""

    results: list[TenantMigration] = dataclasses.field(default_factory=list)

    @property
    def failures(self) -> list[TenantMigration]:
        return [r for r in self.results if r.error is not None]

    @property
    def ok(self) -> bool:
        return not self.failures


def migrate_tenant(tenant: Tenant) -> list[str]:
    """Apply the pending migrations to one tenant; the ``app.name`` labels applied.

    Runs inside the tenant's context, so ``RunPython`` code that uses the
    default manager reaches the tenant's database.
    """
    tenant_db = tenant.database
    applied: list[str] = []

    whole = False

    def progress(action, migration=None, fake=False):
        if action == "apply_success":
            applied.append(f"{migration.app_label}.{migration.name}")
            if whole:
                # As if committed between migrations: deferred foreign-key checks fire now, so
                # a data migration followed by an ALTER TABLE works as under Django's migrate.
                tenant_db.connection.check_constraints()

    token = registry.activate(tenant)  # archived and half-registered tenants too: no status check
    try:
        executor = MigrationExecutor(tenant_db.connection, progress_callback=progress)
        targets = executor.loader.graph.leaf_nodes()
        plan = executor.migration_plan(targets)
        # Where DDL rolls back, one transaction around the whole plan: Django
        # records a migration with deferred SQL only after its own block
        # commits, so a connection lost in between would leave it applied
        # but unrecorded. Non-atomic migrations keep Django's own handling.
        whole = (
            tenant_db.dialect.can_migrate_in_one_transaction
            and tenant_db.can_rollback_ddl
            and all(migration.atomic for migration, _ in plan)
        )
        try:
            with transaction.atomic(using=tenant_db.alias) if whole else contextlib.nullcontext():
                executor.migrate(targets, plan=plan)
        except Exception as exc:
            # A failure inside the schema editor's exit can leave this thread's
            # connection marked "in a transaction" on a dead socket: drop it,
            # so the next use of the tenant connects afresh.
            databases.discard_connection(tenant_db.alias)
            if not tenant_db.can_rollback_ddl:
                failed = next(
                    (f"{m.app_label}.{m.name}" for m, _ in plan if f"{m.app_label}.{m.name}" not in applied),
                    "a migration",
                )
                exc.partly_applied = (  # type: ignore[attr-defined] - read by the fleet report
                    f"{tenant_db.dialect.name} cannot roll DDL back, so {failed} may be partly applied: "
                    "compare the database with `manage.py sqlmigrate`, finish or undo it by hand, then "
                    "record it with `migrate --fake`"
                )
            raise
    finally:
        registry.deactivate(token)
    return applied


MIGRATABLE = (Tenant.Status.READY, Tenant.Status.ARCHIVED)


def migrate_tenants(
    slugs: Iterable[str] | None = None,
    *,
    jobs: int = 1,
    progress: bool | Callable[[TenantMigration], Any] | None = None,
) -> MigrationReport:
    """Apply pending migrations to every ready or archived tenant (or to ``slugs``).

    Tenants with nothing to apply are found with one query each and skipped;
    the others are migrated ``jobs`` at a time in worker processes (``jobs=1``:
    in this process, one after the other). A failing tenant does not stop
    the others: look at ``report.failures``. ``progress=True`` shows a tqdm
    bar on stderr; a callable is called with each ``TenantMigration``.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    if slugs is None:
        tenants = list(Tenant.objects.filter(status__in=MIGRATABLE).order_by("slug"))
    else:
        tenants = [get_tenant(slug) for slug in slugs]  # TenantNotFound before any work
    report = MigrationReport()
    notify = _progress(progress, len(tenants))
    try:

        def done(result: TenantMigration) -> None:
            report.results.append(result)
            notify(result)

        plan = migration_plan()
        todo: list[Tenant] = []
        for outcome in _checked(tenants, plan, jobs):
            if isinstance(outcome, Tenant):
                todo.append(outcome)
            else:
                done(outcome)
        if jobs == 1 or len(todo) <= 1:
            for tenant in todo:
                done(_migrate_one(tenant.slug, tenant.server, tenant.database_name))
        else:
            _migrate_in_processes(todo, jobs, done)
    finally:
        getattr(notify, "close", lambda: None)()
    return report


def _check(tenant: Tenant, plan: MigrationPlan) -> Tenant | TenantMigration:
    """The tenant if it has migrations to apply, else its (skipped or failed) result."""
    if tenant.status not in MIGRATABLE:
        return TenantMigration(tenant.slug, error=f"tenant is {tenant.status}; register_tenant() completes it")
    try:
        with _released(tenant.database):
            ownership.check_owner(tenant.database, tenant)  # never migrate someone else's database
            applied = applied_migrations(tenant.database) or set()
    except Exception as exc:  # noqa: BLE001 - reported per tenant
        return TenantMigration(tenant.slug, error=_describe(exc))
    return tenant if plan.pending(applied) else TenantMigration(tenant.slug, skipped=True)


def _checked(tenants: list[Tenant], plan: MigrationPlan, jobs: int):
    """``_check`` for each tenant; ``jobs`` threads at a time (connecting is the slow part)."""
    if jobs == 1:
        return (_check(tenant, plan) for tenant in tenants)
    from concurrent.futures import ThreadPoolExecutor

    def check(tenant: Tenant):
        try:
            return _check(tenant, plan)
        finally:
            connections.close_all()  # this worker thread's default connection, if any

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(check, tenants))


class _released:
    """Close the tenant's connection afterwards, and forget its alias if we added it."""

    def __init__(self, tenant_db: TenantDatabase) -> None:
        self.tenant_db = tenant_db

    def __enter__(self) -> TenantDatabase:
        self.added = [a for a in (self.tenant_db.alias, self.tenant_db.admin_alias) if a not in connections.settings]
        return self.tenant_db

    def __exit__(self, *exc_info) -> None:
        self.tenant_db.close()
        for alias in self.added:
            databases.unregister_alias(alias)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _migrate_one(slug: str, server: str, database_name_: str) -> TenantMigration:
    tenant = Tenant(slug=slug, server=server, database_name=database_name_, status=Tenant.Status.READY)
    try:
        with _released(tenant.database):
            return TenantMigration(slug, applied=migrate_tenant(tenant))
    except Exception as exc:
        logger.exception("migrating tenant %s failed", slug)
        hint = getattr(exc, "partly_applied", None)
        return TenantMigration(slug, error=_describe(exc) + (f"; {hint}" if hint else ""))


def _progress(progress, total: int):
    if progress is None or progress is False:
        return lambda result: None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=total, file=sys.stderr, unit="tenant", desc="migrating")

        def update(result: TenantMigration) -> None:
            bar.set_postfix_str(result.slug, refresh=False)
            bar.update(1)

        update.close = bar.close  # type: ignore[attr-defined]
        return update
    if callable(progress):
        return progress
    raise TypeError(f"progress must be None, True or a callable, not {progress!r}")


# Worker processes are spawned (never forked: a forked child would share the
# parent's database sockets) and get the parent's relevant settings.
WORKER_SETTINGS = ("TENANT_SCHEMA", "MIGRATION_MODULES", "INSTALLED_APPS", "DATABASE_ROUTERS", "DATABASES")
TASKS_PER_WORKER = 50  # a fresh process now and then keeps memory bounded


def _migrate_in_processes(todo: list[Tenant], jobs: int, done: Callable[[TenantMigration], None]) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from . import fleet_worker

    module = os.environ.get("DJANGO_SETTINGS_MODULE") or getattr(settings, "SETTINGS_MODULE", None)
    if not module:
        raise TenantSchemaError("migrate_tenants(jobs>1) needs DJANGO_SETTINGS_MODULE for its worker processes")
    overrides = {key: getattr(settings, key) for key in WORKER_SETTINGS if hasattr(settings, key)}
    overrides["DATABASES"] = {
        alias: value
        for alias, value in overrides.get("DATABASES", {}).items()
        if not alias.startswith((databases.ALIAS_PREFIX, databases.INTERNAL_ALIAS_PREFIX))
    }
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=fleet_worker.init,
        initargs=(module, overrides),
        max_tasks_per_child=TASKS_PER_WORKER,
    ) as pool:
        futures = {pool.submit(_migrate_one, t.slug, t.server, t.database_name): t.slug for t in todo}
        for future in as_completed(futures):
            try:
                done(future.result())
            except Exception as exc:  # noqa: BLE001 - a worker died (killed, out of memory)
                done(TenantMigration(futures[future], error=f"worker process failed: {_describe(exc)}"))


# -- archive / purge ----------------------------------------------------------


def archive_tenant(tenant_or_slug: Tenant | str) -> Tenant:
    """Mark the tenant archived (no longer served; its data stays) and close its connections."""
    tenant = _row(tenant_or_slug)
    tenant.status = Tenant.Status.ARCHIVED
    tenant.save(update_fields=["status", "updated_at"])
    databases.close_alias_connections(tenant.database.alias)
    tenant_archived.send(sender=Tenant, tenant=tenant)
    return tenant


def purge_tenant(tenant_or_slug: Tenant | str) -> bool:
    """Stop serving the tenant, drop its database (or schema), then delete its row.

    The row is archived (and forgotten by this process's routing cache)
    before anything is dropped, so a purge that fails half-way leaves an
    unserved row, never a served row pointing at a dropped database, and
    never a database with no row; calling it again finishes the purge. A
    database whose ownership marker is not this tenant's is never dropped:
    ``NotOurDatabase``, and the row stays archived. Call it outside a
    registry transaction: the archived status must be committed before the
    drop. True when a database was dropped.
    """
    tenant = _row(tenant_or_slug)
    if tenant.status != Tenant.Status.ARCHIVED:
        tenant.status = Tenant.Status.ARCHIVED
        tenant.save(update_fields=["status", "updated_at"])
    ready_tenants.forget(tenant.slug)
    dropped = drop_owned_database(tenant)
    tenant.delete()
    tenant_dropped.send(sender=Tenant, tenant=tenant)
    return dropped


def drop_owned_database(tenant: Tenant) -> bool:
    """Drop the tenant's database (if it is there and its marker is the tenant's) and its role.

    ``NotOurDatabase``, with nothing dropped, when the marker is not the
    tenant's. The registry row is not touched. True when a database was dropped.
    """
    tenant_db = tenant.database
    dropped = False
    if tenant_db.exists():
        ownership.check_owner(tenant_db, tenant)
        tenant_db.close()
        dropped = databases.drop_bound_database(tenant_db)
    else:
        databases.forget_binding(tenant_db)
    credentials.drop_tenant_role(tenant_db.server, tenant_db.name)  # also when a retried purge finds no database
    return dropped


# -- the seed API: a tenant's database by slug --------------------------------


def get_or_create_tenant_db(slug: str, server: str | None = None) -> TenantDatabase:
    """The tenant's database, registering the tenant first when it is not registered.

    The same tenant as ``register_tenant(slug, server=server)``: a registry
    row, its own database with the tenant apps' tables, the same database
    from every process. A registered tenant's database is returned as it is
    (naming another server than the registered one is an error); an
    unfinished registration is completed; an archived tenant is an error.
    """
    return register_tenant(slug, server=server).database


async def aget_or_create_tenant_db(slug: str, server: str | None = None) -> TenantDatabase:
    """Async twin of ``get_or_create_tenant_db``."""
    return await sync_to_async(get_or_create_tenant_db)(slug, server)


def drop_tenant_db(slug: str, server: str | None = None) -> bool:
    """Purge the tenant: drop its database and its registry row (``purge_tenant``).

    False when no such tenant is registered. ``server``, when given, must be
    the registered one. Dropping data is always explicit: nothing in
    tenant-schema calls this except ``tenant_drop --purge`` and your code.
    """
    try:
        tenant = get_tenant(slug)
    except TenantNotFound:
        return False
    check_server(tenant, server)
    return purge_tenant(tenant)


def claim_tenant_database(slug: str) -> Tenant:
    """Write this tenant's ownership marker into a database that has none.

    For an operator who has checked that the database under the tenant's
    name really is the tenant's: one made by a tenant-schema version without
    markers, or left by a registration that died between creating the
    database and marking it. A database marked for another tenant is never
    claimed; a missing one is an error. Nothing else is changed: run
    ``register_tenant`` afterwards to finish an unfinished registration.
    """
    tenant = get_tenant(slug)
    tenant_db = tenant.database
    if not tenant_db.exists():
        raise TenantSchemaError(
            f"tenant {tenant.slug!r} has no database {tenant_db.name!r} on server {tenant_db.server.key!r} to claim"
        )
    marker = ownership.read_marker(tenant_db)
    if marker is not None:
        ownership.check_owner(tenant_db, tenant)  # NotOurDatabase when it is someone else's
        return tenant  # already this tenant's
    ownership.write_marker(tenant_db, tenant, origin="claimed")
    tenant_db.close()
    return tenant
