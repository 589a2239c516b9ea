"""Issue 9: connections and memory stay bounded at 10,000 tenants.

The cap on open connections (``MAX_OPEN_CONNECTIONS``) holds across threads
and async tasks and counts the servers' own connections; a thread past it
waits (``CONNECTION_WAIT_TIMEOUT``) and then fails with a clear error, never
overshoots. Listings visit one tenant at a time. Aliases and bindings are
evicted past ``MAX_ALIASES``, so memory follows the caps, not the fleet.

PostgreSQL sessions are counted in ``pg_stat_activity`` on a psycopg
connection of the test's own, by an ``application_name`` only this test's
server URL sets (other suites share the server).
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import threading
import time
import tracemalloc
import uuid
import weakref
from pathlib import Path

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.core.signals import request_finished
from django.db import connections
from django.db.backends.signals import connection_created
from django.urls import reverse

from tenant_schema import aliases, conf, databases, django_private
from tenant_schema.aliases import ALIAS_PREFIX, INTERNAL_ALIAS_PREFIX, close_tenant_connections, open_tenant_connections
from tenant_schema.databases import bind_tenant_db
from tenant_schema.exceptions import TenantSchemaError
from tenant_schema.servers import get_server

from .conftest import make_bare_tenant_db, require_server

pytestmark = pytest.mark.django_db(transaction=True)

#: Every alias of tenant-schema's: tenants', and the servers' own.
OUR_PREFIXES = (ALIAS_PREFIX, INTERNAL_ALIAS_PREFIX)
#: What a thread past the cap raises (``TenantSchemaError`` before issue 9, so a run on old code fails on asserts).
LIMIT_ERROR = getattr(aliases, "ConnectionLimitReached", TenantSchemaError)


def query(tdb) -> None:
    with tdb.connection.cursor() as cursor:
        cursor.execute("SELECT 1")


class Tracker:
    """Physical connections of tenant-schema's aliases as Django's wrappers show them, and the most at once.

    Counted in every thread at each ``connection_created`` (sent once the
    physical connection exists), so the peak is exact.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.refs: dict[int, weakref.ref] = {}  # id(wrapper) -> wrapper: a wrapper reconnects
        self.peak = 0

    def __call__(self, sender, connection, **kwargs) -> None:
        if not connection.alias.startswith(OUR_PREFIXES):
            return
        with self.lock:
            self.refs[id(connection)] = weakref.ref(connection)
            self.peak = max(self.peak, self.now())

    def reset(self) -> None:
        with self.lock:
            self.peak = self.now()

    def now(self) -> int:
        return sum(1 for ref in self.refs.values() if (w := ref()) is not None and w.connection is not None)


@pytest.fixture
def tracker():
    track = Tracker()
    connection_created.connect(track)
    yield track
    connection_created.disconnect(track)


class CappedPg:
    """A PostgreSQL server ``pgcap`` whose sessions carry an ``application_name`` of their own."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.app = f"tscap_{uuid.uuid4().hex[:10]}"
        url = settings.TENANT_SCHEMA["SERVERS"]["pg"]
        self.url = f"{url}{'&' if '?' in url else '?'}application_name={self.app}"
        self.configure()
        self.made: list = []

    def configure(self, **overrides) -> None:
        base = self.settings.TENANT_SCHEMA
        self.settings.TENANT_SCHEMA = {**base, "SERVERS": {**base["SERVERS"], "pgcap": self.url}, **overrides}

    def make(self, count: int) -> list:
        tdbs = [make_bare_tenant_db("pgcap") for _ in range(count)]
        self.made.extend(tdbs)
        close_tenant_connections()
        return tdbs

    def sessions(self, at_most: int | None = None) -> int:
        """Sessions of this server's connections; with ``at_most``, waits (bounded) for exiting backends."""
        params = get_server("pg").settings
        deadline = time.monotonic() + 5
        while True:
            with psycopg.connect(
                host=params["HOST"], port=params["PORT"], user=params["USER"], dbname="postgres", autocommit=True
            ) as counter:
                count = counter.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [self.app]
                ).fetchone()[0]
            if at_most is None or count <= at_most or time.monotonic() > deadline:
                return count
            time.sleep(0.05)


@pytest.fixture
def pgcap(settings, db_access):
    from tenant_schema import drop_tenant_db

    require_server("pg")
    close_tenant_connections()
    server = CappedPg(settings)
    yield server
    close_tenant_connections()
    server.configure(MAX_OPEN_CONNECTIONS=20, CONNECTION_WAIT_TIMEOUT=5)
    for tdb in server.made:
        drop_tenant_db(tdb.slug)
    close_tenant_connections()


def run_threads(count: int, work) -> list[BaseException | None]:
    """Run ``work(n)`` in ``count`` threads; each thread's exception (or ``None``)."""
    results: list[BaseException | None] = [None] * count

    def target(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:  # noqa: BLE001 - returned for the assertions
            results[n] = exc
        finally:
            close_tenant_connections()
            connections.close_all()

    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def assert_limit_errors(results, cap: int) -> None:
    """Every failure is the cap's clear error, naming the cap and both settings."""
    for exc in results:
        if exc is None:
            continue
        assert isinstance(exc, LIMIT_ERROR), repr(exc)
        message = str(exc)
        assert "MAX_OPEN_CONNECTIONS" in message and f"({cap})" in message, message
        assert "CONNECTION_WAIT_TIMEOUT" in message, message


# -- the default ------------------------------------------------------------------


def test_the_default_cap_leaves_room_on_a_default_postgresql():
    """PostgreSQL allows 100 connections by default: four processes at the default cap fit, with room to spare."""
    assert conf.DEFAULTS["MAX_OPEN_CONNECTIONS"] * 4 < 100
    assert conf.DEFAULTS["CONNECTION_WAIT_TIMEOUT"] > 0
    documented = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    for key in ("MAX_OPEN_CONNECTIONS", "CONNECTION_WAIT_TIMEOUT", "MAX_ALIASES", "max_connections"):
        assert key in documented


# -- threads ------------------------------------------------------------------------


def test_the_cap_holds_across_threads_that_keep_their_connections(pgcap, tracker):
    """10 threads x 3 tenants holding on (cap 4): the rest wait, then fail clearly; the server never sees 5."""
    tdbs = pgcap.make(3)
    pgcap.configure(MAX_OPEN_CONNECTIONS=4, CONNECTION_WAIT_TIMEOUT=1)
    tracker.reset()
    threads = 10
    holding = threading.Barrier(threads + 1, timeout=60)
    finish = threading.Event()

    def work(n: int) -> None:
        try:
            for tdb in tdbs:
                query(tdb)
        finally:
            holding.wait()  # every thread keeps what it opened until the count is taken
            finish.wait(60)

    results: list = []
    runner = threading.Thread(target=lambda: results.extend(run_threads(threads, work)))
    runner.start()
    holding.wait()
    try:
        held = pgcap.sessions(at_most=4)
        assert tracker.now() <= 4
    finally:
        finish.set()
        runner.join(120)
    assert held <= 4
    assert tracker.peak <= 4
    assert_limit_errors(results, 4)
    assert results.count(None) >= 1
    assert pgcap.sessions(at_most=0) == 0


def test_threads_wait_for_a_slot_instead_of_overshooting(pgcap, tracker):
    """10 threads x 3 tenants, each ending its request: all succeed within the cap (cap 4)."""
    tdbs = pgcap.make(3)
    pgcap.configure(MAX_OPEN_CONNECTIONS=4, CONNECTION_WAIT_TIMEOUT=30)
    tracker.reset()
    start = threading.Barrier(10, timeout=60)

    def work(n: int) -> None:
        start.wait()
        for tdb in tdbs[n % 3 :] + tdbs[: n % 3]:
            query(tdb)
            time.sleep(0.01)
        request_finished.send(sender=None)  # the end of its request: Django closes its connections

    results = run_threads(10, work)
    assert results == [None] * 10
    assert tracker.peak <= 4
    assert open_tenant_connections() == 0
    assert pgcap.sessions(at_most=0) == 0


def test_a_connection_left_by_a_thread_that_ended_is_reclaimed(pgcap):
    tdbs = pgcap.make(2)
    pgcap.configure(MAX_OPEN_CONNECTIONS=1, CONNECTION_WAIT_TIMEOUT=2)
    thread = threading.Thread(target=query, args=(tdbs[0],))  # ends without closing its connection
    thread.start()
    thread.join()
    query(tdbs[1])
    assert open_tenant_connections() == 1
    assert pgcap.sessions(at_most=1) == 1


def test_server_connections_count_against_the_cap(pgcap, tracker):
    tdbs = pgcap.make(2)
    pgcap.configure(MAX_OPEN_CONNECTIONS=2, CONNECTION_WAIT_TIMEOUT=1)
    tracker.reset()
    server = get_server("pgcap")
    for tdb in tdbs:
        query(tdb)
    assert server.dialect.database_exists(server, tdbs[0].name)  # on the server's own connection
    assert open_tenant_connections() == 2
    assert connections[tdbs[0].alias].connection is None  # the least recently used went
    assert pgcap.sessions(at_most=2) == 2
    close_tenant_connections()

    holding = threading.Barrier(7, timeout=60)
    finish = threading.Event()

    def work(n: int) -> None:  # six threads creating databases, say
        try:
            with server.connection().cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            holding.wait()
            finish.wait(60)

    results: list = []
    runner = threading.Thread(target=lambda: results.extend(run_threads(6, work)))
    runner.start()
    holding.wait()
    try:
        held = pgcap.sessions(at_most=2)
    finally:
        finish.set()
        runner.join(120)
    assert held <= 2
    assert tracker.peak <= 2
    assert_limit_errors(results, 2)
    assert results.count(None) == 2


async def test_async_tasks_share_the_cap(pgcap, tracker):
    """Async tasks (one connection object each, in the thread-sensitive executor) stay inside the cap."""
    tdbs = await sync_to_async(pgcap.make)(3)
    pgcap.configure(MAX_OPEN_CONNECTIONS=3, CONNECTION_WAIT_TIMEOUT=5)
    tracker.reset()

    async def task(n: int) -> None:
        for i in range(3):
            await sync_to_async(query)(tdbs[(n + i) % 3])
            await asyncio.sleep(0)

    try:
        await asyncio.gather(*(task(n) for n in range(8)))
        assert tracker.peak <= 3
        assert await sync_to_async(pgcap.sessions)(at_most=3) <= 3
    finally:
        await sync_to_async(close_tenant_connections)()


# -- listings ---------------------------------------------------------------------


def test_listings_visit_one_tenant_at_a_time(pgcap, tracker, client, django_user_model):
    """``tenant_list`` and the admin's list over more tenants than the cap: one tenant connection at a time."""
    tdbs = pgcap.make(25)  # more than the default cap
    slugs = {tdb.slug for tdb in tdbs}

    def leftover_aliases() -> set[str]:
        return {alias for alias in connections.settings if alias.removeprefix(ALIAS_PREFIX) in slugs}

    for tdb in tdbs:
        aliases.unregister_alias(tdb.alias)
    out = io.StringIO()
    call_command("tenant_list", "--json", stdout=out)
    rows = {row["slug"]: row for row in json.loads(out.getvalue())}
    assert all(rows[slug]["tables"] is not None for slug in slugs)  # every one reachable
    assert tracker.peak <= 2  # the server's connection and one tenant's
    assert leftover_aliases() == set()
    assert pgcap.sessions(at_most=0) == 0

    tracker.reset()
    user = django_user_model.objects.create_superuser("capadmin", "capadmin@example.com", "pw")
    client.force_login(user)
    response = client.get(reverse("admin:tenant_schema_tenant_changelist") + "?all=")
    assert response.status_code == 200
    assert response.content.count(b'class="field-tables">') >= 25
    assert b'class="field-tables">\xe2\x80\x94<' not in response.content  # none shown unreachable
    assert tracker.peak <= 2
    assert leftover_aliases() == set()
    # The test client keeps connections past the request (Django's request end would close
    # the server's): at most that one is left.
    assert pgcap.sessions(at_most=1) <= 1


# -- aliases and bindings -----------------------------------------------------------


@pytest.fixture
def sqlite_tenants(settings, db_access):
    """``make(count)``: empty SQLite tenant files, bound like the registry binds them (no registry rows)."""
    server = get_server("sqlite")
    tag = uuid.uuid4().hex[:8]
    files: list[Path] = []

    def make(count: int) -> list[tuple[str, str]]:
        made = []
        for i in range(len(files), len(files) + count):
            slug, name = f"cap-{tag}-{i}", f"tstest_cap_{tag}_{i}"
            path = server.dialect.file(server, name)
            path.touch()  # an empty file is an empty SQLite database
            files.append(path)
            made.append((slug, name))
        return made

    yield make
    close_tenant_connections()
    with databases._tenants_lock:
        for cache in (databases._tenants, databases._tenants_with_tables, databases._tenants_evicted):
            for slug in [s for s in cache if s.startswith(f"cap-{tag}-")]:
                cache.pop(slug, None)
    for alias in [a for a in connections.settings if a.startswith(f"{ALIAS_PREFIX}cap-{tag}-")]:
        aliases.unregister_alias(alias)
    for path in files:
        path.unlink(missing_ok=True)


def touch_tenant(slug: str, name: str) -> None:
    query(bind_tenant_db(slug, "sqlite", name))  # what Tenant.database then a query do


def tenant_aliases() -> list[str]:
    return [alias for alias in connections.settings if alias.startswith("tenant")]


def test_touching_many_tenants_keeps_aliases_and_memory_bounded(settings, sqlite_tenants):
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "MAX_ALIASES": 50}
    tenants = sqlite_tenants(300)
    tracemalloc.start()
    try:
        for slug, name in tenants[:200]:
            touch_tenant(slug, name)
        gc.collect()
        at_200 = tracemalloc.get_traced_memory()[0]
        for slug, name in tenants[200:]:
            touch_tenant(slug, name)
            assert len(tenant_aliases()) <= 50
        gc.collect()
        at_300 = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(tenant_aliases()) <= 50
    assert open_tenant_connections() <= conf.DEFAULTS["MAX_OPEN_CONNECTIONS"]
    assert len(databases._tenants) <= 50
    own_wrappers = [slug for slug, _ in tenants if django_private.has_connection(f"{ALIAS_PREFIX}{slug}")]
    assert len(own_wrappers) <= 2 * 50
    assert at_300 - at_200 < 100 * 2048, f"{(at_300 - at_200) / 100:.0f} bytes per extra tenant"


def test_an_alias_in_use_is_never_evicted(settings, sqlite_tenants):
    """Open in another thread, or in a transaction here: kept, whatever the bound."""
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "MAX_ALIASES": 6, "MAX_OPEN_CONNECTIONS": 4}
    (held_slug, held_name), (atomic_slug, atomic_name), *others = sqlite_tenants(30)
    opened, done = threading.Event(), threading.Event()

    def holder():
        tdb = bind_tenant_db(held_slug, "sqlite", held_name)
        query(tdb)
        opened.set()
        done.wait(30)
        close_tenant_connections()

    thread = threading.Thread(target=holder)
    thread.start()
    opened.wait(30)
    try:
        atomic_tdb = bind_tenant_db(atomic_slug, "sqlite", atomic_name)
        with atomic_tdb.atomic():
            query(atomic_tdb)
            for slug, name in others:
                touch_tenant(slug, name)
            assert atomic_tdb.alias in connections.settings
            query(atomic_tdb)  # still usable
            assert f"{ALIAS_PREFIX}{held_slug}" in connections.settings
    finally:
        done.set()
        thread.join(30)
    assert len(tenant_aliases()) <= 6
    for slug, name in others[:10]:  # both idle now: evicted at the next registrations
        touch_tenant(slug, name)
    assert f"{ALIAS_PREFIX}{held_slug}" not in connections.settings
    assert atomic_tdb.alias not in connections.settings
    assert len(tenant_aliases()) <= 6


def test_an_evicted_binding_still_held_is_the_same_object(settings, sqlite_tenants):
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "MAX_ALIASES": 3}
    (slug, name), *others = sqlite_tenants(6)
    held = bind_tenant_db(slug, "sqlite", name)
    for other_slug, other_name in others:
        bind_tenant_db(other_slug, "sqlite", other_name)
    assert slug not in databases._tenants
    assert bind_tenant_db(slug, "sqlite", name) is held


def test_a_new_binding_never_trusts_an_alias_left_for_another_location(settings, sqlite_tenants):
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "MAX_ALIASES": 3}
    (slug, old_name), (_, new_name), *others = sqlite_tenants(6)
    old = bind_tenant_db(slug, "sqlite", old_name)
    query(old)  # its alias stays registered while open
    del old
    for other_slug, other_name in others:
        bind_tenant_db(other_slug, "sqlite", other_name)  # binding only: no alias registered
    gc.collect()
    assert slug not in databases._tenants and f"{ALIAS_PREFIX}{slug}" in connections.settings
    moved = bind_tenant_db(slug, "sqlite", new_name)  # the registry now says it lives elsewhere
    assert moved.connection.settings_dict["NAME"].split("?")[0].endswith(f"/{new_name}.sqlite3")


def test_the_cap_and_the_bound_read_their_settings(settings):
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "MAX_OPEN_CONNECTIONS": 7}
    assert aliases.max_open_connections() == 7
    assert aliases.max_aliases() == 70
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "MAX_ALIASES": 12, "CONNECTION_WAIT_TIMEOUT": 0.5}
    assert aliases.max_aliases() == 12
    assert aliases.connection_wait_timeout() == 0.5
    from django.core.exceptions import ImproperlyConfigured

    for key, bad in (("MAX_ALIASES", 0), ("CONNECTION_WAIT_TIMEOUT", -1), ("MAX_OPEN_CONNECTIONS", "many")):
        settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, key: bad}
        with pytest.raises(ImproperlyConfigured, match=key):
            {"MAX_ALIASES": aliases.max_aliases, "CONNECTION_WAIT_TIMEOUT": aliases.connection_wait_timeout}.get(
                key, aliases.max_open_connections
            )()
        settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, key: conf.DEFAULTS[key]}


def test_a_wait_timeout_of_zero_fails_at_once(pgcap):
    tdbs = pgcap.make(2)
    pgcap.configure(MAX_OPEN_CONNECTIONS=1, CONNECTION_WAIT_TIMEOUT=0)
    with tdbs[0].atomic():  # its one connection is busy
        started = time.monotonic()
        with pytest.raises(LIMIT_ERROR, match=r'MAX_OPEN_CONNECTIONS"\] \(1\)'):
            query(tdbs[1])
        assert time.monotonic() - started < 1
    query(tdbs[1])  # free again
