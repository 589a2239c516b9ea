"""Tenant aliases: lazy, complete, thread-safe; open tenant connections capped per process."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from tenant_schema import databases
from tenant_schema.databases import bind_tenant_db, close_tenant_connections, open_tenant_connections
from tests.conftest import new_tenant_id


def test_ten_thousand_tenants_bound_build_no_alias(db_access):
    before = set(connections.settings)
    slugs = [f"bulk-{i}" for i in range(10_000)]
    try:
        bound = [bind_tenant_db(slug, "sqlite", f"tstest_bulk_{i}") for i, slug in enumerate(slugs)]
        assert len({tdb.alias for tdb in bound}) == 10_000
        assert set(connections.settings) == before
        bound[1234].ensure_alias()  # first use registers exactly one
        assert set(connections.settings) - before == {"tenant:bulk-1234"}
    finally:
        for tdb in bound:
            databases.forget_binding(tdb)  # closes and unregisters bulk-1234's alias too


def test_alias_settings_are_complete_and_default_to_no_persistent_connections(tenant_db):
    tenant_db.ensure_alias()
    alias_settings = connections.settings[tenant_db.alias]
    default = connections.settings["default"]
    assert set(default) <= set(alias_settings)
    assert set(default["TEST"]) <= set(alias_settings["TEST"])
    assert alias_settings["CONN_MAX_AGE"] == 0 and alias_settings["TIME_ZONE"] is None
    assert alias_settings["AUTOCOMMIT"] is True and alias_settings["ATOMIC_REQUESTS"] is False
    with tenant_db.connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone()[0] == 1


def test_the_server_url_can_ask_for_persistent_connections(settings, db_access, tmp_path):
    from tenant_schema import drop_tenant_db, get_or_create_tenant_db

    settings.TENANT_SCHEMA = {
        **settings.TENANT_SCHEMA,
        "SERVERS": {**settings.TENANT_SCHEMA["SERVERS"], "pooled": f"sqlite:///{tmp_path}/?conn_max_age=60"},
    }
    tenant_id = new_tenant_id()
    tdb = get_or_create_tenant_db(tenant_id, server="pooled")
    try:
        tdb.ensure_alias()
        assert connections.settings[tdb.alias]["CONN_MAX_AGE"] == 60
    finally:
        drop_tenant_db(tenant_id, server="pooled")


def test_concurrent_registration_is_idempotent_and_never_breaks_iteration(db_access, settings):
    """Threads registering aliases while others iterate connections (as every request end does)."""
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "MAX_ALIASES": 1000}  # all 300 stay registered
    slugs = [f"reg-{new_tenant_id()}" for _ in range(300)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def iterate():
        while not stop.is_set():
            try:
                for _ in connections.all(initialized_only=True):
                    pass
                list(connections.settings)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)
                return

    def register(chunk):
        try:
            for slug in chunk:
                databases.register_alias(f"tenant:{slug}", {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    readers = [threading.Thread(target=iterate) for _ in range(2)]
    writers = [threading.Thread(target=register, args=(slugs[i::4] + slugs,)) for i in range(4)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    try:
        assert errors == []
        assert all(f"tenant:{slug}" in connections.settings for slug in slugs)
        assert connections.settings[f"tenant:{slugs[0]}"]["OPTIONS"] == {}
    finally:
        for slug in slugs:
            databases.unregister_alias(f"tenant:{slug}")


def query(tdb) -> None:
    with tdb.connection.cursor() as cursor:
        cursor.execute("SELECT 1")


@pytest.fixture
def cap_of_three(settings, db_access):
    close_tenant_connections()
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "MAX_OPEN_CONNECTIONS": 3}
    yield
    close_tenant_connections()


def pg_backends(names: list[str], expected: int) -> int:
    """Server-side backends on ``names``; waits (bounded) for closed ones to finish exiting.

    Counted on a psycopg connection of its own: the server's alias counts
    against MAX_OPEN_CONNECTIONS, and using it would close a tenant's.
    """
    import time

    import psycopg

    from tenant_schema.servers import get_server

    params = get_server("pg").settings
    for _ in range(50):
        with psycopg.connect(
            host=params["HOST"], port=params["PORT"], user=params["USER"], dbname="postgres", autocommit=True
        ) as counter:
            count = counter.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = ANY(%s)", [names]
            ).fetchone()[0]
        if count == expected:
            break
        time.sleep(0.1)  # a backend leaves pg_stat_activity shortly after its client hangs up
    return count


@pytest.mark.parametrize("key", ["sqlite", "pg", "mysql"])
def test_open_connections_are_capped_least_recently_used_first(key, cap_of_three, make_tenant_db):
    tdbs = [make_tenant_db(key) for _ in range(5)]
    for tdb in tdbs[:3]:
        query(tdb)
    assert open_tenant_connections() == 3
    raw = {i: connections[tdbs[i].alias].connection for i in range(3)}
    query(tdbs[0])  # now tdbs[1] is the least recently used
    query(tdbs[3])
    assert [connections[t.alias].connection is not None for t in tdbs[:4]] == [True, False, True, True]
    query(tdbs[4])
    assert [connections[t.alias].connection is not None for t in tdbs] == [True, False, False, True, True]
    assert open_tenant_connections() == 3
    assert connections[tdbs[1].alias].connection is None
    if key == "pg":
        assert raw[1].closed and raw[2].closed and not raw[0].closed
        assert pg_backends([t.name for t in tdbs], 3) == 3
    query(tdbs[1])  # an evicted tenant simply reconnects
    assert open_tenant_connections() == 3
    close_tenant_connections()
    assert open_tenant_connections() == 0
    if key == "pg":
        assert pg_backends([t.name for t in tdbs], 0) == 0


def test_a_connection_inside_a_transaction_is_never_evicted(cap_of_three, make_tenant_db):
    tdbs = [make_tenant_db("sqlite") for _ in range(5)]
    with tdbs[0].atomic():
        query(tdbs[0])
        for tdb in tdbs[1:]:
            query(tdb)
        assert connections[tdbs[0].alias].connection is not None
    assert open_tenant_connections() <= 4


def test_another_threads_connection_is_closed_by_that_thread(cap_of_three, make_tenant_db):
    """At the cap with no idle connection of its own, a thread asks the others and waits for one to close."""
    import time

    from tenant_schema import aliases

    tdbs = [make_tenant_db("sqlite") for _ in range(4)]
    close_tenant_connections()
    opened = threading.Event()
    seen = {}

    def worker():
        query(tdbs[0])
        opened.set()
        deadline = time.monotonic() + 10
        while not aliases._open.pending.get(threading.get_ident()) and time.monotonic() < deadline:
            time.sleep(0.01)  # until the main thread, at the cap, asks this one
        seen["before"] = connections[tdbs[0].alias].connection is not None
        databases.touch(tdbs[1].alias)  # its next tenant use closes what the cap asked it to
        seen["after"] = connections[tdbs[0].alias].connection is not None

    thread = threading.Thread(target=worker)
    thread.start()
    opened.wait(10)
    with tdbs[1].atomic(), tdbs[2].atomic():  # nothing idle of its own to close
        query(tdbs[3])  # waits for the worker
        assert open_tenant_connections() == 3
    thread.join()
    assert seen == {"before": True, "after": False}
    assert open_tenant_connections() == 3


# -- a tenant moved by another process ----------------------------------------


def move_in_another_process(tenant, to: str):
    """What an operator's process does: purge ``tenant`` and register its slug on ``to``.

    The purge is done behind this process's back (its binding is left as it
    was); the registration runs in a child process.
    """
    from tenant_schema.models import Tenant
    from tenant_schema.plugins import get_plugins
    from tests.tenantapp.helpers import start_child

    server = tenant.database.server
    tenant.database.close()
    get_plugins().hook.tenant_schema_drop_database(dialect=server.dialect, server=server, name=tenant.database_name)
    Tenant.objects.filter(pk=tenant.pk).delete()
    out, err = start_child(tenant.slug, to).communicate(timeout=120)
    assert out.strip() == "ready", err


@pytest.mark.django_db(transaction=True)
def test_a_tenant_moved_by_another_process_is_followed_by_every_thread(server_key):
    """The registry is the truth: a binding (and other threads' connections) follow a moved tenant."""
    import queue

    from django.http import HttpResponse
    from django.test import RequestFactory

    from tenant_schema.context import tenant_context
    from tenant_schema.lifecycle.archive import purge_tenant
    from tenant_schema.lifecycle.register import register_tenant
    from tenant_schema.middleware import TenantMiddleware, ready_tenants
    from tenant_schema.testing import unique_slug
    from tests.conftest import require_server
    from tests.tenantapp.models import Note

    source = "pg" if server_key == "sqlite" else "sqlite"
    require_server(source)
    slug = unique_slug("moved")
    tenant = register_tenant(slug, server=source)
    with tenant_context(tenant):
        Note.objects.create(title="at the old location")
    middleware = TenantMiddleware(
        lambda request: HttpResponse(f"{request.tenant.database.server.key}:{Note.objects.count()}")
    )

    def request() -> bytes:
        return middleware(RequestFactory().get("/", HTTP_HOST=f"{slug}.example.com")).content

    steps, answers = queue.Queue(), queue.Queue()

    def worker():  # another request thread of this process, with its own connection
        try:
            while steps.get() is not None:
                try:
                    with tenant_context(slug):
                        answers.put(Note.objects.count())
                except Exception as exc:  # noqa: BLE001 - asserted below
                    answers.put(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert request() == f"{source}:1".encode()
        steps.put("count")
        assert answers.get(timeout=30) == 1
        move_in_another_process(tenant, server_key)
        ready_tenants.forget()  # i.e. ROUTING_CACHE_SECONDS later
        assert request() == f"{server_key}:0".encode()
        assert request() == f"{server_key}:0".encode()
        steps.put("count")
        assert answers.get(timeout=30) == 0  # the worker's old connection is not reused
    finally:
        steps.put(None)
        thread.join(30)
        purge_tenant(slug)


def test_asking_for_another_location_is_an_error_before_anything_is_created(db_access):
    from tenant_schema import TenantSchemaError, drop_tenant_db, get_or_create_tenant_db
    from tenant_schema.databases import database_name
    from tenant_schema.servers import get_server

    tenant_id = new_tenant_id()
    tdb = get_or_create_tenant_db(tenant_id, server="sqlite")
    try:
        with pytest.raises(TenantSchemaError, match="registered on server 'sqlite', not 'mysql'"):
            get_or_create_tenant_db(tenant_id, server="mysql")
        assert get_or_create_tenant_db(tenant_id, server="sqlite") is tdb
        assert get_or_create_tenant_db(tenant_id) is tdb  # no server: the registered one
    finally:
        drop_tenant_db(tenant_id, server="sqlite")
    assert not get_server("mysql").dialect.database_exists(
        get_server("mysql"), database_name(tenant_id, get_server("mysql"))
    )


# -- database names are validated before use ----------------------------------

BAD_NAMES = ["../victim", "a b", "x\n", "", "1abc", "name -c search_path=other", "x;DROP"]


def _row_with_database_name(slug: str, server: str, bad: str):
    """A registry row whose database name was written around the model's validation (raw SQL, a bad restore)."""
    from tenant_schema.models import Tenant

    tenant = Tenant.objects.create(slug=slug, server=server, database_name="placeholder", status=Tenant.Status.READY)
    Tenant.objects.filter(pk=tenant.pk).update(database_name=bad)
    return Tenant.objects.get(pk=tenant.pk)


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_a_registered_database_name_is_validated_before_anything_runs(bad, server_key):
    from tenant_schema import drop_tenant_db, get_or_create_tenant_db, get_tenant_db

    tenant_id = new_tenant_id()
    tenant = _row_with_database_name(tenant_id, server_key, bad)
    calls = [
        lambda: bind_tenant_db(tenant_id, server_key, bad),
        lambda: tenant.database,
        lambda: get_or_create_tenant_db(tenant_id, server_key),
        lambda: get_tenant_db(tenant_id, server_key),
        lambda: drop_tenant_db(tenant_id, server_key),
    ]
    try:
        for call in calls:
            with pytest.raises(ValueError, match="invalid tenant database name"):
                call()
        assert tenant_id not in {tdb.slug for tdb in databases.bound_tenants()}
    finally:
        type(tenant).objects.filter(pk=tenant.pk).delete()


def test_a_name_over_the_dialects_limit_is_refused(server_key, settings):
    from tenant_schema import get_or_create_tenant_db
    from tenant_schema.models import Tenant
    from tenant_schema.servers import get_server

    limit = get_server(server_key).dialect.max_identifier_length
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "DATABASE_PREFIX": "p" * (limit - 3)}
    slug = new_tenant_id()
    with pytest.raises(ValueError, match=f"the limit here is {limit}"):
        get_or_create_tenant_db(slug, server_key)
    assert not Tenant.objects.filter(slug=slug).exists()  # refused before the row is written


def test_drop_never_deletes_a_file_outside_the_servers_directory(settings, db_access, tmp_path):
    from tenant_schema import drop_tenant_db

    (tmp_path / "tenants").mkdir()
    victim = tmp_path / "victim.sqlite3"
    victim.write_text("important")
    settings.TENANT_SCHEMA = {
        **settings.TENANT_SCHEMA,
        "SERVERS": {**settings.TENANT_SCHEMA["SERVERS"], "jail": f"sqlite:///{tmp_path}/tenants/"},
    }
    tenant = _row_with_database_name("x", "jail", "../victim")
    try:
        with pytest.raises(ValueError, match="invalid tenant database name '../victim'"):
            drop_tenant_db("x", server="jail")
        assert victim.read_text() == "important"
    finally:
        type(tenant).objects.filter(pk=tenant.pk).delete()
