"""What a sign-up costs in round trips: registry commits, statements and catalogue queries, counted.

Times belong to the benchmark (``./run bench onboarding``); counts are
deterministic, so they are tested. Crash safety needs two registry commits
(the row before the database exists, so a crash leaves a resumable row;
its status after everything is built, so ``ready`` is never a lie): a
sign-up without a warm pool takes exactly those, and a pooled one one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re

import pytest
from django.db import connections
from django.db.backends.signals import connection_created

from tenant_schema.lifecycle.archive import purge_tenant
from tenant_schema.lifecycle.register import register_tenant
from tenant_schema.testing import unique_slug
from tests.conftest import require_server
from tests.test_pool import pool_server  # noqa: F401 - the fixture

#: A statement that asks the server's catalogue (is there such a table, database, schema?).
CATALOGUE = re.compile(r"sqlite_master|information_schema|pg_catalog|pg_database|pg_namespace|\bSHOW\b", re.I)


@dataclasses.dataclass
class Cost:
    registry_commits: int = 0
    registry_statements: int = 0
    tenant_statements: int = 0
    catalogue_queries: int = 0
    statements: list[str] = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def counted():
    """Every statement on every connection, and the registry's commits, while the block runs."""
    cost = Cost()
    registry = connections["default"]

    def wrapper(execute, sql, params, many, context):
        alias = context["connection"].alias
        if alias == "default":
            cost.registry_statements += not sql.startswith("BEGIN")  # SQLite's IMMEDIATE transactions
        else:
            cost.tenant_statements += 1
            cost.catalogue_queries += bool(CATALOGUE.search(sql))
        cost.statements.append(f"{alias}: {sql[:90]}")
        return execute(sql, params, many, context)

    def attach(sender, connection, **kwargs):
        if wrapper not in connection.execute_wrappers:
            connection.execute_wrappers.append(wrapper)

    for connection in connections.all(initialized_only=True):
        attach(None, connection)
    connection_created.connect(attach)
    real_commit = registry._commit

    def commit():
        cost.registry_commits += 1
        return real_commit()

    registry._commit = commit  # the real commit, counted
    try:
        yield cost
    finally:
        del registry._commit
        connection_created.disconnect(attach)
        for connection in connections.all(initialized_only=True):
            if wrapper in connection.execute_wrappers:
                connection.execute_wrappers.remove(wrapper)


#: Per server: statements on the server's and the tenant's connections, and how many of
#: them ask the catalogue, for a sign-up once the server's clone template exists (SQLite
#: and PostgreSQL databases copy it; the others build the test app's four tables, their
#: indexes and foreign keys, and the ``TENANT_TABLES``).
EXPECTED = {
    "sqlite": (1, 0),
    "pg": (2, 0),
    "pgschema": (21, 2),
    "mysql": (22, 5),
}


@pytest.mark.parametrize("server", sorted(EXPECTED))
def test_a_sign_up_commits_the_registry_twice(server, db_access):
    require_server(server)
    warm = register_tenant(unique_slug("cost"), server=server)  # builds the clone template, warms the caches
    try:
        with counted() as cost:
            tenant = register_tenant(unique_slug("cost"), server=server)
        try:
            assert cost.registry_commits == 2, cost.statements
            assert cost.registry_statements == 5, cost.statements  # get, insert; lock, re-read, mark ready
            assert (cost.tenant_statements, cost.catalogue_queries) == EXPECTED[server], cost.statements
        finally:
            purge_tenant(tenant)
    finally:
        purge_tenant(warm)


def test_a_pooled_sign_up_commits_the_registry_once_and_runs_nothing_on_the_tenant(pool_server):  # noqa: F811
    from tenant_schema.lifecycle.pool import fill_pool

    fill_pool(pool_server)
    with counted() as cost:
        tenant = register_tenant(unique_slug("cost"), server=pool_server)
    assert cost.registry_commits == 1, cost.statements
    assert cost.tenant_statements == 0, cost.statements
    purge_tenant(tenant)
