"""Fixtures for tenant-schema's own suite: one tenant database per test, on every live server.

Under ``CI=true`` a server that does not answer is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import uuid

import pytest
from django.conf import settings

LIVE_SERVERS = ["sqlite", "pg", "mysql"] + (["crdb"] if "crdb" in settings.TENANT_SCHEMA["SERVERS"] else [])
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: Servers in tests/settings.py only while a service ``./run test`` starts runs: the variable naming it.
SERVICE_SERVERS = {
    "pgbouncer": "TENANT_SCHEMA_PGBOUNCER_URL",
    "pgbouncerschema": "TENANT_SCHEMA_PGBOUNCER_URL",
    "pg2": "TENANT_SCHEMA_PG2_URL",  # the second PostgreSQL cluster (port 5433)
}
_reachable: dict[str, str | None] = {}


def server_problem(key: str) -> str | None:
    """``None`` if the server answers, else why not (cached per session)."""
    if key in SERVICE_SERVERS and key not in settings.TENANT_SCHEMA["SERVERS"]:
        return f"{key} is not configured: {SERVICE_SERVERS[key]} is not set (./run test starts the service and sets it)"
    if key not in _reachable:
        from tenant_schema.servers import get_server

        server = get_server(key)
        try:
            if server.dialect.name != "sqlite":
                with server.connection().cursor() as cursor:
                    cursor.execute("SELECT 1")
            _reachable[key] = None
        except Exception as exc:  # noqa: BLE001 - reported below
            _reachable[key] = f"{key} ({server.safe_url()}) unreachable: {exc}"
    return _reachable[key]


def require_server(key: str) -> None:
    problem = server_problem(key)
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true and a live database is missing: {problem}")
        pytest.skip(problem)


def require_live_server(key: str) -> None:
    """``require_server``, and for a schema-isolated server its shared database, created when missing."""
    from tenant_schema.plugins import get_plugins
    from tenant_schema.servers import get_server

    server = get_server(key)
    if server.isolation != "schema":
        require_server(key)
        return
    base = {"pgschema": "pg", "pgschemaroles": "pg", "pgbouncerschema": "pgbouncer"}.get(key, key)
    require_server(base)
    plain = get_server(base)
    get_plugins().hook.tenant_schema_create_database(dialect=plain.dialect, server=plain, name=server.settings["NAME"])


def require_redis() -> str:
    """The URL of the Redis ``./run test`` started (``TENANT_SCHEMA_REDIS_URL``), once it answers.

    Skips without one, except under ``CI=true``, where a missing Redis fails.
    """
    url = os.environ.get("TENANT_SCHEMA_REDIS_URL")
    problem = None if url else "TENANT_SCHEMA_REDIS_URL is not set (./run test starts Redis and sets it)"
    if url:
        import redis

        try:
            redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        except redis.RedisError as exc:
            problem = f"Redis at {url} does not answer: {exc}"
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true and Redis is missing: {problem}")
        pytest.skip(problem)
    return url


def new_tenant_id() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def pytest_addoption(parser):
    parser.addoption(
        "--reliability-report",
        metavar="FILE",
        default=None,
        help="write the attack-class counts of this run to FILE (see tests/reliability.py)",
    )


_report = None  # the --reliability-report collector of this run, if asked for


def pytest_configure(config):
    global _report
    config.addinivalue_line("markers", "attack(name): the test runs an attack class of docs/reliability.md")
    if config.getoption("--reliability-report"):
        from .reliability import Report

        _report = Report()


def pytest_runtest_logreport(report):
    if _report is not None and (report.when == "call" or (report.when == "setup" and report.outcome != "passed")):
        _report.add(report.nodeid, report.outcome)


def pytest_sessionfinish(session):
    if _report is not None:
        from pathlib import Path

        _report.write(Path(session.config.getoption("--reliability-report")))


def pytest_collection_modifyitems(items):
    """Tests that use tenants use the registry: they are ``django_db(transaction=True)`` tests.

    Every tenant is a registry row, written outside any test transaction
    (worker processes and threads must see it) and purged by the fixture
    that made it; the registry is flushed after each test.
    """
    from .reliability import classes_for

    for item in items:
        if "db_access" in getattr(item, "fixturenames", ()) and item.get_closest_marker("django_db") is None:
            item.add_marker(pytest.mark.django_db(transaction=True))
        for attack in classes_for(item.nodeid):
            item.add_marker(pytest.mark.attack(attack))


@pytest.fixture(scope="session", autouse=True)
def _drop_clone_templates(django_db_setup, django_db_blocker):
    """New tenant databases are cloned from a template per server: drop them after the run."""
    yield
    from tenant_schema.lifecycle.clone import drop_clone_templates

    with django_db_blocker.unblock():
        for key in [*LIVE_SERVERS, "pg2"]:
            if server_problem(key) is None:
                drop_clone_templates(key)


@pytest.fixture(autouse=True)
def _no_connections_left_in_asgiref_thread():
    """Close the tenant connections async tests leave in asgiref's one sync thread (it outlives them).

    ``sync_to_async`` and Channels' ``database_sync_to_async`` run sync code
    there when no outer sync thread exists; its connections would otherwise
    count against later tests' ``MAX_OPEN_CONNECTIONS`` and connection counts.
    """
    yield
    from asgiref.sync import SyncToAsync

    executor = SyncToAsync.single_thread_executor
    if getattr(executor, "_threads", None):  # started by some test
        from tenant_schema.aliases import close_tenant_connections

        executor.submit(close_tenant_connections).result(timeout=60)


@pytest.fixture
def db_access(django_db_blocker):
    """Tenant databases are ours, not pytest-django's test database: allow access."""
    with django_db_blocker.unblock():
        yield


@pytest.fixture(params=LIVE_SERVERS)
def server_key(request, db_access):
    require_server(request.param)
    return request.param


@contextlib.contextmanager
def bare_tenants():
    """Register tenants with no tenant apps and no ``TENANT_TABLES``: an empty database to test tables in."""
    from django.test import override_settings  # not at import: spawned children import this module early

    with override_settings(TENANT_SCHEMA={**settings.TENANT_SCHEMA, "TENANT_APPS": [], "TENANT_TABLES": []}):
        yield


def make_bare_tenant_db(key: str, slug: str | None = None):
    """A registered, ready tenant on ``key`` whose database holds no tables yet."""
    from tenant_schema import get_or_create_tenant_db

    with bare_tenants():
        return get_or_create_tenant_db(slug or new_tenant_id(), server=key)


@pytest.fixture
def tenant_db(server_key):
    """A fresh, empty tenant database on each live server, purged afterwards."""
    from tenant_schema import drop_tenant_db

    tdb = make_bare_tenant_db(server_key)
    yield tdb
    tdb.close()
    drop_tenant_db(tdb.slug)


@pytest.fixture
def make_tenant_db(db_access):
    """Factory for extra empty tenant databases: ``make_tenant_db(server_key)``."""
    from tenant_schema import drop_tenant_db

    made = []

    def make(key: str, slug: str | None = None):
        require_server(key)
        tdb = make_bare_tenant_db(key, slug)
        made.append(tdb)
        return tdb

    yield make
    for tdb in made:
        tdb.close()
        drop_tenant_db(tdb.slug)
