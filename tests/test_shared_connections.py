"""Issue 9: the schema tenants of one server share the process's connections (``?shared_connections``).

Each tenant keeps its own alias; its wrapper borrows an idle physical
connection of the server's ``SharedPool`` when it connects and gives it back
when it closes. The search path is set in each transaction (as behind
PgBouncer), never per connection, so a connection that served one tenant
serves the next one safely. ``MAX_OPEN_CONNECTIONS`` counts physical
connections, lent or idle.

The tests run on a shared database of their own (``tstest_sharedconn_<pid>``,
dropped at the end) through a server ``pgshare`` whose sessions carry an
``application_name`` only this test sets, so ``pg_stat_activity`` counts
exactly this process's connections to it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

import psycopg
import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.db import InterfaceError, ProgrammingError, connections, transaction

from tenant_schema import aliases, tenant_context
from tenant_schema.aliases import close_tenant_connections, open_tenant_connections
from tenant_schema.databases import TenantDatabase
from tenant_schema.lifecycle.register import register_tenant
from tenant_schema.plugins import get_plugins
from tenant_schema.servers import get_server, parse_server
from tenant_schema.testing import unique_slug
from tests.tenantapp.models import Note

from .conftest import make_bare_tenant_db, require_server, server_problem

pytestmark = pytest.mark.django_db(transaction=True)

SHARED_DATABASE = f"tstest_sharedconn_{os.getpid()}"
KEY = "pgshare"
#: MAX_OPEN_CONNECTIONS in these tests: small, as PostgreSQL's 100 connections are shared with other runs.
CAP = 5
PG_URL = os.environ.get("TENANT_SCHEMA_PG_URL", "postgres://postgres@127.0.0.1:5432/")


# -- the URL option ------------------------------------------------------------------


def test_schema_isolation_shares_connections_by_default():
    server = parse_server("s", "postgres://app@db:5432/shared?isolation=schema")
    assert server.shared_connections is True
    settings = server.dialect.tenant_settings(server, "tenant_acme")
    assert settings["OPTIONS"]["cursor_factory"].tenant_schema_search_path == "tenant_acme"
    assert settings["OPTIONS"]["options"] == "-c search_path="  # never a tenant's path at start-up
    assert settings["DISABLE_SERVER_SIDE_CURSORS"] is True  # a WITH HOLD cursor would outlive the loan
    share = aliases.shared_connections_of(settings)
    assert share is not None
    assert share is aliases.shared_connections_of(server.dialect.tenant_settings(server, "tenant_other"))
    assert aliases.shared_connections_of(server.settings) is None  # the server's own connection is its own


@pytest.mark.parametrize(
    ("url", "shared"),
    [
        ("postgres://app@db/shared?isolation=schema&shared_connections=false", False),
        ("postgres://app@db/shared?isolation=schema&shared_connections=true", True),
        ("postgres://app@db/?isolation=database", False),
        ("postgres://app@db/", False),
        ("postgres://app@db/shared?isolation=schema&tenant_roles=true", False),  # per-tenant logins
        ("postgres://app@db/shared?isolation=schema&pooler=transaction", False),  # the pooler shares already
        ("postgres://app@db/shared?isolation=schema&pooler=transaction&shared_connections=true", True),
        ("postgres://app@db/shared?isolation=schema&conn_max_age=60", True),
        ("sqlite:///var/tenants/", False),
    ],
)
def test_when_connections_are_shared(url, shared):
    server = parse_server("s", url)
    assert server.shared_connections is shared
    assert "shared_connections" not in server.settings["OPTIONS"]
    if server.isolation == "schema" and not shared:
        settings = server.dialect.tenant_settings(server, "tenant_acme")
        assert aliases.shared_connections_of(settings) is None


def test_a_plain_schema_tenant_keeps_its_start_up_path_when_not_shared():
    server = parse_server("d", "postgres://app@db:5432/shared?isolation=schema&shared_connections=false")
    assert server.dialect.tenant_settings(server, "tenant_acme")["OPTIONS"] == {"options": "-c search_path=tenant_acme"}


def test_behind_a_pooler_the_shared_connections_have_no_start_up_parameter():
    server = parse_server(
        "b", "postgres://app@bouncer:6432/shared?isolation=schema&pooler=transaction&shared_connections=true"
    )
    options = server.dialect.tenant_settings(server, "tenant_acme")["OPTIONS"]
    assert "options" not in options  # PgBouncer refuses it
    assert options["cursor_factory"].tenant_schema_search_path == "tenant_acme"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://u@h/?shared_connections=true", "shared_connections=true needs isolation=schema"),
        ("postgres://u@h/s?isolation=schema&tenant_roles=true&shared_connections=true", "tenant_roles=true"),
        ("postgres://u@h/s?isolation=schema&shared_connections=maybe", "shared_connections must be true or false"),
        ("cockroachdb://root@h:26257/s?isolation=schema&shared_connections=true", "cannot share connections"),
    ],
)
def test_bad_shared_connections_settings_are_clear_errors(url, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        parse_server("bad", url)


def test_cockroachdb_does_not_inherit_sharing_from_postgresql():
    """CockroachDB's dialect derives from PostgreSQL's; sharing is tested on PostgreSQL only."""
    server = parse_server("c", "cockroachdb://root@h:26257/shared?isolation=schema")
    assert server.shared_connections is False


# -- a live server whose sessions this test can count ------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _drop_the_shared_database_at_the_end(django_db_blocker):
    yield
    if server_problem("pg"):
        return
    with django_db_blocker.unblock():
        close_tenant_connections()
        pg = get_server("pg")
        get_plugins().hook.tenant_schema_drop_database(dialect=pg.dialect, server=pg, name=SHARED_DATABASE)
        pg.connection().close()


class SharedServer:
    """The ``pgshare`` server: schema tenants in ``SHARED_DATABASE``, sessions named ``self.app``."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.app = f"tsshare_{uuid.uuid4().hex[:10]}"
        self.url = f"{PG_URL}{SHARED_DATABASE}?isolation=schema&shared_connections=true&application_name={self.app}"
        base = settings.TENANT_SCHEMA
        settings.TENANT_SCHEMA = {
            **base,
            "SERVERS": {**base["SERVERS"], KEY: self.url},
            "MAX_OPEN_CONNECTIONS": CAP,
            "CONNECTION_WAIT_TIMEOUT": 10,
        }

    def sessions(self) -> list[int]:
        """Backend pids of this server's sessions, from PostgreSQL's side."""
        params = get_server("pg").settings
        with psycopg.connect(
            host=params["HOST"], port=params["PORT"], user=params["USER"], dbname="postgres", autocommit=True
        ) as counter:
            rows = counter.execute(
                "SELECT pid FROM pg_catalog.pg_stat_activity WHERE application_name = %s", [self.app]
            ).fetchall()
        return [pid for (pid,) in rows]

    def settled_sessions(self, at_most: int) -> list[int]:
        """Sessions, waiting (bounded) for backends that are still exiting."""
        deadline = time.monotonic() + 5
        while len(pids := self.sessions()) > at_most and time.monotonic() < deadline:
            time.sleep(0.05)
        return pids


@pytest.fixture
def shared(settings, db_access):
    require_server("pg")
    pg = get_server("pg")
    get_plugins().hook.tenant_schema_create_database(dialect=pg.dialect, server=pg, name=SHARED_DATABASE)
    close_tenant_connections()
    server = SharedServer(settings)
    yield server
    close_tenant_connections()


def make_tenants(count: int) -> list[TenantDatabase]:
    """``count`` registered schema tenants, each with a table ``item`` holding one row naming the tenant."""
    tdbs = [make_bare_tenant_db(KEY) for _ in range(count)]
    for tdb in tdbs:
        with tdb.connection.cursor() as cursor:
            cursor.execute("CREATE TABLE item (id serial PRIMARY KEY, owner text NOT NULL)")
            cursor.execute("INSERT INTO item (owner) VALUES (%s)", [tdb.slug])
    return tdbs


def owners(tdb: TenantDatabase) -> list[str]:
    with tdb.connection.cursor() as cursor:
        cursor.execute("SELECT owner FROM item ORDER BY id")
        return [owner for (owner,) in cursor.fetchall()]


def backend_pid(alias: str) -> int:
    connections[alias].ensure_connection()
    return connections[alias].connection.info.backend_pid


def search_path(alias: str) -> str:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_catalog.current_setting('search_path')")
        return cursor.fetchone()[0]


# -- many tenants, few connections ---------------------------------------------------------


def test_200_schema_tenants_each_see_their_own_rows_through_few_connections(shared):
    tdbs = make_tenants(200)
    close_tenant_connections()
    pids = set()
    for tdb in tdbs:
        assert owners(tdb) == [tdb.slug]
        pids.add(tdb.connection.connection.info.backend_pid)
        assert len(shared.sessions()) <= CAP
    # One thread needs one connection at a time: it takes the one its last tenant used.
    assert len(pids) == 1
    assert open_tenant_connections() <= CAP
    assert len(shared.settled_sessions(CAP)) <= CAP
    for tdb in reversed(tdbs):  # and back again, every tenant still on its own schema
        assert owners(tdb) == [tdb.slug]
        assert search_path(tdb.alias) == f'"{tdb.name}"'
    close_tenant_connections()
    assert open_tenant_connections() == 0
    assert shared.settled_sessions(0) == []


def test_threads_share_the_connections_within_the_cap(shared):
    tdbs = make_tenants(40)
    close_tenant_connections()
    peak, stop, errors = [0], threading.Event(), []

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], len(shared.sessions()))
            time.sleep(0.01)

    def work(n: int) -> None:
        try:
            for i in range(3):
                for tdb in tdbs[n::4] if i % 2 == 0 else reversed(tdbs[n::4]):
                    assert owners(tdb) == [tdb.slug]
                    with transaction.atomic(using=tdb.alias):  # a transaction of several statements
                        assert search_path(tdb.alias) == f'"{tdb.name}"'
                        assert owners(tdb) == [tdb.slug]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    stop.set()
    watcher.join()
    assert errors == []
    assert 1 <= peak[0] <= CAP
    assert open_tenant_connections() <= CAP  # the threads' connections are idle in the share now
    close_tenant_connections()
    assert shared.settled_sessions(0) == []


def test_the_cap_counts_idle_shared_connections(shared):
    """Idle shared connections are open connections: the cap counts them, and gives their slots up."""
    tdbs = make_tenants(CAP + 2)
    close_tenant_connections()
    held = []
    for tdb in tdbs[: CAP - 1]:  # CAP - 1 tenants inside transactions: none can be taken from them
        atomic = transaction.atomic(using=tdb.alias)
        atomic.__enter__()
        held.append(atomic)
        assert owners(tdb) == [tdb.slug]
    assert open_tenant_connections() == CAP - 1
    for atomic in reversed(held):
        atomic.__exit__(None, None, None)
    for tdb in tdbs[: CAP - 1]:
        tdb.close()
    assert open_tenant_connections() == CAP - 1  # given back, still open, idle
    assert len(shared.sessions()) == CAP - 1
    server = get_server("pg")  # another server's connection takes a slot: one idle shared connection gives it up
    with server.connection().cursor() as cursor:
        cursor.execute("SELECT 1")
    assert open_tenant_connections() <= CAP
    for tdb in tdbs:  # the rest borrow what is idle
        assert owners(tdb) == [tdb.slug]
    assert len(shared.settled_sessions(CAP)) <= CAP
    assert open_tenant_connections() <= CAP


# -- no row and no path leaks from one tenant to the next ----------------------------------------


@pytest.fixture
def two_tenants(shared):
    """Two tenants with the tenant app's tables (``Note``), a note each.

    Registered here rather than with ``tenant_factory``, which remembers the
    server key for the end of the session, when this test's server is gone;
    the schemas go with the test's database.
    """
    a, b = register_tenant(unique_slug(), server=KEY), register_tenant(unique_slug(), server=KEY)
    for tenant in (a, b):
        with tenant_context(tenant):
            Note.objects.create(title=f"note of {tenant.slug}")
    close_tenant_connections()
    return a, b


def titles(alias: str) -> list[str]:
    return sorted(Note.objects.using(alias).values_list("title", flat=True))


def raw_titles(alias: str) -> list[str]:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT title FROM tenantapp_note ORDER BY title")
        return [title for (title,) in cursor.fetchall()]


def test_interleaved_orm_use_of_two_tenants_never_leaks_rows(two_tenants):
    a, b = two_tenants
    A, B = a.database.alias, b.database.alias
    expected = {A: [f"note of {a.slug}"], B: [f"note of {b.slug}"]}
    for i in range(10):
        for alias, other in ((A, B), (B, A)) if i % 2 else ((B, A), (A, B)):
            assert titles(alias) == sorted(expected[alias])
            assert raw_titles(alias) == sorted(expected[alias])
            with transaction.atomic(using=alias):
                Note.objects.using(alias).create(title=f"{alias} {i}")
                expected[alias].append(f"{alias} {i}")
                assert titles(other) == sorted(expected[other])  # the other tenant, outside the transaction
                assert raw_titles(alias) == sorted(expected[alias])
                with transaction.atomic(using=other):
                    assert raw_titles(other) == sorted(expected[other])
                    assert titles(alias) == sorted(expected[alias])
                assert search_path(alias) == f'"{(a if alias == A else b).database.name}"'
            assert titles(alias) == sorted(expected[alias])
    for tenant in (a, b):
        with tenant_context(tenant):
            assert sorted(Note.objects.values_list("title", flat=True)) == sorted(expected[tenant.database.alias])


def test_a_transaction_keeps_its_path_over_many_statements(two_tenants):
    a, b = two_tenants
    A, B = a.database.alias, b.database.alias
    with transaction.atomic(using=A):
        pid = backend_pid(A)
        for i in range(5):
            assert search_path(A) == f'"{a.database.name}"'
            Note.objects.using(A).create(title=f"a {i}")
            assert raw_titles(B) == [f"note of {b.slug}"]  # B works meanwhile, on another connection
            assert backend_pid(B) != pid
        assert Note.objects.using(A).count() == 6
    assert Note.objects.using(B).count() == 1


def test_a_reopened_tenant_connection_gets_another_connection_and_no_stale_path(two_tenants):
    a, b = two_tenants
    A, B = a.database.alias, b.database.alias
    first = backend_pid(A)
    connections[A].close()
    assert backend_pid(B) == first  # B borrows the connection A gave back
    assert raw_titles(B) == [f"note of {b.slug}"] and search_path(B) == f'"{b.database.name}"'
    with transaction.atomic(using=B):  # B holds it: A must get another one
        assert raw_titles(B) == [f"note of {b.slug}"]
        second = backend_pid(A)
        assert second != first
        assert raw_titles(A) == [f"note of {a.slug}"] and search_path(A) == f'"{a.database.name}"'
    connections[A].close()
    connections[B].close()
    with transaction.atomic(using=A):  # and the first one back, for A, with A's path
        assert backend_pid(A) in (first, second)
        assert raw_titles(A) == [f"note of {a.slug}"] and search_path(A) == f'"{a.database.name}"'


def test_a_session_level_path_left_by_a_tenant_does_not_reach_the_next(two_tenants):
    a, b = two_tenants
    A, B = a.database.alias, b.database.alias
    with connections[A].cursor() as cursor:  # a session-level SET, not SET LOCAL
        cursor.execute(f'SET search_path = "{a.database.name}"')
    pid = backend_pid(A)
    connections[A].close()
    assert backend_pid(B) == pid
    assert raw_titles(B) == [f"note of {b.slug}"]
    assert titles(B) == [f"note of {b.slug}"]


def test_a_cursor_kept_past_its_close_refuses_to_run_on_another_tenants_loan(two_tenants):
    a, b = two_tenants
    A, B = a.database.alias, b.database.alias
    stale = connections[A].cursor()
    connections[A].close()
    assert raw_titles(B) == [f"note of {b.slug}"]  # B now holds A's former connection
    with pytest.raises(InterfaceError, match="given back to its server's shared connections"):
        stale.execute("SELECT title FROM tenantapp_note")
    with transaction.atomic(using=B):  # inside B's transaction too
        assert titles(B) == [f"note of {b.slug}"]
        with pytest.raises(InterfaceError, match="given back"):
            stale.execute("SELECT title FROM tenantapp_note")
    assert titles(A) == [f"note of {a.slug}"]


def test_a_wrapper_closed_inside_a_transaction_does_not_reconnect(two_tenants):
    a, b = two_tenants
    A, B = a.database.alias, b.database.alias
    with pytest.raises(ProgrammingError, match="Cannot open a new connection in an atomic block"):
        with transaction.atomic(using=A):
            Note.objects.using(A).create(title="rolled back")
            connections[A].close()  # the connection goes back, its transaction rolled back
            assert raw_titles(B) == [f"note of {b.slug}"]
            Note.objects.using(A).count()
    assert titles(A) == [f"note of {a.slug}"]


def test_an_idle_shared_connection_serves_no_one(two_tenants):
    a, _ = two_tenants
    A = a.database.alias
    connection = connections[A]
    connection.ensure_connection()
    raw = connection.connection
    connection.close()
    with pytest.raises(psycopg.InterfaceError, match="idle in its server's shared connections"):
        raw.cursor()
    with pytest.raises(psycopg.InterfaceError, match="serves no tenant"):
        raw.execute("SELECT 1")


def test_an_idle_connection_the_server_ended_is_not_lent(two_tenants):
    a, b = two_tenants
    A, B = a.database.alias, b.database.alias
    pid = backend_pid(A)
    connections[A].close()
    with psycopg.connect(PG_URL.replace("postgres://", "postgresql://") + "postgres", autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s, 10000)", [pid]).fetchone()[0]
    assert raw_titles(B) == [f"note of {b.slug}"]
    assert backend_pid(B) != pid


def test_an_executemany_in_autocommit_runs_in_the_tenants_schema(two_tenants):
    a, b = two_tenants
    A, B = a.database.alias, b.database.alias
    with connections[A].cursor() as cursor:
        cursor.executemany(
            "INSERT INTO tenantapp_note (title, body, pinned) VALUES (%s, %s, false)", [("many 1", ""), ("many 2", "")]
        )
    connections[A].close()
    assert raw_titles(B) == [f"note of {b.slug}"]
    assert raw_titles(A) == sorted([f"note of {a.slug}", "many 1", "many 2"])


def test_settings_of_the_test_suite_share_the_pgschema_connections():
    """``pgschema`` (no option) shares, ``pgschemaroles`` (tenant roles) cannot."""
    servers = django_settings.TENANT_SCHEMA["SERVERS"]
    assert parse_server("pgschema", servers["pgschema"]).shared_connections is True
    assert parse_server("pgschemaroles", servers["pgschemaroles"]).shared_connections is False


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_leaves_the_parents_shared_connections_alone(two_tenants):
    """A child neither uses nor ends the sessions it inherited (libpq's goodbye would end the parent's)."""
    a, b = two_tenants
    A, B = a.database.alias, b.database.alias
    with transaction.atomic(using=B):  # two connections: B's stays lent, A's goes back idle
        lent, idle = backend_pid(B), backend_pid(A)
    connections[A].close()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        code = 1
        try:
            connections[B].close()
            close_tenant_connections()
            code = 0 if open_tenant_connections() == 0 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert raw_titles(B) == [f"note of {b.slug}"] and backend_pid(B) == lent
    with transaction.atomic(using=B):
        assert raw_titles(A) == [f"note of {a.slug}"] and backend_pid(A) == idle


def test_a_temporary_table_left_by_a_tenant_is_gone_for_the_next(two_tenants):
    """pg_temp is searched first: without DISCARD TEMP on give-back, B would read A's temporary rows."""
    a, b = two_tenants
    A, B = a.database.alias, b.database.alias
    with connections[A].cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE tenantapp_note (title text)")
        cursor.execute("INSERT INTO tenantapp_note VALUES ('temporary row of a')")
    pid = backend_pid(A)
    connections[A].close()
    assert backend_pid(B) == pid  # the same physical connection
    assert raw_titles(B) == [f"note of {b.slug}"]
    with connections[B].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname LIKE 'pg_temp%%'")
        assert cursor.fetchone() == (0,)
