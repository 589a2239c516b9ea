"""The tenant-schema side of ``./run bench``: a worker process answering the orchestrator's commands.

Started by ``_harness.Run.ts_worker`` with ``DJANGO_SETTINGS_MODULE=
ts_settings`` and ``BENCH_APP_VERSION``. Everything goes through the public
API (``register_tenant``, ``purge_tenant``, ``migrate_tenants``,
``tenant_context``, ``TenantMiddleware``); the floors use the database
drivers themselves. Every command times its own work and returns seconds.
"""

from __future__ import annotations

import gc
import os
import sqlite3
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # PYTHONPATH (set by _harness.Run.env) has it, and the code under test
    sys.path.insert(0, str(BENCH))

from _harness import alternate, rss_mib, serve  # noqa: E402
from _tenant_setup import reachable, slug  # noqa: E402

FLEET_PREFIX = "fleet-"
#: Where the code under test keeps its life cycle beyond the public API: ``tenant_schema.provisioning``
#: in a checkout from before the split (``BENCH_SOURCE``), else ``tenant_schema.lifecycle``'s modules.
#: ``provisioning`` first: the editable install would find ``lifecycle`` in this checkout for an old one.
LIFE_CYCLE = ("provisioning", "lifecycle.pool", "lifecycle.build")
#: Servers with a warm pool (``?pool=2``), added when tenant-schema has one.
POOL_SERVERS = {
    "pgpool": "{pg}?pool=2",
    "pgschemapool": "{pg}{run}_shared?isolation=schema&pool=2",
    "mysqlpool": "{mysql}?pool=2",
    "sqlitepool": "sqlite:///{tenants}/?pool=2",
}


def life_cycle(name: str):
    """``name`` (``fill_pool``, ``drain_pool``, ``tenant_models``) from the code under test; None when it has none."""
    import importlib

    for module in LIFE_CYCLE:
        try:
            found = importlib.import_module(f"tenant_schema.{module}")
        except ModuleNotFoundError:
            continue
        if hasattr(found, name):
            return getattr(found, name)
    return None


def hello() -> dict:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import benchapp

    pool = life_cycle("fill_pool") is not None
    if pool:  # warm pools on PostgreSQL (database and schema isolation), two databases kept ready
        from django.conf import settings
        from django.test.utils import override_settings

        values = {"pg": settings.PG, "run": settings.RUN_ID, "mysql": settings.MYSQL, "tenants": settings.TENANT_DIR}
        extra = {k: v.format(**values) for k, v in POOL_SERVERS.items()}
        servers = {**settings.TENANT_SCHEMA["SERVERS"], **extra}
        override_settings(TENANT_SCHEMA={**settings.TENANT_SCHEMA, "SERVERS": servers}).enable()
    return {"pid": os.getpid(), "version": benchapp.VERSION, "pool": pool}


# -- onboarding -------------------------------------------------------------------------


def onboard(server: str, count: int) -> list[float]:
    """``register_tenant`` ``count`` times, each timed; each tenant purged afterwards, untimed."""
    from tenant_schema import purge_tenant, register_tenant

    times = []
    for _ in range(count):
        s = slug("onboard")
        start = time.perf_counter()
        register_tenant(s, server=server)
        times.append(time.perf_counter() - start)
        purge_tenant(s)
    return times


def registry_commit(count: int) -> list[float]:
    """One small write committed on the registry's connection (its ``default`` database), timed, ``count`` times.

    What each of the two registry commits of a sign-up costs at least: a
    scratch table of one row, updated in a transaction.
    """
    from django.db import connection, transaction

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (n integer)")
        cursor.execute(
            "INSERT INTO bench_commit_probe (n) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM bench_commit_probe)"
        )
    times = []
    for _ in range(count):
        start = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE bench_commit_probe SET n = n + 1")
        times.append(time.perf_counter() - start)
    return times


def onboard_pool(server: str, count: int) -> list[float] | None:
    """``register_tenant`` on a server with a warm pool, the pool filled (untimed) before each one."""
    from tenant_schema import purge_tenant, register_tenant

    fill_pool = life_cycle("fill_pool")
    if fill_pool is None:
        return None
    times = []
    for _ in range(count):
        fill_pool(server)
        s = slug("pooled")
        start = time.perf_counter()
        register_tenant(s, server=server)
        times.append(time.perf_counter() - start)
        purge_tenant(s)
    return times


_floors: dict[str, Floor] = {}


def floor(server: str, count: int, method: str = "ddl") -> list[float]:
    """The floor of onboarding on ``server``, ``count`` times (see ``Floor``)."""
    if server not in _floors:
        _floors[server] = Floor(server)
    return [_floors[server].once(method) for _ in range(count)]


class Floor:
    """The fastest raw way to create the same tenant: the driver itself, one transaction.

    The same schema ``register_tenant`` builds for the tenant app (its
    tables, ``django_migrations`` and its rows; statements collected once
    from Django's schema editor), with no registry, no marker, no checks:

    - SQLite: create the file, then ``BEGIN``, the DDL and the rows, ``COMMIT``;
    - PostgreSQL, database isolation: ``CREATE DATABASE`` (on a connection
      kept open), then a connection to it and the DDL and rows in one
      transaction;
    - PostgreSQL, schema isolation: one transaction on a connection kept open
      to the shared database: ``CREATE SCHEMA``, ``SET LOCAL search_path``,
      the DDL and the rows;
    - MariaDB: ``CREATE DATABASE``, ``USE`` and the DDL on a connection kept
      open (MariaDB commits each DDL statement: no transaction can hold them).

    On PostgreSQL databases, ``method="clone"`` is the other raw way:
    ``CREATE DATABASE ... TEMPLATE`` of a database built once as above.
    The database is dropped after each one, untimed.
    """

    def __init__(self, server: str) -> None:
        from django.db.migrations.loader import MigrationLoader
        from django.db.migrations.recorder import MigrationRecorder

        from tenant_schema import purge_tenant, register_tenant
        from tenant_schema.servers import get_server

        tenant_models = life_cycle("tenant_models")

        self.server = get_server(server)
        warm = register_tenant(slug("floorwarm"), server=server)
        connection = warm.database.connection
        with connection.schema_editor(collect_sql=True, atomic=False) as editor:
            for model in [MigrationRecorder.Migration, *tenant_models()]:
                editor.create_model(model)
        self.ddl = [s.rstrip().rstrip(";") for s in editor.collected_sql]
        purge_tenant(warm)
        loader = MigrationLoader(None, ignore_no_migrations=True)
        self.migrations = sorted(key for key in loader.graph.nodes if key[0] == "benchapp")
        self.vendor = connection.vendor
        self.isolation = self.server.isolation
        self.admin = None
        self.template = None

    def _rows(self, mark: str):
        now = "CURRENT_TIMESTAMP"
        values = ", ".join([f"({mark}, {mark}, {now})"] * len(self.migrations))
        params = [v for key in self.migrations for v in key]
        return f"INSERT INTO django_migrations (app, name, applied) VALUES {values}", params

    def once(self, method: str = "ddl") -> float:
        from tenant_schema.databases import database_name

        name = database_name(slug("floor"), self.server)
        if method == "clone":
            return self._clone(name)
        return getattr(self, f"_{self.vendor}")(name)

    def _clone(self, name: str) -> float:
        assert self.vendor == "postgresql" and self.isolation != "schema", "clone: PostgreSQL databases only"
        from tenant_schema.databases import database_name

        if self.template is None:
            self.template = database_name(slug("floortpl"), self.server)
            self._postgresql(self.template, keep=True)
        start = time.perf_counter()
        self.admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        seconds = time.perf_counter() - start
        self.admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        return seconds

    def _sqlite(self, name: str) -> float:
        path = Path(self.server.settings["NAME"]) / f"{name}.sqlite3"
        sql, params = self._rows("?")
        start = time.perf_counter()
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN")
        for statement in self.ddl:
            conn.execute(statement)
        conn.execute(sql, params)
        conn.execute("COMMIT")
        conn.close()
        seconds = time.perf_counter() - start
        path.unlink()
        return seconds

    def _pg_params(self, dbname: str) -> dict:
        s = self.server.settings
        return {"dbname": dbname, "host": s["HOST"], "port": s["PORT"] or 5432, "user": s["USER"]}

    def _postgresql(self, name: str, keep: bool = False) -> float:
        import psycopg

        sql, params = self._rows("%s")
        if self.isolation == "schema":
            if self.admin is None:
                self.admin = psycopg.connect(**self._pg_params(self.server.settings["NAME"]), autocommit=True)
            conn = self.admin
            start = time.perf_counter()
            with conn.transaction():
                conn.execute(f'CREATE SCHEMA "{name}"')
                conn.execute(f'SET LOCAL search_path TO "{name}"')
                for statement in self.ddl:
                    conn.execute(statement)
                conn.execute(sql, params)
            seconds = time.perf_counter() - start
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')
            return seconds
        if self.admin is None:
            self.admin = psycopg.connect(**self._pg_params("postgres"), autocommit=True)
        start = time.perf_counter()
        self.admin.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(**self._pg_params(name)) as conn:  # commits the one transaction on exit
            for statement in self.ddl:
                conn.execute(statement)
            conn.execute(sql, params)
        seconds = time.perf_counter() - start
        if not keep:
            self.admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        return seconds

    def _mysql(self, name: str) -> float:
        import MySQLdb

        sql, params = self._rows("%s")
        if self.admin is None:
            s = self.server.settings
            self.admin = MySQLdb.connect(host=s["HOST"], port=int(s["PORT"] or 3306), user=s["USER"])
        cursor = self.admin.cursor()
        start = time.perf_counter()
        cursor.execute(f"CREATE DATABASE `{name}`")
        cursor.execute(f"USE `{name}`")
        for statement in self.ddl:
            cursor.execute(statement)
        cursor.execute(sql, params)
        self.admin.commit()
        seconds = time.perf_counter() - start
        cursor.execute(f"DROP DATABASE `{name}`")
        return seconds


# -- fleets -----------------------------------------------------------------------------


def _fleet(server: str):
    from tenant_schema.models import Tenant

    return Tenant.objects.filter(server=server, slug__startswith=FLEET_PREFIX).order_by("slug")


def fleet_create(server: str, count: int) -> dict:
    """Grow ``server``'s fleet to ``count`` tenants with ``register_tenant`` (untimed set-up)."""
    from tenant_schema import register_tenant

    start = time.perf_counter()
    have = _fleet(server).count()
    short = server.replace("_", "")[:6]
    for i in range(have, count):
        register_tenant(f"{FLEET_PREFIX}{short}-{i:05d}", server=server)
    return {"tenants": _fleet(server).count(), "seconds": time.perf_counter() - start}


def migrate(server: str, jobs: int) -> dict:
    """``migrate_tenants(<the fleet's slugs>, jobs=jobs)``, timed; then what it reported."""
    from django.db import connections
    from django.db.backends.signals import connection_created
    from django.test.utils import CaptureQueriesContext

    from tenant_schema import migrate_tenants
    from tenant_schema.databases import close_tenant_connections

    slugs = list(_fleet(server).values_list("slug", flat=True))
    close_tenant_connections()
    opened = []

    def count(sender, connection, **kwargs):  # this process's tenant connections (workers have their own)
        if connection.alias != "default":
            opened.append(connection.alias)

    connection_created.connect(count)
    try:
        with CaptureQueriesContext(connections["default"]) as registry:
            start = time.perf_counter()
            report = migrate_tenants(slugs, jobs=jobs)
            seconds = time.perf_counter() - start
    finally:
        connection_created.disconnect(count)
    return {
        "tenants": len(slugs),
        "seconds": seconds,
        "connections": len(opened),
        "registry_queries": len(registry.captured_queries),
        "skipped": sum(1 for r in report.results if r.skipped),
        "applied": sum(1 for r in report.results if r.applied),
        "failed": [f"{r.slug}: {r.error}" for r in report.failures][:5],
    }


def touch(server: str, count: int) -> dict:
    """One query in each of ``count`` tenants (``tenant_context``), in this fresh process; time and RSS growth."""
    from benchapp.models import Note
    from django.db import connections

    from tenant_schema.context import tenant_context

    tenants = list(_fleet(server)[: count + 1])
    assert len(tenants) == count + 1, f"the fleet on {server} has {len(tenants)} tenants, {count + 1} needed"
    with tenant_context(tenants[0]):  # warm-up: imports, the driver
        Note.objects.count()
    gc.collect()
    before = rss_mib()
    start = time.perf_counter()
    for tenant in tenants[1:]:
        with tenant_context(tenant):
            Note.objects.count()
    seconds = time.perf_counter() - start
    gc.collect()
    growth = rss_mib() - before
    opened = sum(1 for alias in connections.settings if alias.startswith("tenant:") and _is_open(connections, alias))
    return {"seconds": seconds, "rss_growth_mib": growth, "connections": opened}


def _is_open(connections, alias: str) -> bool:
    try:
        return connections[alias].connection is not None
    except Exception:  # noqa: BLE001
        return False


# -- routing ----------------------------------------------------------------------------


_routing: dict[str, tuple] = {}


def routing(server: str, requests: int) -> dict:
    """TenantMiddleware + TenantRouter vs the same view naming the alias, no tenant middleware; alternating.

    The first call on ``server`` registers the tenant (three notes) and
    builds both clients; ``routing_done`` purges it. Returns each request's
    seconds, per variant.
    """
    if server not in _routing:
        _routing[server] = _routing_setup(server)
    routed, plain, host, paths, _ = _routing[server]
    return alternate(routed, plain, host, paths, requests)


def _routing_setup(server: str) -> tuple:
    import ts_urls
    from benchapp.models import Account, Note, Transaction
    from django.conf import settings
    from django.test import Client, override_settings

    from tenant_schema import register_tenant
    from tenant_schema.context import tenant_context

    tenant = register_tenant(slug("route"), server=server)
    notes = 3 + len(_routing)  # each server's tenant its own count: a view reading another tenant fails the check
    with tenant_context(tenant):
        account = Account.objects.create(name="Checking")
        txn = Transaction.objects.create(account=account, reference="r1", amount=1, booked_on="2024-01-01")
        Note.objects.bulk_create([Note(transaction=txn, body=f"note {i}") for i in range(notes)])
    plain_path = ts_urls.add_plain(f"plain-{server}", tenant.database.alias)
    host = f"{tenant.slug}.bench.test"
    base = list(settings.MIDDLEWARE)
    with override_settings(MIDDLEWARE=[*base, "tenant_schema.middleware.TenantMiddleware"]):
        routed = Client()
        assert routed.get("/routed/", HTTP_HOST=host).content == str(notes).encode()
    with override_settings(MIDDLEWARE=base):
        plain = Client()
        assert plain.get(plain_path, HTTP_HOST=host).content == str(notes).encode()
    paths = {"routed": "/routed/", "plain": plain_path}
    for _ in range(50):  # warm-up
        routed.get(paths["routed"], HTTP_HOST=host)
        plain.get(paths["plain"], HTTP_HOST=host)
    return routed, plain, host, paths, tenant


def routing_done() -> None:
    from tenant_schema import purge_tenant

    for *_, tenant in _routing.values():
        tenant.database.close()
        purge_tenant(tenant)
    _routing.clear()


def drain_pool(server: str) -> int:
    drain = life_cycle("drain_pool")
    return drain(server) if drain is not None else 0


# -- bulk insert (bench_batch_insert runs inside this worker) ---------------------------


def move(source: str, target: str, rows: int) -> dict:
    """A tenant on ``source`` with ``rows`` rows of the app (untimed), moved to ``target`` (timed), then dropped."""
    import datetime
    import decimal

    from benchapp.models import Account, Budget, Note, Tag, Transaction

    from tenant_schema import purge_tenant, register_tenant
    from tenant_schema.context import tenant_context
    from tenant_schema.lifecycle.move import drop_kept_copies, move_tenant

    tenant = register_tenant(slug("move"), server=source)
    accounts, budgets, tags = max(1, rows // 20), rows // 10, rows // 10
    transactions = (rows - accounts - budgets - tags) // 2
    notes = rows - accounts - budgets - tags - transactions
    day = datetime.date(2024, 1, 1)
    with tenant_context(tenant):
        Account.objects.bulk_create([Account(name=f"account {i}") for i in range(accounts)], batch_size=5000)
        ids = list(Account.objects.values_list("pk", flat=True))
        Transaction.objects.bulk_create(
            [
                Transaction(
                    account_id=ids[i % len(ids)],
                    reference=f"r{i}",
                    amount=decimal.Decimal(i % 100000) / 100,
                    booked_on=day + datetime.timedelta(days=i % 365),
                    description="groceries" if i % 3 else "",
                )
                for i in range(transactions)
            ],
            batch_size=5000,
        )
        txn = list(Transaction.objects.values_list("pk", flat=True))
        Note.objects.bulk_create(
            [Note(transaction_id=txn[i % len(txn)], body=f"note {i} ✓") for i in range(notes)], batch_size=5000
        )
        Budget.objects.bulk_create(
            [Budget(category=f"c{i % 40}", month=day, amount=decimal.Decimal("12.50")) for i in range(budgets)],
            batch_size=5000,
        )
        Tag.objects.bulk_create([Tag(label=f"tag-{i}") for i in range(tags)], batch_size=5000)
    tenant.database.close()
    result = move_tenant(tenant.slug, target, settle=0)
    moved = sum(t.rows for t in result.tables)
    drop_kept_copies(tenant.slug)
    purge_tenant(tenant.slug)
    return {"rows": moved, "seconds": result.seconds, "write_pause": result.write_pause}


def batch_insert(argv: list[str]) -> dict:
    import bench_batch_insert

    return bench_batch_insert.measure(argv)


if __name__ == "__main__":
    serve(
        {
            "reachable": reachable,
            "onboard": onboard,
            "onboard_pool": onboard_pool,
            "registry_commit": registry_commit,
            "floor": floor,
            "fleet_create": fleet_create,
            "migrate": migrate,
            "touch": touch,
            "routing": routing,
            "routing_done": routing_done,
            "drain_pool": drain_pool,
            "batch_insert": batch_insert,
            "move": move,
        },
        hello,
    )
