"""One registry row's database, brought to the current schema: the core of registering a tenant.

``_provision_row`` is a small state machine over a row whose status is
``provisioning`` (committed at once by its caller, so a crash leaves a row
that is visibly not ready) or ``failed``:

1. under a lock on the row (a registry transaction: ``SELECT ... FOR UPDATE``
   where the database has row locks, a write lock on SQLite) the database
   is cloned from the server's template or created (idempotent; where DDL
   cannot roll back, the database an interrupted attempt left for a
   never-ready tenant is created again), marked as the tenant's, given the
   tenant's role, and the tenant apps' tables and the ``TENANT_TABLES``
   are created;
2. the status (``ready`` for a tenant, ``pooled`` for the warm pool) and the
   plan's fingerprint are the very last writes of that transaction.

Re-running it resumes from whatever a crash left; two processes finishing
the same row serialize on the lock and the second finds it done. A failure
leaves the row ``failed`` with ``last_error`` set, and is re-raised. A
database whose ownership marker is not the tenant's is never adopted or
recreated.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, transaction
from django.utils import timezone

from .. import credentials, ownership
from ..databases import TenantDatabase
from ..exceptions import TenantSchemaError
from ..migration_plan import migration_plan
from ..models import Tenant
from ..plugins import get_plugins
from ..registry import registry_db
from .build import applied_migrations, create_from_models, create_tenant_tables
from .clone import clone_into, forget_template
from .migrate import _announcing, migrate_tenant

logger = logging.getLogger(__name__)

__all__ = ["provision", "recreate_database"]


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
        held = _mark_or_undo(tenant_db, tenant, cloned=cloned, expected=plan.fingerprint)
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
        forget_template(server)
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


def _mark_or_undo(tenant_db: TenantDatabase, tenant: Tenant, *, cloned: bool = False, expected: str = "") -> str:
    """Write the ownership marker into the database this call just created, or drop it again.

    If writing the marker fails (the server dropped the connection), the
    empty database this call made is dropped, so a retry creates it afresh
    instead of finding an unmarked database it must refuse. Only a process
    killed between the two steps leaves one (``tenant_claim`` resolves it).
    """
    try:
        if cloned:  # ``expected``: the plan the template should hold
            return ownership.rewrite_marker(tenant_db, tenant, expected=expected)
        ownership.write_marker(tenant_db, tenant, empty=True)
        return ""
    except BaseException:
        server = tenant_db.server
        forget_template(server)
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


def _mark_failed(pk: int, exc: BaseException) -> None:
    """Record ``exc`` on the row, now ``failed`` unless it is ready; a registry that is down is only logged."""
    message = _describe(exc)[:5000]
    try:
        Tenant.objects.filter(pk=pk).exclude(status=Tenant.Status.READY).update(
            status=Tenant.Status.FAILED, last_error=message, updated_at=timezone.now()
        )
    except DatabaseError:  # the registry itself is down: the original error matters more
        logger.exception("could not record the failure of tenant %s", pk)


def _describe(exc: BaseException) -> str:
    """An error in one line, its class first: a row's ``last_error``, a fleet result's ``error``."""
    return f"{type(exc).__name__}: {exc}"
