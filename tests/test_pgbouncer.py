"""Both isolation modes through a real PgBouncer in transaction pooling (``./run test`` starts it).

``./run test`` runs PgBouncer 1.18 (Debian) in front of the test PostgreSQL
with two server connections per database and twenty in all
(``default_pool_size = max_db_connections = 2``, ``max_user_connections =
20``) and exports its URL as ``TENANT_SCHEMA_PGBOUNCER_URL``; tests/settings.py
then declares ``pgbouncer`` (database isolation) and ``pgbouncerschema``
(schema isolation), both with ``?pooler=transaction``. Without the variable
these tests skip, and fail under ``CI=true``.

The pooler's own console (``SHOW SERVERS``, ``SHOW POOLS``, ``SHOW STATS``)
and ``pg_stat_activity`` say how many server connections served the tenants.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from contextlib import closing, nullcontext
from types import SimpleNamespace

import psycopg
import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, connections, transaction
from django.test import Client

from tenant_schema import Dialect, drop_tenant_db, hookimpl, tenant_context
from tenant_schema.checks import check_servers
from tenant_schema.databases import register_alias
from tenant_schema.plugins import get_plugins
from tenant_schema.servers import get_server, parse_server
from tests.tenantapp.models import Note

from .conftest import make_bare_tenant_db, require_server, server_problem

pytestmark = pytest.mark.urls("tests.tenantapp.urls")

DATABASE, SCHEMA = "pgbouncer", "pgbouncerschema"
#: ``max_user_connections`` of the PgBouncer ``./run test`` starts: all server connections.
SERVER_CAP = 20
#: ``max_db_connections``: server connections to any one database.
POOL_SIZE = 2


# -- the pooler's console and PostgreSQL's view ------------------------------------


def bouncer_url() -> str:
    return os.environ["TENANT_SCHEMA_PGBOUNCER_URL"]


def console(command: str) -> list[dict]:
    """Rows of a PgBouncer console command (``SHOW SERVERS``), as dicts."""
    url = psycopg.conninfo.conninfo_to_dict(bouncer_url().replace("postgres://", "postgresql://"))
    with closing(psycopg.connect(**{**url, "dbname": "pgbouncer"}, autocommit=True)) as admin:
        cursor = admin.execute(command)
        names = [c.name for c in cursor.description] if cursor.description else []
        return [dict(zip(names, row)) for row in cursor.fetchall()] if names else []


def server_connections(database: str | None = None) -> int:
    """Server connections PgBouncer holds (to ``database``, or to any)."""
    return sum(1 for s in console("SHOW SERVERS") if database is None or s["database"] == database)


def backends(database: str) -> int:
    """Sessions PostgreSQL itself counts on ``database`` (direct, not through the pooler)."""
    with get_server("pg").connection().cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = %s", [database])
        return cursor.fetchone()[0]


def stats(database: str) -> tuple[int, int]:
    """``(transactions, queries)`` PgBouncer has counted on ``database``'s pool."""
    row = next(r for r in console("SHOW STATS") if r["database"] == database)
    return int(row["total_xact_count"]), int(row["total_query_count"])


def raw_client(database: str) -> psycopg.Connection:
    """A plain psycopg client of the pooler, as any other application would be one."""
    url = psycopg.conninfo.conninfo_to_dict(bouncer_url().replace("postgres://", "postgresql://"))
    return psycopg.connect(**{**url, "dbname": database}, autocommit=True, prepare_threshold=None)


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture
def bouncer(db_access):
    require_server("pg")  # tenants are checked on PostgreSQL directly too
    require_server(DATABASE)
    return DATABASE


@pytest.fixture
def shared_database(bouncer):
    """The database schema tenants share (created directly on PostgreSQL when missing)."""
    pg, shared = get_server("pg"), get_server(SCHEMA).settings["NAME"]
    get_plugins().hook.tenant_schema_create_database(dialect=pg.dialect, server=pg, name=shared)
    require_server(SCHEMA)
    return shared


@pytest.fixture(scope="session", autouse=True)
def _drop_the_shared_database_at_the_end(django_db_blocker):
    """At the end of the run, not of the module: pytest-django runs this module's tests in two groups
    (transactional ones later), and dropping the database between them made PgBouncer's next server
    login fail (``server_login_retry``) for the tests of the second group."""
    yield
    if SCHEMA not in django_settings.TENANT_SCHEMA["SERVERS"] or server_problem("pg"):
        return
    with django_db_blocker.unblock():
        pg = get_server("pg")
        get_plugins().hook.tenant_schema_drop_database(
            dialect=pg.dialect, server=pg, name=get_server(SCHEMA).settings["NAME"]
        )
        pg.connection().close()


@pytest.fixture(params=[DATABASE, SCHEMA])
def bouncer_key(request, bouncer):
    if request.param == SCHEMA:
        request.getfixturevalue("shared_database")
    return request.param


@pytest.fixture
def header_routing(settings):
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "RESOLVER": "header"}


def notes_seen(slug: str) -> list[str]:
    return Client(headers={"X-Tenant": slug}).get("/notes/").json()["titles"]


# -- the URL option ------------------------------------------------------------------


def test_pooler_is_a_server_url_option():
    server = parse_server("b", "postgres://app@bouncer:6432/?pooler=transaction&sslmode=prefer")
    assert server.pooler == "transaction"
    assert server.settings["OPTIONS"] == {"sslmode": "prefer"}
    assert server.settings["DISABLE_SERVER_SIDE_CURSORS"] is True  # a cursor WITH HOLD outlives the transaction
    assert parse_server("b", "postgres://app@bouncer:6432/?pooler=session").pooler == "session"
    assert parse_server("b", "postgres://app@bouncer:6432/?pooler=none").pooler == ""
    plain = parse_server("p", "postgres://app@db:5432/")
    assert plain.pooler == "" and not plain.settings.get("DISABLE_SERVER_SIDE_CURSORS")
    assert parse_server("m", "mysql://root@proxysql:6033/?pooler=transaction").pooler == "transaction"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://u@h/?pooler=statement", "pooler=statement cannot run a transaction of more than one statement"),
        ("postgres://u@h/?pooler=pgbouncer", "pooler must be 'transaction', 'session' or 'none'"),
        (
            "postgres://u@h/shared?isolation=schema&pooler=transaction&server_side_binding=true",
            "'server_side_binding' option cannot be combined with isolation=schema behind a pooler",
        ),
    ],
)
def test_bad_pooler_settings_are_clear_errors(url, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        server = parse_server("bad", url)
        server.dialect.tenant_settings(server, "tenant_acme")


def test_manage_py_check_reports_a_bad_pooler(settings):
    settings.TENANT_SCHEMA = {
        **settings.TENANT_SCHEMA,
        "SERVERS": {**settings.TENANT_SCHEMA["SERVERS"], "bouncer": "postgres://u:s3cret-pw@h/?pooler=statement"},
    }
    errors = [e for e in check_servers() if "'bouncer'" in e.msg]
    assert [e.id for e in errors] == ["tenant_schema.E003"]
    assert "pooler=statement" in errors[0].msg and "s3cret-pw" not in errors[0].msg


def test_schema_tenants_behind_a_transaction_pooler_carry_no_session_state():
    server = parse_server("b", "postgres://app@bouncer:6432/shared?isolation=schema&pooler=transaction")
    settings = server.dialect.tenant_settings(server, "tenant_acme")
    assert settings["NAME"] == "shared"
    assert "options" not in settings["OPTIONS"]  # no startup search_path: the pooler would refuse or drop it
    assert settings["OPTIONS"]["cursor_factory"].tenant_schema_search_path == "tenant_acme"
    assert settings["DISABLE_SERVER_SIDE_CURSORS"] is True
    session = parse_server("s", "postgres://app@bouncer:6432/shared?isolation=schema&pooler=session")
    options = session.dialect.tenant_settings(session, "tenant_acme")["OPTIONS"]  # PgBouncer refuses it there too
    assert "options" not in options and options["cursor_factory"].tenant_schema_search_path == "tenant_acme"
    assert not session.settings.get("DISABLE_SERVER_SIDE_CURSORS")  # a session pooler keeps the session
    direct = parse_server("d", "postgres://app@db:5432/shared?isolation=schema&shared_connections=false")
    assert direct.dialect.tenant_settings(direct, "tenant_acme")["OPTIONS"] == {"options": "-c search_path=tenant_acme"}


def test_a_dialect_that_cannot_set_the_path_per_transaction_is_refused(tenant_schema_plugin):
    class SessionOnly(Dialect):
        name = "sessiononly"
        engine = "django.db.backends.postgresql"
        schemes = ("sessiononly",)
        supports_schema_isolation = True

    @hookimpl
    def tenant_schema_register_dialects(register):
        register(SessionOnly)

    tenant_schema_plugin(SimpleNamespace(tenant_schema_register_dialects=tenant_schema_register_dialects))
    assert parse_server("s", "sessiononly://u@h/shared?isolation=schema").isolation == "schema"
    with pytest.raises(ImproperlyConfigured, match="cannot set a tenant's schema in each transaction"):
        parse_server("s", "sessiononly://u@h/shared?isolation=schema&pooler=transaction")
    assert parse_server("s", "sessiononly://u@h/?pooler=transaction").pooler == "transaction"


# -- why: the startup search path does not pass a transaction pooler ------------------


def test_without_the_pooler_option_pgbouncer_refuses_a_schema_tenant(shared_database):
    """PgBouncer refuses the ``options`` startup parameter; it never silently drops it here."""
    server = parse_server("nopooler", bouncer_url() + f"{shared_database}?isolation=schema")
    alias = "tenant_schema:test-nopooler"
    register_alias(alias, server.dialect.tenant_settings(server, "tenant_never"))
    with pytest.raises(OperationalError, match="unsupported startup parameter: options"):
        connections[alias].ensure_connection()


# -- isolation through a pool of two server connections -------------------------------


def test_interleaved_requests_of_two_tenants_never_see_each_others_rows(bouncer_key, tenant_factory, header_routing):
    a, b = tenant_factory(server=bouncer_key), tenant_factory(server=bouncer_key)
    for tenant in (a, b):
        with tenant_context(tenant):
            Note.objects.create(title=f"note of {tenant.slug}")
    for i in range(30):  # alternate: each request may get the server connection the other just used
        for tenant in (a, b) if i % 2 else (b, a):
            assert notes_seen(tenant.slug) == sorted(
                [f"note of {tenant.slug}"] + [f"{tenant.slug} {j}" for j in range(i)]
            )
            with tenant_context(tenant):
                Note.objects.create(title=f"{tenant.slug} {i}")
    for tenant in (a, b):
        with tenant_context(tenant), transaction.atomic(using=tenant.database.alias):
            titles = list(Note.objects.values_list("title", flat=True))
            assert len(titles) == 31 and all(tenant.slug in title for title in titles)
            Note.objects.filter(title__startswith=f"{tenant.slug} ").update(pinned=True)
            assert Note.objects.filter(pinned=True).count() == 30
    databases = {get_server(bouncer_key).settings["NAME"], a.database.name, b.database.name}
    pools = [p for p in console("SHOW POOLS") if p["database"] in databases]
    assert pools and all(p["sv_active"] + p["sv_idle"] + p["sv_used"] + p["sv_login"] <= POOL_SIZE for p in pools)


def test_a_poisoned_server_session_cannot_send_a_schema_tenant_elsewhere(shared_database, tenant_factory):
    """Another client of the pool sets ``search_path`` for the session on every server connection:
    a schema tenant still reaches its own schema, and leaves the session as it found it."""
    a, b = tenant_factory(server=SCHEMA), tenant_factory(server=SCHEMA)
    for tenant in (a, b):
        with tenant_context(tenant):
            Note.objects.create(title=f"note of {tenant.slug}")
    clients = [raw_client(shared_database) for _ in range(POOL_SIZE)]
    try:
        for client in clients:  # both transactions open at once: they hold both server connections
            client.execute("BEGIN")
            client.execute(f'SET search_path TO "{b.database.name}"')
        for client in clients:
            client.execute("COMMIT")  # a session-level SET outlives its transaction
        assert {c.execute("SHOW search_path").fetchone()[0] for c in clients} == {b.database.name}
        for _ in range(10):
            with tenant_context(a):
                assert list(Note.objects.values_list("title", flat=True)) == [f"note of {a.slug}"]
                with transaction.atomic(using=a.database.alias):
                    Note.objects.create(title="in a transaction")
                    assert Note.objects.count() == 2
                    Note.objects.filter(title="in a transaction").delete()
                with a.database.connection.cursor() as cursor:
                    cursor.execute("SELECT current_schema()")
                    assert cursor.fetchone()[0] == a.database.name
            assert {c.execute("SHOW search_path").fetchone()[0] for c in clients} == {b.database.name}
    finally:
        for client in clients:
            client.close()
        console(f"RECONNECT {shared_database}")  # the pool's sessions go back to the defaults


def test_a_schema_tenants_statement_is_one_transaction_at_the_pooler(shared_database, db_access):
    """The path travels in the statement's own message: no extra transaction, no extra round trip."""
    tdb = make_bare_tenant_db(SCHEMA)
    try:
        with tdb.connection.cursor() as cursor:
            cursor.execute("SELECT 1")  # connected, time zone set
            before = stats(shared_database)
            for _ in range(20):
                cursor.execute("SELECT current_schema()")
                assert cursor.fetchone() == (tdb.name,)
            after = stats(shared_database)
        assert (after[0] - before[0], after[1] - before[1]) == (20, 20)
        with tdb.atomic(), tdb.connection.cursor() as cursor:
            cursor.execute("CREATE TABLE counted (n integer)")
            cursor.executemany("INSERT INTO counted VALUES (%s)", [(n,) for n in range(5)])
        with tdb.connection.cursor() as cursor:
            cursor.executemany("INSERT INTO counted VALUES (%s)", [(n,) for n in range(5, 10)])  # autocommit
            cursor.execute("SELECT count(*), sum(n) FROM counted")
            assert cursor.fetchone() == (10, 45)
            cursor.execute("UPDATE counted SET n = n + 1 WHERE n >= 5")
            assert cursor.rowcount == 5
    finally:
        tdb.close()
        drop_tenant_db(tdb.slug)


def test_a_connection_whose_cursors_would_not_set_the_path_is_refused(shared_database, monkeypatch):
    """Should Django stop handing ``OPTIONS["cursor_factory"]`` to psycopg, the tenant gets an error, not a schema."""
    from django.db.backends.postgresql.base import DatabaseWrapper

    tdb = make_bare_tenant_db(SCHEMA)
    tdb.close()
    real = DatabaseWrapper.get_connection_params

    def without_cursor_factory(self):
        params = real(self)
        params.pop("cursor_factory", None)
        return params

    monkeypatch.setattr(DatabaseWrapper, "get_connection_params", without_cursor_factory)
    try:
        with pytest.raises(ImproperlyConfigured, match="does not use the cursor that sets its schema"):
            tdb.connection.ensure_connection()
        assert tdb.connection.connection is None
    finally:
        monkeypatch.undo()
        drop_tenant_db(tdb.slug)


def test_dropping_a_schema_tenant_leaves_no_setting_behind_in_the_pool(shared_database):
    """The drop's ``lock_timeout`` lives in the drop's own transaction, not in a pooled session."""
    tdb = make_bare_tenant_db(SCHEMA)
    tdb.close()
    clients: list[psycopg.Connection] = []

    def take_a_server_after_the_timeout_is_set(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if "lock_timeout" in sql and not clients:  # another client gets the server connection now free
            clients.append(raw_client(shared_database))
            clients[0].execute("BEGIN")
        return result

    try:
        with get_server(SCHEMA).connection().execute_wrapper(take_a_server_after_the_timeout_is_set):
            assert drop_tenant_db(tdb.slug)
        clients.append(raw_client(shared_database))
        clients[1].execute("BEGIN")  # both server connections of the pool are held now
        assert [c.execute("SHOW lock_timeout").fetchone()[0] for c in clients] == ["0", "0"]
    finally:
        for client in clients:
            client.close()


# -- many tenants, few server connections ------------------------------------------


def test_500_schema_tenants_are_served_by_at_most_20_server_connections(shared_database, settings):
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "MAX_OPEN_CONNECTIONS": 600, "MAX_ALIASES": 1200}
    tenants = [make_bare_tenant_db(SCHEMA) for _ in range(500)]
    peak_servers = 0
    try:
        for i, tdb in enumerate(tenants):  # every tenant keeps its own client connection open
            with tdb.connection.cursor() as cursor:
                cursor.execute("SELECT current_schema()")
                assert cursor.fetchone() == (tdb.name,)
            if i % 50 == 49:
                peak_servers = max(peak_servers, server_connections(), backends(shared_database))
        clients = sum(1 for c in console("SHOW CLIENTS") if c["database"] == shared_database)
        assert clients >= 500
        assert 1 <= peak_servers <= SERVER_CAP
        assert server_connections(shared_database) <= POOL_SIZE and backends(shared_database) <= POOL_SIZE
    finally:
        for tdb in tenants:
            tdb.close()
        pg = get_server("pg")  # all 500 schemas at once: the shared database goes (the fixture makes it again)
        get_plugins().hook.tenant_schema_drop_database(dialect=pg.dialect, server=pg, name=shared_database)


def test_more_tenant_databases_than_server_connections(bouncer):
    """Each tenant database is a pool of its own; the user's cap bounds them together."""
    tenants = [make_bare_tenant_db(DATABASE) for _ in range(SERVER_CAP + 4)]
    peak = 0
    try:
        for _ in range(2):
            for tdb in tenants:
                with tdb.connection.cursor() as cursor:
                    cursor.execute("SELECT current_database()")
                    assert cursor.fetchone() == (tdb.name,)
                peak = max(peak, server_connections())
        assert peak <= SERVER_CAP
    finally:
        for tdb in tenants:
            tdb.close()
            drop_tenant_db(tdb.slug)


def test_tenant_databases_are_made_through_the_pooler_without_a_fallback(bouncer, tenant_factory, caplog):
    """Copying a template (and renaming one into place) needs it to have no session: the pooler's
    idle server connections to it are ended first, so registration never falls back or warns."""
    caplog.set_level(logging.WARNING, logger="tenant_schema")
    for _ in range(2):
        tenant = tenant_factory(server=DATABASE)
        with tenant_context(tenant):
            assert Note.objects.count() == 0
    assert [r.getMessage() for r in caplog.records if r.name.startswith("tenant_schema")] == []


def test_a_tenant_database_is_dropped_while_the_pooler_holds_connections_to_it(bouncer):
    tdb = make_bare_tenant_db(DATABASE)
    with tdb.connection.cursor() as cursor:
        cursor.execute("CREATE TABLE kept (n integer)")
        cursor.execute("INSERT INTO kept VALUES (1)")
    assert server_connections(tdb.name) >= 1  # idle in PgBouncer's pool, still logged in to the database
    tdb.close()
    assert drop_tenant_db(tdb.slug)  # DROP DATABASE ... WITH (FORCE) ends the pool's sessions
    with get_server("pg").connection().cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", [tdb.name])
        assert cursor.fetchone() is None
    for _ in range(50):  # PgBouncer sees the ended sessions go
        if server_connections(tdb.name) == 0:
            break
        time.sleep(0.1)
    assert server_connections(tdb.name) == 0


# -- the cost of the path in each transaction --------------------------------------


def _select_one(cursor, n: int) -> None:
    for _ in range(n):
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _separate_messages(cursor, n: int, schema: str) -> None:
    """The path set the obvious way: BEGIN, SET LOCAL, the statement, COMMIT, each its own round trip."""
    for _ in range(n):
        cursor.execute("BEGIN")
        cursor.execute(f'SET LOCAL search_path TO "{schema}"')
        cursor.execute("SELECT 1")
        cursor.fetchone()
        cursor.execute("COMMIT")


def test_cost_of_the_search_path_in_each_transaction(shared_database, capsys):
    """Microseconds per ``SELECT 1`` on a tenant's Django connection: medians of interleaved rounds.

    ``./run test tests/test_pgbouncer.py -k cost -s`` prints the table of docs/operations.md.
    """
    pg, direct_shared = get_server("pg"), get_server("pgschema").settings["NAME"]
    get_plugins().hook.tenant_schema_create_database(dialect=pg.dialect, server=pg, name=direct_shared)
    made = {key: make_bare_tenant_db(key) for key in ("pg", "pgschema", DATABASE, SCHEMA)}
    db_tenant, schema_tenant = made[DATABASE], made[SCHEMA]

    def on(tdb, atomic=False, run=_select_one):
        def measure(n):
            with tdb.atomic() if atomic else nullcontext(), tdb.connection.cursor() as cursor:
                run(cursor, n)

        return measure

    cases = {
        "PostgreSQL, database tenant": on(made["pg"]),
        "PostgreSQL, schema tenant (startup search_path)": on(made["pgschema"]),
        "PgBouncer, database tenant": on(db_tenant),
        "PgBouncer, schema tenant (path in the statement's message)": on(schema_tenant),
        "PgBouncer, schema tenant, inside atomic": on(schema_tenant, atomic=True),
        "PgBouncer, BEGIN + SET LOCAL + statement + COMMIT, 4 messages": on(
            db_tenant, run=lambda cursor, n: _separate_messages(cursor, n, schema_tenant.name)
        ),
    }
    samples: dict[str, list[float]] = {label: [] for label in cases}
    n = 100
    try:
        for measure in cases.values():
            measure(10)  # connect, warm up
        for _ in range(15):  # interleaved: a busy moment slows every case alike
            for label, measure in cases.items():
                start = time.perf_counter()
                measure(n)
                samples[label].append((time.perf_counter() - start) / n * 1e6)
    finally:
        for tdb in made.values():
            tdb.close()
            drop_tenant_db(tdb.slug)
    median = {label: statistics.median(values) for label, values in samples.items()}
    with capsys.disabled():
        print()
        for label, micros in median.items():
            print(f"| {label} | {micros:.0f} µs |")
    # One round trip instead of four (the exact count is test_a_schema_tenants_statement_is_one_transaction...).
    assert (
        median["PgBouncer, schema tenant (path in the statement's message)"]
        < median["PgBouncer, BEGIN + SET LOCAL + statement + COMMIT, 4 messages"]
    )
