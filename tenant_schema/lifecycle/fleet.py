"""``migrate_tenants``: the fleet brought to the current migration plan.

The registry records each tenant's migration state (``Tenant.migrated_to``),
so tenants already at the plan are skipped from one registry query, without
connecting to them (``verify=True`` connects anyway and reports drift). The
others are checked and, when behind, migrated with ``migrate.migrate_tenant``
on one connection each, ``jobs`` at a time: this process and up to
``jobs - 1`` spawned worker processes (``fleet_worker`` sets Django up in
each; none for fewer than ``MIN_TENANTS_PER_WORKER`` tenants each) recycled
every ``TASKS_PER_WORKER`` tenants, so memory stays bounded. A failing tenant
never stops the others: each result is a ``TenantMigration``, collected in
a ``MigrationReport``, and a failure's traceback is logged at INFO.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import traceback
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings

from .. import databases, ownership
from ..exceptions import TenantSchemaError
from ..migration_plan import migration_plan
from ..models import Tenant
from ..registry import get_tenants
from . import fleet_worker
from .build import applied_migrations, create_tenant_tables
from .migrate import _announcing, migrate_tenant, record_migration_state
from .provision import _describe

logger = logging.getLogger(__name__)

__all__ = ["MIGRATABLE", "MigrationReport", "TenantMigration", "migrate_tenants"]


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
    time: this process and up to ``jobs - 1`` worker processes, one per
    ``MIN_TENANTS_PER_WORKER`` (20) tenants to migrate (``jobs=1``: in this
    process only, one after the other). Tenants with the same history share one migration graph and one
    rendered project state per process. A failing tenant does not stop the
    others: look at ``report.failures``. ``progress=True`` shows a tqdm bar
    on stderr; a callable is called with each ``TenantMigration``.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    if slugs is None:
        tenants = list(Tenant.objects.filter(status__in=MIGRATABLE).order_by("slug"))
    else:
        tenants = get_tenants(slugs)  # TenantNotFound before any work
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
        moving = _being_moved() if unknown else set()
        for tenant in [t for t in unknown if t.uid in moving]:
            unknown.remove(tenant)
            done(TenantMigration(tenant.slug, error=MOVING_ERROR.format(slug=tenant.slug), connected=False))
        workers = min(jobs - 1, len(unknown) // MIN_TENANTS_PER_WORKER)
        if workers < 1:
            for tenant in unknown:
                done(_migrate_one(_job(tenant)))
        else:
            _migrate_in_processes(unknown, workers, done)
    finally:
        getattr(notify, "close", lambda: None)()
    return report


MOVING_ERROR = (
    "tenant is being moved to another server (tenant_move): migrate it once the move is done, "
    "or run `manage.py tenant_move {slug} --to <server>` again to finish a move that was interrupted"
)


def _being_moved() -> set:
    """The uids of the tenants with a move in progress (or one a crash left to finish): one registry query.

    A migration applied to the source while it is copied could miss the copy.
    """
    open_moves = Tenant.objects.filter(copy_of__isnull=False).exclude(status=Tenant.Status.COPY)
    return set(open_moves.values_list("copy_of", flat=True))


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
            applied = applied_migrations(tenant.database)
            if not plan.pending(applied or set()):
                if not recorded:
                    # At the plan but not recorded there: TENANT_TABLES added since, or a run
                    # whose migration signals' receivers failed (they run again here).
                    with _announcing(tenant, [], post_migrate=True):
                        create_tenant_tables(tenant.database)
                    record_migration_state(tenant, plan.fingerprint)
                return TenantMigration(slug, skipped=True)
            drift = recorded  # the registry said "done": the database changed behind its back
            return TenantMigration(slug, applied=migrate_tenant(tenant, recorded=applied), drift=drift)
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
#: Tenants a worker process migrates before a fresh one replaces it: memory
#: stays bounded, and a fleet of up to ``(jobs - 1) * TASKS_PER_WORKER``
#: tenants for the workers starts ``jobs - 1`` processes once (about 0.3 s
#: each to spawn and set Django up, on the benchmark's machine).
TASKS_PER_WORKER = 250
#: Tenants queued per worker process beyond the one it is migrating.
QUEUED_PER_WORKER = 4
#: A worker process costs as much to start as migrating about this many
#: tenants costs in this process: fewer tenants per worker, fewer workers.
MIN_TENANTS_PER_WORKER = 20


def _migrate_in_processes(todo: list[Tenant], workers: int, done: Callable[[TenantMigration], None]) -> None:
    """Migrate ``todo`` in this process and ``workers`` worker processes at once.

    This process takes its share from the first moment (it has Django set
    up, the migration graph loaded), while the workers start; they get
    tenants once a probe shows one has started (a pool whose workers cannot
    start takes none: this process migrates them all). Each worker is kept
    ``QUEUED_PER_WORKER`` tenants ahead; when this process has nothing left
    it takes back the tenants the pool has not yet handed to a worker (up to
    ``workers + 1`` stay with the pool: handed over, not necessarily
    started). Workers are recycled by running them in generations of fresh
    processes with ``TASKS_PER_WORKER`` tenants each, not with
    ``max_tasks_per_child``: on Python < 3.13 a pool does not replace the
    workers that retire (CPython gh-115634) and waits for ever.

    When a worker dies (killed, out of memory) the pool fails every tenant
    it held, started or not, and stops its other workers: each of those is
    tried once more by the next generation's workers, alone in the pool
    (never by this process: a tenant that kills a worker would kill it
    too), and reported as "worker process failed" if that fails as well or
    no generation can start. Every wait ends when a tenant finishes or a pool breaks, so
    nothing waits on a worker that is gone.
    """
    import collections
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    queue = collections.deque(todo)  # this process or a worker
    retry: collections.deque[Tenant] = collections.deque()  # a worker only: their pool broke once
    tried: set[str] = set()
    per_generation = workers * TASKS_PER_WORKER
    held: dict[Any, Tenant] = {}  # future -> tenant
    pool = probe = None
    up = broken = False  # this generation's workers started; one of them died
    submitted = 0  # to this generation's workers
    can_spawn = True  # False once a generation's workers could not start (its probe failed)
    draining = False  # this process ran out of work once: it takes back, the workers get nothing new of its

    def collect(futures) -> None:
        nonlocal broken
        for future in futures:
            tenant = held.pop(future)
            try:
                result = future.result()
            except BrokenProcessPool as exc:
                broken = True
                if tenant.slug not in tried:
                    tried.add(tenant.slug)
                    retry.append(tenant)
                    continue
                result = TenantMigration(tenant.slug, error=f"worker process failed twice: {_describe(exc)}")
            except Exception as exc:  # noqa: BLE001 - the result could not come back (unpicklable, ...)
                result = TenantMigration(tenant.slug, error=f"worker process failed: {_describe(exc)}")
            done(result)

    try:
        while queue or retry or held:
            if pool is not None and not held and (broken or submitted >= per_generation):
                pool.shutdown()
                pool = None  # this generation is done: the next one starts fresh processes
            if pool is None and can_spawn and (retry or (queue and not draining)):
                pool, submitted, up, broken = _worker_pool(workers), 0, False, False
                probe = pool.submit(fleet_worker.ready)
            if pool is not None and not up and probe.done():
                try:
                    probe.result()
                    up = True
                except Exception as exc:  # noqa: BLE001 - the workers cannot start: this process does the work
                    logger.warning("migrate_tenants: worker processes could not start (%s)", _describe(exc))
                    broken, can_spawn = True, False
            if pool is None and not can_spawn:
                while retry:
                    done(TenantMigration(retry.popleft().slug, error="worker process failed; no worker to retry it"))
            while pool is not None and up and not broken and submitted < per_generation:
                # A tenant tried again runs alone in the pool: if it kills its worker
                # again, it takes no other tenant with it.
                if any(t.slug in tried for t in held.values()):
                    break
                source = (retry if not held else None) if retry else (queue if not draining else None)
                if not source or len(held) >= workers * (1 + QUEUED_PER_WORKER):
                    break
                tenant = source.popleft()
                try:
                    held[pool.submit(_migrate_one, _job(tenant))] = tenant
                except BrokenProcessPool:
                    source.appendleft(tenant)
                    broken = True
                    break
                submitted += 1
            collect([future for future in held if future.done()])
            if not queue:
                draining = True
                for future in [f for f, t in held.items() if t.slug not in tried and f.cancel()]:
                    queue.append(held.pop(future))  # not handed to a worker yet: this process takes it back
            if queue:
                done(_migrate_one(_job(queue.pop())))  # this process's share, from the other end
            elif held or (pool is not None and not up):
                waiting = [*held, *([probe] if pool is not None and not up else [])]
                finished_now, _ = wait(waiting, return_when=FIRST_COMPLETED)
                collect([future for future in finished_now if future in held])
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _worker_pool(workers: int):
    """A pool of ``workers`` spawned processes with Django set up as in this one."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    module = os.environ.get("DJANGO_SETTINGS_MODULE") or getattr(settings, "SETTINGS_MODULE", None)
    if not module:
        raise TenantSchemaError("migrate_tenants(jobs>1) needs DJANGO_SETTINGS_MODULE for its worker processes")
    overrides = {key: getattr(settings, key) for key in WORKER_SETTINGS if hasattr(settings, key)}
    overrides["DATABASES"] = {
        alias: value
        for alias, value in overrides.get("DATABASES", {}).items()
        if not alias.startswith((databases.ALIAS_PREFIX, databases.INTERNAL_ALIAS_PREFIX))
    }
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=fleet_worker.init,
        initargs=(module, overrides),
    )
