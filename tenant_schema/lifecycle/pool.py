"""The warm pool: databases provisioned ahead of sign-ups, each claimed by one.

A server whose URL says ``?pool=N`` keeps up to ``N`` provisioned,
unassigned databases: registry rows with status ``pooled`` and slugs of the
reserved ``pool-<hex>`` shape, at the current migration plan. ``fill_pool``
makes them off the request path (``manage.py tenant_pool``, cron, a task
queue), each one provisioned like a tenant's and marked ``pooled`` as the
last write of its registry transaction. ``claim_pooled`` gives one to a
sign-up in one registry statement, conditional on the row still being
pooled, so two sign-ups never get one database; no DDL and no tenant
connection on that path. ``drain_pool`` drops the pooled databases, never
a tenant's.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid

from django.db import IntegrityError, OperationalError, connections, transaction
from django.utils import timezone

from ..databases import database_name
from ..migration_plan import migration_plan
from ..models import Tenant
from ..names import POOL_SLUG_PREFIX, POOL_SLUG_RE
from ..registry import ready_tenants, registry_db
from ..servers import Server, get_server, server_urls
from .archive import drop_owned_database
from .provision import _provision_row

logger = logging.getLogger(__name__)

__all__ = ["PoolStatus", "claim_pooled", "drain_pool", "fill_pool", "pool_rows", "pool_slug", "pool_status"]


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
