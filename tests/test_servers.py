"""Servers and tenant databases: URL parsing, creation races, schema isolation, CockroachDB SQL."""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from tenant_schema import (
    TenantSchemaError,
    create_index,
    drop_tenant_db,
    get_or_create_tenant_db,
    get_tenant_db,
    list_tables,
    register_table,
)
from tenant_schema.databases import database_name, register_alias
from tenant_schema.plugins import get_plugins
from tenant_schema.servers import get_server, parse_server

from . import children
from .conftest import make_bare_tenant_db, new_tenant_id, require_server

# -- URL parsing ----------------------------------------------------------------


def test_postgres_url_connects_to_the_maintenance_database():
    server = parse_server("pg", "postgres://app:s3cret@db.internal:6432/")
    assert server.dialect.name == "postgres"
    assert server.settings["ENGINE"] == "django.db.backends.postgresql"
    assert (server.settings["HOST"], server.settings["PORT"], server.settings["NAME"]) == (
        "db.internal",
        6432,
        "postgres",
    )
    assert server.settings["USER"] == "app" and server.settings["PASSWORD"] == "s3cret"
    assert "s3cret" not in server.safe_url() and "***" in server.safe_url()
    assert server.isolation == "database"
    assert server.settings["CONN_MAX_AGE"] == 0


def test_our_url_options_are_taken_out_and_driver_options_kept():
    server = parse_server("pg", "postgresql://u@h/shared?isolation=schema&conn_max_age=60&sslmode=require")
    assert server.isolation == "schema"
    assert server.settings["NAME"] == "shared"
    assert server.settings["CONN_MAX_AGE"] == 60
    assert server.settings["OPTIONS"] == {"sslmode": "require"}


def test_connection_lifetime_options():
    assert parse_server("p", "postgres://u@h/?conn_max_age=none").settings["CONN_MAX_AGE"] is None
    server = parse_server("p", "postgres://u@h/?conn_max_age=0&conn_health_checks=true")
    assert server.settings["CONN_MAX_AGE"] == 0 and server.settings["CONN_HEALTH_CHECKS"] is True
    assert parse_server("p", "postgres://u@h/?conn_health_checks=false").settings["CONN_HEALTH_CHECKS"] is False


def test_mysql_and_mariadb_schemes():
    for scheme in ("mysql", "mariadb"):
        server = parse_server("m", f"{scheme}://root@127.0.0.1:3306/")
        assert server.dialect.name == "mysql"
        assert server.settings["OPTIONS"]["charset"] == "utf8mb4"


def test_safe_url_masks_only_the_password():
    assert parse_server("s", "sqlite:////srv/tenants/").safe_url() == "sqlite:////srv/tenants/"
    assert parse_server("m", "mysql://root:pw@db:3306/").safe_url() == "mysql://root:***@db:3306/"


def test_sqlite_relative_directories_are_under_base_dir(settings, tmp_path):
    settings.BASE_DIR = tmp_path
    assert parse_server("s", "sqlite:///var/tenants/").path == tmp_path / "var" / "tenants"
    assert parse_server("s", f"sqlite:///{tmp_path}/abs/").path == tmp_path / "abs"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("oracle://u@h/", "no dialect plugin handles URL scheme 'oracle'"),
        ("not a url", "is not a URL"),
        ("mysql://root@h/?isolation=schema", "cannot isolate tenants by schema"),
        ("postgres://u@h/?isolation=rows", "isolation must be 'database' or 'schema'"),
        ("postgres://u@h:notaport/", "cannot parse its URL"),
        ("postgres://u@h/?conn_max_age=abc", "conn_max_age must be a whole number of seconds or 'none'"),
        ("postgres://u@h/?conn_max_age=-1", "conn_max_age must be a whole number"),
        ("postgres://u@h/?conn_health_checks=maybe", "conn_health_checks must be true or false"),
    ],
)
def test_bad_server_urls_are_clear_errors(url, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        parse_server("bad", url)


def test_unknown_server_key_lists_the_configured_ones():
    with pytest.raises(ImproperlyConfigured, match="unknown tenant server 'nope'; configured servers: default, mysql"):
        get_server("nope")


def test_tenant_aliases_carry_every_django_setting(db_access):
    tdb = get_or_create_tenant_db(new_tenant_id(), server="sqlite")
    try:
        tdb.ensure_alias()
        settings = connections.settings[tdb.alias]
        for key in (
            "TIME_ZONE",
            "OPTIONS",
            "CONN_MAX_AGE",
            "CONN_HEALTH_CHECKS",
            "AUTOCOMMIT",
            "ATOMIC_REQUESTS",
            "TEST",
        ):
            assert key in settings, key
        assert settings["CONN_MAX_AGE"] == 0
    finally:
        tdb.close()
        drop_tenant_db(tdb.slug, server="sqlite")


def test_register_alias_is_idempotent():
    register_alias("tenant_schema:test-alias", {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"})
    first = connections.settings["tenant_schema:test-alias"]
    register_alias("tenant_schema:test-alias", {"ENGINE": "django.db.backends.sqlite3", "NAME": "other"})
    assert connections.settings["tenant_schema:test-alias"] is first
    del connections.settings["tenant_schema:test-alias"]


# -- tenant databases ----------------------------------------------------------


def test_get_or_create_is_idempotent_and_get_does_not_create(server_key):
    tenant_id = new_tenant_id()
    with pytest.raises(LookupError):
        get_tenant_db(tenant_id, server=server_key)
    first = get_or_create_tenant_db(tenant_id, server=server_key)
    try:
        assert get_or_create_tenant_db(tenant_id, server=server_key) is first
        assert get_tenant_db(tenant_id, server=server_key) is first
        assert first.alias == f"tenant:{tenant_id}"
        assert first.name == database_name(tenant_id, get_server(server_key))
    finally:
        first.close()
        assert drop_tenant_db(tenant_id, server=server_key) is True
    assert drop_tenant_db(tenant_id, server=server_key) is False


def test_a_tenant_is_bound_to_one_location_per_process(db_access):
    from tenant_schema.databases import bind_tenant_db

    tenant_id = new_tenant_id()
    tdb = get_or_create_tenant_db(tenant_id, server="sqlite")
    try:
        with pytest.raises(TenantSchemaError, match="registered on server 'sqlite', not 'default'"):
            get_or_create_tenant_db(tenant_id, server="default")
        assert bind_tenant_db(tenant_id, "sqlite", tdb.name) is tdb
    finally:
        drop_tenant_db(tenant_id, server="sqlite")


@pytest.mark.parametrize("workers", [4])
def test_two_processes_creating_one_tenant_end_with_one_database(server_key, workers):
    tenant_id = new_tenant_id()
    ctx = multiprocessing.get_context("spawn")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(workers)
        with ctx.Pool(workers) as pool:
            registry = connections["default"].settings_dict["NAME"]
            names = pool.map(children.create_tenant_db, [(tenant_id, server_key, barrier, registry)] * workers)
    try:
        assert len(set(names)) == 1
        assert get_tenant_db(tenant_id, server=server_key).name == names[0]
    finally:
        drop_tenant_db(tenant_id, server=server_key)


# -- schema isolation (PostgreSQL) ---------------------------------------------


@pytest.fixture
def pg_schema_server(db_access):
    require_server("pg")
    pg = get_server("pg")
    shared = get_server("pgschema").settings["NAME"]
    get_plugins().hook.tenant_schema_create_database(dialect=pg.dialect, server=pg, name=shared)
    return "pgschema"


def test_schema_isolation_gives_each_tenant_its_own_schema(pg_schema_server):
    @dataclass
    class Item:
        id: int
        label: str

    a = make_bare_tenant_db(pg_schema_server)
    b = make_bare_tenant_db(pg_schema_server)
    try:
        table_a = register_table(a, Item, "items")
        register_table(b, Item, "items")
        create_index(a, "items", ["label"])
        table_a.model._default_manager.db_manager(a.alias).create(label="only in a")
        assert table_a.model._default_manager.db_manager(b.alias).count() == 0
        with a.connection.cursor() as cursor:
            cursor.execute("SELECT current_schema()")
            assert cursor.fetchone()[0] == a.name
        assert list_tables(a) == list_tables(b) == ["items"]
    finally:
        for tdb in (a, b):
            tdb.close()
            drop_tenant_db(tdb.slug, server=pg_schema_server)
    assert not get_plugins().hook.tenant_schema_database_exists(dialect=a.dialect, server=a.server, name=a.name)


# -- CockroachDB: generated SQL (no server here; the live suite runs with TENANT_SCHEMA_COCKROACH_URL) --


@pytest.fixture
def crdb():
    from django_cockroachdb.schema import DatabaseSchemaEditor

    from tenant_schema.databases import TenantDatabase

    server = parse_server("crdb", "cockroach://root@127.0.0.1:26257/")
    tdb = TenantDatabase("acme", server, "tenant_acme")
    alias = "tenant_schema:crdb-sql-only"
    register_alias(alias, server.dialect.tenant_settings(server, "tenant_acme"))
    editor = DatabaseSchemaEditor(connections[alias], collect_sql=True)
    editor.deferred_sql = []
    yield tdb, editor
    del connections[alias]
    del connections.settings[alias]


def _model(tdb, cls, table):
    from tenant_schema.schema.building import build_models, normalize_specs

    return build_models(tdb, normalize_specs(tdb, [(cls, table)]))[table]


def test_cockroach_dialect_declares_what_it_cannot_do(crdb):
    tdb, editor = crdb
    dialect = tdb.dialect
    assert dialect.name == "cockroach" and dialect.engine == "django_cockroachdb"
    assert dialect.can_rollback_ddl is False and editor.connection.features.can_rollback_ddl is False
    assert dialect.can_clone_databases is False
    assert tdb.server.settings["NAME"] == "defaultdb"
    assert parse_server("c", "cockroachdb://root@h:26257/").dialect.name == "cockroach"


def test_cockroach_create_table_and_indexes_sql(crdb):
    from tenant_schema.dialects import IndexSpec

    tdb, editor = crdb

    @dataclass
    class Event:
        id: int
        kind: str
        payload: dict

    model = _model(tdb, Event, "events")
    editor.create_model(model)
    assert editor.collected_sql == [
        'CREATE TABLE "events" ("id" integer NOT NULL PRIMARY KEY DEFAULT unique_rowid(), '
        '"kind" text NOT NULL, "payload" jsonb NOT NULL);'
    ]
    hashed = tdb.dialect.create_index_sql(
        editor, model, IndexSpec("events", ("id",), False, "ev_hash", {"hash_sharded": True})
    )
    assert str(hashed) == 'CREATE INDEX "ev_hash" ON "events" ("id") USING HASH'
    unique = tdb.dialect.create_index_sql(
        editor, model, IndexSpec("events", ("kind",), True, "ev_kind", {"hash_sharded": True})
    )
    assert str(unique) == 'CREATE UNIQUE INDEX "ev_kind" ON "events" ("kind") USING HASH'
    plain = tdb.dialect.create_index_sql(editor, model, IndexSpec("events", ("kind",), False, "ev_plain"))
    assert str(plain) == 'CREATE INDEX "ev_plain" ON "events" ("kind")'
    assert (
        str(tdb.dialect.drop_index_sql(editor, model, "ev_hash", False))
        == 'DROP INDEX IF EXISTS "events"@"ev_hash" CASCADE'
    )


def test_cockroach_database_and_schema_sql(crdb):
    tdb, editor = crdb
    dialect = tdb.dialect
    quoted = editor.quote_name("tenant_acme")
    assert dialect.create_database_sql(tdb.server, quoted) == 'CREATE DATABASE "tenant_acme"'
    assert dialect.drop_database_sql(tdb.server, quoted) == 'DROP DATABASE IF EXISTS "tenant_acme" CASCADE'
    schema_server = parse_server("c", "cockroach://root@h:26257/shared?isolation=schema")
    assert dialect.create_database_sql(schema_server, quoted) == 'CREATE SCHEMA "tenant_acme"'
    settings = dialect.tenant_settings(schema_server, "tenant_acme")
    assert settings["NAME"] == "shared"
    assert settings["OPTIONS"]["options"] == "-c search_path=tenant_acme"


def test_cockroach_move_sql(crdb):
    """The statements ``tenant_move`` sends a CockroachDB target, beyond the DDL above (not run live here)."""
    import types

    from django.core.management.color import no_style

    from tenant_schema import django_private
    from tenant_schema.schema import transfer

    tdb, editor = crdb

    @dataclass
    class Event:
        id: int
        kind: str
        amount: Decimal

    model = _model(tdb, Event, "events")
    copy = transfer.TableCopy("events", model, model, set())
    connection = editor.connection
    # Keys come from unique_rowid(), not sequences: nothing to set past the copied keys.
    assert connection.ops.sequence_reset_sql(no_style(), [copy.target]) == []
    transfer.reset_sequences(tdb, [copy])  # so it sends nothing (and needs no connection)
    # A batch of copied rows: Django's PostgreSQL-family INSERT, one array per column.
    sample = types.SimpleNamespace(id=1, kind="a", amount=Decimal("1.50"))
    [(sql, params)] = django_private.compile_insert(model, connection, copy.target_fields, 2, sample, {})
    assert sql == (
        'INSERT INTO "events" ("amount", "id", "kind") '
        "SELECT * FROM UNNEST((%s)::numeric[], (%s)::integer[], (%s)::text[])"
    )
    # Rows a migration signal seeded on the target are emptied first; a failed move's target is dropped.
    assert connection.ops.sql_flush(no_style(), ["events"], allow_cascade=True) == ['TRUNCATE "events" CASCADE;']
    quoted = editor.quote_name("tenant_acme_move")
    assert tdb.dialect.drop_database_sql(tdb.server, quoted) == 'DROP DATABASE IF EXISTS "tenant_acme_move" CASCADE'
    # No LOCK TABLE and no key counter: neither the wait for writers nor carrying keys sends anything
    # (verification, which reads the source again, is what catches a late commit there).
    assert tdb.dialect.wait_for_writers(connection, ["events"], 1.0) is False
    assert tdb.dialect.next_key(connection, "events", "id") is None
    transfer.carry_key_positions([copy], tdb, lambda table: 7)  # so it sends nothing (and needs no connection)


def test_hash_sharded_option_on_a_live_dialect_without_it_is_plain(tenant_db):
    """Only CockroachDB knows USING HASH; elsewhere the option is ignored, not an error."""

    @dataclass
    class Seq:
        id: int
        n: int = 0

    register_table(tenant_db, Seq, "seq")
    name = create_index(tenant_db, "seq", ["n"], hash_sharded=True)
    assert name == "idx_seq_n"


def test_a_dropped_sqlite_tenant_is_never_recreated_by_a_late_query(db_access):
    """A request still routed to a purged tenant fails instead of recreating an empty file."""
    from django.db import OperationalError

    from tenant_schema.databases import bind_tenant_db

    tenant_id = new_tenant_id()
    tdb = get_or_create_tenant_db(tenant_id, server="sqlite")
    path = tdb.dialect.file(tdb.server, tdb.name)
    assert path.exists()
    drop_tenant_db(tenant_id, server="sqlite")
    late = bind_tenant_db(tenant_id, "sqlite", tdb.name)  # e.g. from a stale routing cache
    with pytest.raises(OperationalError):
        with late.connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    late.close()
    assert not path.exists()
