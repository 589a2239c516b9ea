"""Fixtures for tenant-schema's own suite: one tenant database per test, on every live server.

Under ``CI=true`` a server that does not answer is a failure, never a skip.
"""

from __future__ import annotations

import os
import uuid

import pytest
from django.conf import settings

LIVE_SERVERS = ["sqlite", "pg", "mysql"] + (["crdb"] if "crdb" in settings.TENANT_SCHEMA["SERVERS"] else [])
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_reachable: dict[str, str | None] = {}


def server_problem(key: str) -> str | None:
    """``None`` if the server answers, else why not (cached per session)."""
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


def new_tenant_id() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def db_access(django_db_blocker):
    """Tenant databases are ours, not pytest-django's test database: allow access."""
    with django_db_blocker.unblock():
        yield


@pytest.fixture(params=LIVE_SERVERS)
def server_key(request, db_access):
    require_server(request.param)
    return request.param


@pytest.fixture
def tenant_db(server_key):
    """A fresh tenant database on each live server, dropped afterwards."""
    from tenant_schema import drop_tenant_db, get_or_create_tenant_db

    tenant_id = new_tenant_id()
    tdb = get_or_create_tenant_db(tenant_id, server=server_key)
    yield tdb
    tdb.close()
    drop_tenant_db(tenant_id, server=server_key)


@pytest.fixture
def make_tenant_db(db_access):
    """Factory for extra tenant databases: ``make_tenant_db(server_key)``."""
    from tenant_schema import drop_tenant_db, get_or_create_tenant_db

    made = []

    def make(key: str, tenant_id: str | None = None):
        require_server(key)
        tenant_id = tenant_id or new_tenant_id()
        made.append((tenant_id, key))
        return get_or_create_tenant_db(tenant_id, server=key)

    yield make
    for tenant_id, key in made:
        drop_tenant_db(tenant_id, server=key)
