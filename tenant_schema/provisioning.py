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
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management.sql import emit_post_migrate_signal
from django.db import DatabaseError, IntegrityError, OperationalError, connections, transaction
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone
from django.utils.module_loading import import_string

from . import conf, credentials, databases, django_private, ownership, registry
from .databases import TenantDatabase, database_name
from .dialects import ISOLATION_DATABASE
from .exceptions import TenantNotFound, TenantSchemaError
from .migration_plan import Key, MigrationPlan, migration_plan
from .models import Tenant
from .names import POOL_SLUG_PREFIX, POOL_SLUG_RE
from .plugins import get_plugins
from .registry import check_server, get_tenant, normalize_slug, ready_tenants, registry_db, tenant_app_labels
from .schema.batch import DDLBatch
from .schema.ddl import register_tables
from .servers import Server, get_server, server_urls
from .signals import pre_tenant_migrate, tenant_archived, tenant_dropped, tenant_migrated, tenant_provisioned

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
    "restore_tenant",
    "set_maintenance",
]


def _row(tenant_or_slug: Tenant | str) -> Tenant:
    """The registry's current row: by slug, or re-read by key for a ``Tenant`` (a pool row too)."""
    if isinstance(tenant_or_slug, Tenant):
        try:
            return Tenant.objects.get(pk=tenant_or_slug.pk)
        except Tenant.DoesNotExist:
            raise TenantNotFound(f"no tenant {tenant_or_slug.slug!r} is registered") from None
    return get_tenant(tenant_or_slug)


# -- register -----------------------------------------------------------------


@registry.needs_registry
def register_tenant(slug: str, *, server: str | None = None, name: str = "") -> Tenant:
    """Create the tenant ``slug`` (or finish creating it) and return it, ready.

    Idempotent: a ready tenant is returned as is. When the server keeps a
    warm pool (``?pool=N``) a new tenant takes one of its databases, in one
    registry transaction and with no DDL; otherwise (or when the pool is
    empty) its database is created here. On failure the row is left
    ``failed`` with ``last_error`` set and the error is re-raised; calling
    again resumes. Sends ``tenant_provisioned`` when this call made it ready.
    """
    slug = normalize_slug(slug)
    srv = get_server(server)
    migration_plan().check_complete()  # before any row or database exists
    tenant = Tenant.objects.filter(slug=slug).first() if srv.pool else None
    if tenant is None and srv.pool:
        claimed = claim_pooled(slug, srv, name=name)
        if claimed is not None:
            tenant_provisioned.send(sender=Tenant, tenant=claimed)
            return claimed
    if tenant is None:
        tenant, _ = Tenant.objects.get_or_create(
            slug=slug, defaults={"name": name, "server": srv.key, "database_name": database_name(slug, srv)}
        )
    if tenant.status == Tenant.Status.ARCHIVED:
        raise TenantSchemaError(
            f"tenant {slug!r} is archived (its data is kept): `manage.py tenant_restore {slug}` serves it again, "
            f"`manage.py tenant_drop {slug} --purge` deletes it so the slug can be registered anew"
        )
    check_server(tenant, None if server is None else srv.key)
    if tenant.status == Tenant.Status.READY:
        return tenant
    ready = _provision_row(tenant, Tenant.Status.READY, name=name)
    if ready.status == Tenant.Status.READY:
        tenant_provisioned.send(sender=Tenant, tenant=ready)
    return ready


def _provision_row(tenant: Tenant, final: str, *, name: str = "") -> Tenant:
    """Provision the database of a ``provisioning``/``failed`` row and give the row status ``final``.

    Under a lock on the row (a registry transaction), so two processes
    finishing the same row serialize and the second finds it done. The
    status and the migration fingerprint are the last writes of that
    transaction. On failure the row is marked ``failed`` and the error re-raised.
    """
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
                    raise TenantSchemaError(f"tenant {tenant.slug!r} was archived while this call waited for it")
                return locked
            provision(locked)
            locked.status = final
            locked.last_error = ""
            locked.provisioned_at = timezone.now()
            locked.migrated_to = migration_plan().fingerprint
            if name and not locked.name:
                locked.name = name
            locked.save(update_fields=["status", "last_error", "provisioned_at", "name", "migrated_to", "updated_at"])
    except Exception as exc:
        _mark_failed(tenant.pk, exc)
        raise
    finally:
        # Onboarding many tenants from one loop must not hold a connection to each.
        tenant.database.close()
    return locked


# -- the warm pool ---------------------------------------------------------------


def claim_pooled(slug: str, server: Server, *, name: str = "") -> Tenant | None:
    """Give ``slug`` one of ``server``'s pooled databases; ``None`` when the pool has none.

    One registry statement: the pooled row at the current migration plan
    becomes the tenant's ready row (its slug, name and status change; its
    database, ownership marker and ``uid`` stay). Candidates are read with
    ``SELECT ... FOR UPDATE SKIP LOCKED`` where the registry has row locks;
    the update is conditional on the row still being pooled, so two sign-ups
    never get one database on any registry. No DDL and no tenant connection.
    """
    fingerprint = migration_plan().fingerprint
    pooled = Tenant.objects.filter(status=Tenant.Status.POOLED, server=server.key, migrated_to=fingerprint)
    using = registry_db()
    skip_locked = connections[using].features.has_select_for_update_skip_locked
    for _attempt in range(3):
        try:
            with transaction.atomic(using=using):
                candidates = pooled.select_for_update(skip_locked=True) if skip_locked else pooled
                row = candidates.order_by("pk").first()
                if row is None:
                    return None
                taken = _take(pooled.filter(pk=row.pk), slug, name)
        except IntegrityError:
            return None  # ``slug`` was registered meanwhile: the caller finds that row
        except OperationalError:  # SQLite's "database is locked" under concurrent claims: the pool is busy
            logger.warning("claiming a pooled database on server %s failed; creating one", server.key, exc_info=True)
            return None
        if taken:
            tenant = Tenant.objects.get(pk=row.pk)
            ready_tenants.forget(slug)
            return tenant
    return None


def _take(row, slug: str, name: str) -> int:
    """The claim's one write: the pooled row becomes ``slug``'s ready row (1), unless taken meanwhile (0)."""
    now = timezone.now()
    return row.update(slug=slug, name=name, status=Tenant.Status.READY, provisioned_at=now, updated_at=now)


def drain_pool(server: str | None = None) -> int:
    """Drop every pooled database of every server (or of ``server``) and delete its row; how many.

    Only pooled (never claimed) databases, each after its ownership marker
    is checked; unfinished pool rows are dropped too. Tenants are never touched.
    """
    rows = pool_rows().exclude(status__in=[Tenant.Status.READY, Tenant.Status.ARCHIVED])
    if server is not None:
        rows = rows.filter(server=get_server(server).key)
    drained = 0
    for row in rows.order_by("pk"):
        # Taken out of the pool first: archived, which neither a claim nor a
        # fill (resuming unfinished rows) touches; then dropped.
        if not Tenant.objects.filter(pk=row.pk, status=row.status).update(status=Tenant.Status.ARCHIVED):
            continue  # claimed meanwhile
        try:
            drop_owned_database(row)
        except Exception:
            logger.exception("could not drop pooled database %s", row.database_name)
            continue
        Tenant.objects.filter(pk=row.pk, status=Tenant.Status.ARCHIVED).delete()
        drained += 1
    return drained


def pool_rows():
    """The registry rows of pooled databases (finished or not): slugs of the reserved ``pool-<hex>`` shape."""
    return Tenant.objects.filter(slug__regex=rf"^{POOL_SLUG_RE.pattern}$")


def pool_slug() -> str:
    """A fresh slug for a pooled row (a shape ``normalize_slug`` refuses for tenants)."""
    return f"{POOL_SLUG_PREFIX}{uuid.uuid4().hex[:16]}"


@dataclasses.dataclass(frozen=True)
class PoolStatus:
    """One server's warm pool: how many databases it should keep, has ready, and has behind the plan."""

    server: str
    size: int
    ready: int
    stale: int
    unfinished: int

    @property
    def missing(self) -> int:
        return max(self.size - self.ready - self.stale, 0)


def pool_status(server: str | None = None) -> list[PoolStatus]:
    """The warm pool of every server that has one (or of ``server``), in one registry query."""
    servers = [get_server(server)] if server is not None else [get_server(key) for key in server_urls()]
    fingerprint = migration_plan().fingerprint
    counts: dict[tuple[str, str, bool], int] = {}
    rows = pool_rows().filter(server__in=[s.key for s in servers])
    for key, status, migrated_to in rows.values_list("server", "status", "migrated_to"):
        current = migrated_to == fingerprint
        counts[(key, status, current)] = counts.get((key, status, current), 0) + 1
    out = []
    for srv in servers:
        if not srv.pool and server is None:
            continue
        pooled = Tenant.Status.POOLED
        out.append(
            PoolStatus(
                server=srv.key,
                size=srv.pool,
                ready=counts.get((srv.key, pooled, True), 0),
                stale=counts.get((srv.key, pooled, False), 0),
                unfinished=sum(n for (k, status, _), n in counts.items() if k == srv.key and status != pooled),
            )
        )
    return out


def fill_pool(server: str | None = None) -> int:
    """Provision pooled databases until every server's pool (or ``server``'s) is full; how many were made.

    Run it from cron or a task queue (``manage.py tenant_pool``), never on a
    request: each database is created and migrated here. A pooled row is
    created ``provisioning`` and becomes ``pooled`` as the last write of its
    registry transaction, like a tenant's; rows an interrupted fill left are
    finished first. Pooled databases that are behind the migration plan are
    not counted as ready: ``tenant_migrate`` brings them up to date.
    """
    migration_plan().check_complete()
    made = 0
    for status in pool_status(server):
        srv = get_server(status.server)
        unfinished = (
            pool_rows()
            .filter(
                server=srv.key,
                status__in=[Tenant.Status.PROVISIONING, Tenant.Status.FAILED],
            )
            .order_by("pk")
        )
        unfinished = list(unfinished)
        rows = unfinished + [None] * max(status.missing - len(unfinished), 0)
        for row in rows:
            if row is None:
                slug = pool_slug()
                row = Tenant.objects.create(slug=slug, server=srv.key, database_name=database_name(slug, srv))
            try:
                _provision_row(row, Tenant.Status.POOLED)
            except Exception:
                logger.exception("could not provision pooled database %s on server %s", row.database_name, srv.key)
                continue
            made += 1
    return made


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

    A new database is cloned from the server's clone template where the
    dialect can (``can_clone_databases``): the tables, the recorded
    migrations and the ``TENANT_TABLES`` come with it. Otherwise it is
    created and its tables built. The registry row is not changed here
    (``register_tenant`` does that).
    """
    tenant_db = tenant.database
    server = tenant_db.server
    hook = get_plugins().hook
    plan = migration_plan()
    held = ""  # the plan fingerprint a clone's template marker held
    cloned = tenant.provisioned_at is None and clone_into(tenant_db, plan)
    fresh = cloned or hook.tenant_schema_create_database(dialect=server.dialect, server=server, name=tenant_db.name)
    if fresh:
        held = _mark_or_undo(tenant_db, tenant, cloned=cloned)
    elif tenant.provisioned_at is None and ownership.is_unclaimed_clone(tenant_db):
        # A clone an interrupted attempt made and did not mark: complete, and nobody's yet.
        held = ownership.rewrite_marker(tenant_db, tenant)
        cloned = fresh = True
    else:
        ownership.check_owner(tenant_db, tenant)  # never adopt or recreate someone else's database
    if cloned and held != plan.fingerprint:
        # A template of another plan (another process rebuilt it, a deploy in
        # progress): the clone is the tenant's, but is migrated below like
        # any existing database, never recorded as at this plan.
        _templates.pop(server.key, None)
        cloned = fresh = False
    # Before anything connects as the tenant: with ?tenant_roles=true the
    # tenant's alias logs in as its own role, which this creates or re-keys.
    credentials.ensure_tenant_role(server, tenant_db.name)
    if cloned:
        with _announcing(tenant, plan.records()):
            return  # the template held the plan and the TENANT_TABLES: nothing to build
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
    # A database this call created is empty: no need to ask it what it has.
    applied = set() if fresh else applied_migrations(tenant_db)
    if not applied and plan.direct_ok:
        with _announcing(tenant, plan.records()):
            create_from_models(tenant_db, plan, fresh=bool(fresh))
            create_tenant_tables(tenant_db)
        return
    if plan.pending(applied or set()):
        migrate_tenant(tenant)
    elif tenant.provisioned_at is None:
        # A registration resumed after everything was built: its receivers
        # (post_migrate seeding) may not have run, or may have failed. They
        # run again, as Django's post_migrate receivers expect to.
        with _announcing(tenant, [], post_migrate=True):
            create_tenant_tables(tenant_db)
        return
    create_tenant_tables(tenant_db)


@contextlib.contextmanager
def _announcing(tenant: Tenant, records: Iterable[Key], *, post_migrate: bool = False):
    """Send the migration signals around building ``tenant``'s database at the plan (``records``).

    The tenant is selected while receivers run (whatever its status), so a
    receiver seeding rows uses the default manager. ``post_migrate`` goes to
    the tenant's alias, as Django's ``migrate`` sends it: its receivers
    (contenttypes, permissions, the site's own) act where the router lets
    their models live. They run before the registry records the tenant as
    ready at the plan: a receiver that fails leaves it unrecorded, and the
    next attempt sends them again.
    """
    records = list(records)
    token = registry.activate(tenant, maintenance_writes=True)
    try:
        pre_tenant_migrate.send(sender=Tenant, tenant=tenant, plan=records)
        yield
        _migrated(tenant, [f"{app}.{name}" for app, name in records], post_migrate=post_migrate)
    finally:
        registry.deactivate(token)


def _migrated(tenant: Tenant, applied: list[str], *, post_migrate: bool = False) -> None:
    """``tenant_migrated``, then ``post_migrate`` on the tenant's alias (when anything was applied, or asked)."""
    tenant_migrated.send(sender=Tenant, tenant=tenant, applied=applied)
    if applied or post_migrate:
        emit_post_migrate_signal(0, False, tenant.database.alias)


# -- clone templates ------------------------------------------------------------
# Where the engine copies a database faster than DDL builds one (PostgreSQL's
# CREATE DATABASE ... TEMPLATE, SQLite's backup API), each server keeps one
# template database at the current migration plan. It is built under a
# temporary name and renamed into place when complete, so a clone never
# starts from a half-built template; its marker (origin "template") holds the
# plan's fingerprint, and a template of another plan is replaced.

_templates: dict[str, str] = {}  # server key -> fingerprint of the template verified in this process
#: The handles (slugs) of templates: not valid tenant slugs (a leading "-"), so
#: their aliases can never be a tenant's.
TEMPLATE_HANDLE = "-clone-template"
TEMPLATE_BUILD_HANDLE = "-clone-template-build"


def template_name(server: Server) -> str:
    """The clone template's database name on ``server`` (no slug can derive it: slugs never start with "-")."""
    return databases._valid_name(f"{conf.get('DATABASE_PREFIX')}_template", server)


def can_clone(server: Server, plan: MigrationPlan) -> bool:
    """Whether new databases on ``server`` are cloned from a template."""
    return bool(
        conf.get("CLONE_TEMPLATES")
        and server.dialect.can_clone_databases
        and server.isolation == ISOLATION_DATABASE
        and not server.tenant_roles  # a clone would be owned by the server user, not the tenant's role
        and plan.direct_ok
        and tenant_models()
    )


def clone_into(tenant_db: TenantDatabase, plan: MigrationPlan) -> bool:
    """Clone the server's template into the tenant's (new) database; False when not cloned.

    Any failure to clone (the template is being rebuilt, another session is
    connected to it) is logged and answered with False: the caller creates
    the database the ordinary way.
    """
    server = tenant_db.server
    if not can_clone(server, plan):
        return False
    try:
        template = ensure_template(server, plan)
        cloned = bool(
            get_plugins().hook.tenant_schema_clone_database(
                dialect=server.dialect, server=server, template=template, name=tenant_db.name
            )
        )
    except Exception:
        logger.warning("could not clone the template on server %s; creating the database", server.key, exc_info=True)
        _templates.pop(server.key, None)
        return False
    return cloned


def ensure_template(server: Server, plan: MigrationPlan) -> str:
    """The name of ``server``'s clone template at ``plan``, built (or rebuilt) if needed."""
    name = template_name(server)
    fingerprint = plan.fingerprint
    if _templates.get(server.key) == fingerprint:
        return name
    template = TenantDatabase(TEMPLATE_HANDLE, server, name)
    marker = None
    with template.released():
        if template.exists():
            marker = ownership.read_marker(template)
            if marker is None or marker.origin != ownership.TEMPLATE_ORIGIN:
                raise TenantSchemaError(
                    f"database {name!r} on server {server.key!r} is not a tenant-schema clone template; "
                    "tenant-schema will not use or replace it (remove it, or set CLONE_TEMPLATES to False)"
                )
    if marker is None or marker.tenant_uid != fingerprint:
        _build_template(server, plan, replace=marker is not None)
    _templates[server.key] = fingerprint
    return name


def _build_template(server: Server, plan: MigrationPlan, *, replace: bool) -> None:
    """Build a template at ``plan`` under a temporary name, then rename it into place."""
    hook = get_plugins().hook
    name = template_name(server)
    # One build name per server: a build a killed process left behind is
    # dropped by the next build (it is half-built and nobody's), so leftovers
    # never accumulate. Two processes building at once make each other fall
    # back to creating their tenant's database with DDL: slower, never wrong.
    building = TenantDatabase(TEMPLATE_BUILD_HANDLE, server, databases._valid_name(f"{name}_build", server))
    hook.tenant_schema_drop_database(dialect=server.dialect, server=server, name=building.name)
    hook.tenant_schema_create_database(dialect=server.dialect, server=server, name=building.name)
    try:
        with building.released():
            create_from_models(building, plan, fresh=True)
            create_tenant_tables(building)
            _write_template_marker(building, plan.fingerprint)
        if replace:  # the old template holds another plan, and no tenant's data
            hook.tenant_schema_drop_database(dialect=server.dialect, server=server, name=name)
        if not server.dialect.rename_database(server, building.name, name):
            raise DatabaseError(f"another process installed a template {name!r} first")
        # Another process's build may have replaced ours under the build name
        # before the rename: what is in place now must be a complete template.
        installed = TenantDatabase(TEMPLATE_HANDLE, server, name)
        with installed.released():
            marker = ownership.read_marker(installed)
        if marker is None or marker.origin != ownership.TEMPLATE_ORIGIN or marker.tenant_uid != plan.fingerprint:
            hook.tenant_schema_drop_database(dialect=server.dialect, server=server, name=name)
            raise DatabaseError(f"the template {name!r} was replaced while it was built")
    except BaseException:
        building.close()
        hook.tenant_schema_drop_database(dialect=server.dialect, server=server, name=building.name)
        raise


def drop_clone_templates(server: str | None = None) -> int:
    """Drop the clone template of every server (or of ``server``); how many were dropped.

    Only a database whose marker says it is a clone template; the next
    registration on the server builds a new one. ``tenant_pool --drain`` calls it.
    """
    hook = get_plugins().hook
    dropped = 0
    for key in [server] if server is not None else list(server_urls()):
        srv = get_server(key)
        if not srv.dialect.can_clone_databases or srv.isolation != ISOLATION_DATABASE:
            continue
        _templates.pop(srv.key, None)
        template = TenantDatabase(TEMPLATE_HANDLE, srv, template_name(srv))
        with template.released():
            if not template.exists() or not ownership.is_unclaimed_clone(template):
                continue
        dropped += bool(hook.tenant_schema_drop_database(dialect=srv.dialect, server=srv, name=template.name))
    return dropped


def _write_template_marker(template: TenantDatabase, fingerprint: str) -> None:
    stand_in = Tenant(slug="clone-template", uid=uuid.UUID(fingerprint))
    ownership.write_marker(template, stand_in, origin=ownership.TEMPLATE_ORIGIN)


def _mark_or_undo(tenant_db: TenantDatabase, tenant: Tenant, *, cloned: bool = False) -> str:
    """Write the ownership marker into the database this call just created, or drop it again.

    If writing the marker fails (the server dropped the connection), the
    empty database this call made is dropped, so a retry creates it afresh
    instead of finding an unmarked database it must refuse. Only a process
    killed between the two steps leaves one (``tenant_claim`` resolves it).
    """
    try:
        if cloned:
            return ownership.rewrite_marker(tenant_db, tenant)
        ownership.write_marker(tenant_db, tenant, empty=True)
        return ""
    except BaseException:
        server = tenant_db.server
        _templates.pop(server.key, None)
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
    """Create the ``TENANT_TABLES`` the database lacks (life-cycle work: allowed in maintenance mode)."""
    specs = tenant_table_specs()
    if specs:
        with registry.lifecycle_writes(tenant_db.slug):
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
    #: ``verify=True`` found migrations missing that the registry recorded as
    #: applied: the database was changed behind the registry's back.
    drift: bool = False
    #: False when the registry's fingerprint alone showed it up to date.
    connected: bool = True
    #: The failure's traceback (``tenant_migrate -v 2`` prints it); also logged at INFO.
    traceback: str | None = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass
class MigrationReport:
    """Per-tenant results of ``migrate_tenants``, in the order they finished."""

    results: list[TenantMigration] = dataclasses.field(default_factory=list)

    @property
    def failures(self) -> list[TenantMigration]:
        return [r for r in self.results if r.error is not None]

    @property
    def drifted(self) -> list[TenantMigration]:
        return [r for r in self.results if r.drift]

    @property
    def ok(self) -> bool:
        return not self.failures


def migrate_tenant(tenant: Tenant) -> list[str]:
    """Apply the pending migrations to one tenant; the ``app.name`` labels applied.

    Runs inside the tenant's context, so ``RunPython`` code that uses the
    default manager reaches the tenant's database. Records the plan's
    fingerprint on the tenant's row when it succeeds (and clears it first,
    so a crash half-way leaves a row the next fleet run checks).
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

    # Archived and half-registered tenants too (no status check), and writes from
    # RunPython code even in maintenance mode: the usual "on, migrate, off" routine.
    token = registry.activate(tenant, maintenance_writes=True)
    try:
        loader, states = _shared_graph()
        executor = django_private.migration_executor(tenant_db.connection, progress, loader=loader)
        targets = executor.loader.graph.leaf_nodes()
        plan = executor.migration_plan(targets)
        state = None
        if plan and loader is not None:  # tenants with one history share one rendered state
            history = frozenset(executor.loader.applied_migrations)
            with _graphs_lock:
                rendered = states.get(history)
                if rendered is None:
                    if len(states) >= 8:
                        states.clear()
                    rendered = states[history] = django_private.applied_project_state(executor)
                state = rendered.clone()
        pre_tenant_migrate.send(
            sender=Tenant, tenant=tenant, plan=[(m.app_label, m.name) for m, backwards in plan if not backwards]
        )
        if plan:
            record_migration_state(tenant, "")
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
                executor.migrate(targets, plan=plan, state=state)
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
        create_tenant_tables(tenant_db)
        _migrated(tenant, applied)  # before the fingerprint: a failing receiver is retried by the next run
        record_migration_state(tenant, migration_plan().fingerprint)
    finally:
        registry.deactivate(token)
    return applied


_graphs: dict[str, Any] = {}
_graphs_lock = threading.Lock()


def _shared_graph() -> tuple[Any, dict]:
    """This process's migration loader and rendered states, for the current plan (rebuilt when it changes).

    The loader is ``None`` when the project has squashed migrations: then
    each tenant gets Django's own executor, whose graph depends on its history.
    """
    plan = migration_plan()
    if _graphs.get("plan") is not plan:
        _graphs.clear()
        _graphs.update(plan=plan, loader=django_private.migration_loader(), states={})
    return _graphs["loader"], _graphs["states"]


def record_migration_state(tenant: Tenant, fingerprint: str) -> None:
    """Write ``fingerprint`` as the tenant's migration state, if the row still points at this database.

    One UPDATE on the registry, keyed on the tenant's location, so a row
    that moved meanwhile keeps its own state. An empty fingerprint means
    "unknown": the next fleet migration connects to the tenant to find out.
    """
    Tenant.objects.filter(slug=tenant.slug, server=tenant.server, database_name=tenant.database_name).update(
        migrated_to=fingerprint
    )
    tenant.migrated_to = fingerprint


def refresh_migration_state(tenant: Tenant) -> bool:
    """Ask the tenant's database what it has applied and record it; True when it is at the plan.

    For paths that change a tenant's schema outside ``migrate_tenant``
    (Django's ``migrate --database tenant:<slug>``).
    """
    plan = migration_plan()
    current = not plan.pending(applied_migrations(tenant.database) or set())
    if current:
        create_tenant_tables(tenant.database)  # the fingerprint covers TENANT_TABLES too
    record_migration_state(tenant, plan.fingerprint if current else "")
    return current


MIGRATABLE = (Tenant.Status.READY, Tenant.Status.ARCHIVED, Tenant.Status.POOLED)


def migrate_tenants(
    slugs: Iterable[str] | None = None,
    *,
    jobs: int = 1,
    progress: bool | Callable[[TenantMigration], Any] | None = None,
    verify: bool = False,
) -> MigrationReport:
    """Apply pending migrations to every ready, archived or pooled tenant (or to ``slugs``).

    The registry records each tenant's migration state (``Tenant.migrated_to``),
    so tenants already at the current plan are skipped from one registry
    query, without connecting to them; ``verify=True`` connects to every
    tenant anyway and reports drift (``report.drifted``: migrations the
    registry recorded as applied that the database lacks). The others are
    checked and, when behind, migrated on one connection each, ``jobs`` at a
    time in worker processes (``jobs=1``: in this process, one after the
    other). Tenants with the same history share one migration graph and one
    rendered project state per process. A failing tenant does not stop the
    others: look at ``report.failures``. ``progress=True`` shows a tqdm bar
    on stderr; a callable is called with each ``TenantMigration``.
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

        fingerprint = migration_plan().fingerprint
        unknown: list[Tenant] = []
        for tenant in tenants:
            if not verify and tenant.status in MIGRATABLE and tenant.migrated_to == fingerprint:
                done(TenantMigration(tenant.slug, skipped=True, connected=False))
            else:
                unknown.append(tenant)
        if jobs == 1 or len(unknown) <= 1:
            for tenant in unknown:
                done(_migrate_one(_job(tenant)))
        else:
            _migrate_in_processes(unknown, jobs, done)
    finally:
        getattr(notify, "close", lambda: None)()
    return report


def _job(tenant: Tenant) -> tuple[str, str, str, str, str, str]:
    """What a worker process needs to know of a tenant (picklable, no registry query)."""
    return (tenant.slug, tenant.server, tenant.database_name, tenant.uid.hex, tenant.status, tenant.migrated_to)


def _migrate_one(job: tuple[str, str, str, str, str, str]) -> TenantMigration:
    """Check one tenant and apply what it lacks, on one connection; its result, never an exception.

    A tenant found at the plan gets the plan's fingerprint recorded (and any
    ``TENANT_TABLES`` added since are created), so the next fleet run skips
    it without connecting. One the registry recorded at the plan that is
    behind it has drifted (changed behind the registry's back).
    """
    slug, server, name, uid, status, migrated_to = job
    tenant = Tenant(
        slug=slug, server=server, database_name=name, uid=uuid.UUID(uid), status=status, migrated_to=migrated_to
    )
    if status not in MIGRATABLE:
        return TenantMigration(slug, error=f"tenant is {status}; `manage.py tenant_register {slug}` completes it")
    plan = migration_plan()
    recorded = migrated_to == plan.fingerprint
    drift = False
    try:
        with tenant.database.released():
            ownership.check_owner(tenant.database, tenant)  # never migrate someone else's database
            if not plan.pending(applied_migrations(tenant.database) or set()):
                if not recorded:
                    # At the plan but not recorded there: TENANT_TABLES added since, or a run
                    # whose migration signals' receivers failed (they run again here).
                    with _announcing(tenant, [], post_migrate=True):
                        create_tenant_tables(tenant.database)
                    record_migration_state(tenant, plan.fingerprint)
                return TenantMigration(slug, skipped=True)
            drift = recorded  # the registry said "done": the database changed behind its back
            return TenantMigration(slug, applied=migrate_tenant(tenant), drift=drift)
    except Exception as exc:
        # Reported in the result; a traceback on stderr would bury the fleet's summary.
        logger.info("migrating tenant %s failed", slug, exc_info=True)
        hint = getattr(exc, "partly_applied", None)
        return TenantMigration(
            slug,
            error=_describe(exc) + (f"; {hint}" if hint else ""),
            drift=drift,
            traceback="".join(traceback.format_exception(exc)),
        )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


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
    # Workers are recycled by running the fleet in generations of ``jobs``
    # fresh processes with ``TASKS_PER_WORKER`` tenants each, not with
    # ``max_tasks_per_child``: on Python < 3.13 a pool does not replace the
    # workers that retire (CPython gh-115634) and waits for ever.
    context = multiprocessing.get_context("spawn")
    generation = jobs * TASKS_PER_WORKER
    for start in range(0, len(todo), generation):
        with ProcessPoolExecutor(
            max_workers=jobs, mp_context=context, initializer=fleet_worker.init, initargs=(module, overrides)
        ) as pool:
            batch = todo[start : start + generation]
            futures = {pool.submit(_migrate_one, _job(t)): t.slug for t in batch}
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


def restore_tenant(tenant_or_slug: Tenant | str) -> Tenant:
    """Bring an archived tenant back to ``ready``, its schema at the current migration plan.

    Only an archived tenant: any other status is an error saying what to do
    instead. Its database (or schema) must still be on its server
    (``TenantDatabaseDoesNotExist`` otherwise) and hold the tenant's
    ownership marker (``NotOurDatabase`` otherwise); either way nothing is
    changed and the row stays archived. The migrations it lacks are applied
    and ``TENANT_TABLES`` added since are created, and only then does the
    status become ``ready``: a restore that fails half-way leaves an archived
    row, and calling it again resumes. Maintenance mode stays as it was.
    Sends ``tenant_restored``.
    """
    from .exceptions import TenantDatabaseDoesNotExist
    from .signals import tenant_restored

    tenant = _row(tenant_or_slug)
    if tenant.status != Tenant.Status.ARCHIVED:
        raise TenantSchemaError(_not_restorable(tenant))
    if tenant.provisioned_at is None:
        raise TenantSchemaError(
            f"tenant {tenant.slug!r} was archived before its registration finished, so it was never ready: "
            f"`manage.py tenant_drop {tenant.slug} --purge`, then register it again"
        )
    tenant_db = tenant.database
    with tenant_db.released():
        if not tenant_db.exists():
            raise TenantDatabaseDoesNotExist(
                f"tenant {tenant.slug!r} cannot be restored: its {tenant_db.server.isolation} {tenant_db.name!r} "
                f"is not on server {tenant_db.server.key!r} ({tenant_db.dialect.name}); the row stays "
                f"archived (`manage.py tenant_drop {tenant.slug} --purge` removes it)"
            )
        ownership.check_owner(tenant_db, tenant)  # never serve someone else's database
        plan = migration_plan()
        if plan.pending(applied_migrations(tenant_db) or set()):
            migrate_tenant(tenant)  # records the plan's fingerprint
        elif tenant.migrated_to != plan.fingerprint:
            create_tenant_tables(tenant_db)  # TENANT_TABLES added since it was archived
            record_migration_state(tenant, plan.fingerprint)
    restored = Tenant.objects.filter(pk=tenant.pk, status=Tenant.Status.ARCHIVED).update(
        status=Tenant.Status.READY, last_error="", updated_at=timezone.now()
    )
    if not restored:
        raise TenantSchemaError(f"tenant {tenant.slug!r} was changed or purged while it was being restored")
    ready_tenants.forget(tenant.slug)
    tenant.refresh_from_db()
    tenant_restored.send(sender=Tenant, tenant=tenant)
    return tenant


def _not_restorable(tenant: Tenant) -> str:
    """Why ``tenant`` (not archived) cannot be restored, and what to do instead."""
    if tenant.status == Tenant.Status.READY:
        return f"tenant {tenant.slug!r} is ready, not archived: there is nothing to restore"
    if tenant.status == Tenant.Status.POOLED:
        return f"{tenant.slug!r} is a pooled database, not an archived tenant: there is nothing to restore"
    return (
        f"tenant {tenant.slug!r} is {tenant.status}, not archived: only archived tenants are restored; "
        f"`manage.py tenant_register {tenant.slug}` finishes its registration"
    )


def set_maintenance(tenant_or_slug: Tenant | str, on: bool) -> Tenant:
    """Switch the tenant's maintenance mode on (``True``) or off (``False``); the row.

    While it is on the tenant stays ``ready`` and is served for reads, but
    writes through the ORM or the Table API raise ``TenantUnavailable`` and
    ``TenantMiddleware`` answers unsafe requests with a 503. This process
    sees the switch at once (saving the row forgets it in the routing
    cache), other processes within ``ROUTING_CACHE_SECONDS``: wait that long
    (and for requests already running to end) before relying on no process
    writing. A tenant that is not ready keeps the flag for when it is
    restored. Sends ``tenant_maintenance_changed`` (``maintenance=on``)
    when the mode changed; a tenant already in it is returned as it is.
    """
    from .signals import tenant_maintenance_changed

    if not isinstance(on, bool):
        raise TypeError(f"set_maintenance() takes on=True or on=False, not {on!r}")
    tenant = _row(tenant_or_slug)
    if tenant.maintenance == on:
        return tenant
    tenant.maintenance = on
    tenant.save(update_fields=["maintenance", "updated_at"])
    tenant_maintenance_changed.send(sender=Tenant, tenant=tenant, maintenance=on)
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
