"""Onboarding one tenant (register_tenant) against the raw floor, per dialect.

The floor is what no library can beat: CREATE DATABASE plus the DDL of the
same schema (tenant apps, ``django_migrations``, ``TENANT_TABLES``;
statements collected from Django's schema editor once) run one by one on a
fresh connection, with no registry row, no migration rows, no checks. Both are measured interleaved, in
one run, and only their ratio means anything.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tenant_setup import median_ms, reachable, setup_django, slug, table, timed


def floor_statements(tenant_db, extra_models) -> list[str]:
    """The same schema register_tenant builds: tenant apps, django_migrations, TENANT_TABLES."""
    from django.db.migrations.recorder import MigrationRecorder

    from tenant_schema.provisioning import tenant_models

    with tenant_db.connection.schema_editor(collect_sql=True, atomic=False) as editor:
        for model in [*tenant_models(), MigrationRecorder.Migration, *extra_models]:
            editor.create_model(model)
    return list(editor.collected_sql)


def raw_floor(server_key: str, statements_for) -> float:
    """CREATE DATABASE + DDL through the dialect, no registry, timed; the database is dropped afterwards."""
    from tenant_schema.databases import TenantDatabase, database_name, unregister_alias
    from tenant_schema.plugins import get_plugins
    from tenant_schema.servers import get_server

    server = get_server(server_key)
    hook = get_plugins().hook
    tenant_db = TenantDatabase(slug("floor"), server, "")
    tenant_db.name = database_name(tenant_db.slug, server)

    def create():
        hook.tenant_schema_create_database(dialect=server.dialect, server=server, name=tenant_db.name)
        with tenant_db.connection.cursor() as cursor:
            for sql in statements_for(tenant_db):
                cursor.execute(sql)
        tenant_db.close()

    seconds = timed(create)
    unregister_alias(tenant_db.alias)
    hook.tenant_schema_drop_database(dialect=server.dialect, server=server, name=tenant_db.name)
    return seconds


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_onboarding")
    parser.add_argument("--tenants", type=int, default=20, help="tenants per dialect and method")
    args = parser.parse_args(argv)
    setup_django()
    from tenant_schema.provisioning import purge_tenant, register_tenant

    cache: dict[str, list[str]] = {}
    extra: dict[str, list] = {}

    def statements_for(tdb):
        if tdb.server.key not in cache:
            cache[tdb.server.key] = [s.rstrip(";") for s in floor_statements(tdb, extra[tdb.server.key])]
        return cache[tdb.server.key]

    rows = []
    for key in ("sqlite", "pg", "mysql"):
        if not reachable(key):
            rows.append([key, "unreachable", "", ""])
            continue
        warm = slug("warm")  # warm-up: connections, imports, caches, the migration plan
        extra[key] = [table.model for table in register_tenant(warm, server=key).database.tables.values()]
        purge_tenant(warm)
        raw_floor(key, statements_for)
        onboard, floor = [], []
        for _ in range(args.tenants):
            s = slug("onboard")
            onboard.append(timed(register_tenant, s, server=key))
            purge_tenant(s)
            floor.append(raw_floor(key, statements_for))
        rows.append(
            [
                key,
                f"{median_ms(onboard):.1f}",
                f"{median_ms(floor):.1f}",
                f"{median_ms(onboard) / median_ms(floor):.2f}x",
            ]
        )
    print(f"Onboarding: median of {args.tenants} per dialect (ms)")
    print(table(["dialect", "register_tenant", "raw CREATE DATABASE + DDL", "ratio"], rows))


if __name__ == "__main__":
    run(sys.argv[1:])
