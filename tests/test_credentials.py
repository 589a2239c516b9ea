"""Per-tenant credentials (``?tenant_roles=true``): the database server itself refuses cross-tenant SQL.

The local PostgreSQL trusts every TCP connection (``trust`` in pg_hba.conf),
so it checks no password: these tests prove isolation by *privileges*, which
trust does not bypass. MariaDB checks passwords, so the re-key tests also
prove that a stale password is refused there; on PostgreSQL they check the
stored SCRAM verifier instead.

Each isolation test has a control: the same query on the same engine without
``tenant_roles`` does reach the other tenant, so the refusal is the roles'
doing, not an accident of the query.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import re
import sqlite3
import threading
from dataclasses import dataclass

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, OperationalError, connections

from tenant_schema import credentials, register_table, tenant_context
from tenant_schema.databases import TenantDatabase, database_name
from tenant_schema.exceptions import TenantSchemaError
from tenant_schema.plugins import get_plugins
from tenant_schema.servers import get_server, parse_server

from .conftest import new_tenant_id, require_server

ROLE_SERVERS = ["mysqlroles", "pgroles", "pgschemaroles"]
#: The same engine without tenant roles: the control of each isolation test.
PLAIN_TWIN = {"mysqlroles": "mysql", "pgroles": "pg", "pgschemaroles": "pgschema"}
#: The server whose connection proves the engine is up (and creates a shared database).
ENGINE_SERVER = {
    "mysqlroles": "mysql",
    "pgroles": "pg",
    "pgschemaroles": "pg",
    "mysql": "mysql",
    "pg": "pg",
    "pgschema": "pg",
}

PG_URL = "postgres://postgres@127.0.0.1:5432/"


@dataclass
class Item:
    label: str
    id: int | None = None


def hook():
    return get_plugins().hook


def prepare(key: str) -> str:
    """Skip (or fail under CI) when the engine is down; create a schema server's shared database."""
    require_server(ENGINE_SERVER.get(key, key))
    server = get_server(key)
    if server.isolation == "schema":
        engine = get_server(ENGINE_SERVER[key])
        hook().tenant_schema_create_database(dialect=engine.dialect, server=engine, name=server.settings["NAME"])
    return key


@pytest.fixture(params=ROLE_SERVERS)
def roles_server(request, db_access):
    return prepare(request.param)


@pytest.fixture
def bare(db_access):
    """``bare(server_key, name=None)``: a database (or schema) made with the dialect's hook and, on a
    tenant_roles server, its role; no registry row. Dropped (role included) afterwards."""
    made: list[TenantDatabase] = []

    def make(key: str, name: str | None = None) -> TenantDatabase:
        prepare(key)
        server = get_server(key)
        tenant_id = new_tenant_id()
        name = name or database_name(tenant_id, server)
        hook().tenant_schema_create_database(dialect=server.dialect, server=server, name=name)
        tdb = TenantDatabase(tenant_id, server, name)
        made.append(tdb)
        credentials.ensure_tenant_role(server, name)
        return tdb

    yield make
    for tdb in reversed(made):
        tdb.close()
        hook().tenant_schema_drop_database(dialect=tdb.dialect, server=tdb.server, name=tdb.name)
        credentials.drop_tenant_role(tdb.server, tdb.name)


def admin_query(server, sql: str, params=()) -> list[tuple]:
    """A query on the server's own connection (the URL's user)."""
    with server.connection().cursor() as cursor:
        cursor.execute(sql, list(params))
        return cursor.fetchall()


def role_on_server(server, role: str) -> bool:
    if server.dialect.name == "mysql":
        return bool(admin_query(server, "SELECT 1 FROM mysql.user WHERE User = %s", [role]))
    return bool(admin_query(server, "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", [role]))


def put_row(tdb: TenantDatabase, label: str = "b's secret") -> None:
    """A table ``t`` with one row, created on the tenant's own connection."""
    with tdb.connection.cursor() as cursor:
        cursor.execute("CREATE TABLE t (label varchar(50))")
        cursor.execute("INSERT INTO t (label) VALUES (%s)", [label])


def qualified(tdb: TenantDatabase, table: str = "t") -> str:
    quote = tdb.connection.ops.quote_name
    return f"{quote(tdb.name)}.{quote(table)}"


def connect_elsewhere(tdb: TenantDatabase, other_database: str):
    """Open a connection with ``tdb``'s own credentials to another database; return a cursor's result."""
    settings = dict(tdb.connection.settings_dict)
    settings["NAME"] = other_database
    wrapper = type(tdb.connection)(settings, alias=f"probe:{tdb.slug}")
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT current_user")
            return cursor.fetchone()
    finally:
        wrapper.close()


def attempt_cross_tenant(a: TenantDatabase, b: TenantDatabase) -> None:
    """Reach b's data from a's credentials, the way each isolation mode allows without roles.

    MySQL and schema isolation: one raw query naming the other database
    (or schema). PostgreSQL database isolation: a query cannot name another
    database there, so the way in is a connection to b's database.
    """
    if a.server.isolation == "database" and a.dialect.name == "postgres":
        connect_elsewhere(a, b.name)
        return
    with a.connection.cursor() as cursor:
        cursor.execute(f"SELECT label FROM {qualified(b)}")
        assert list(cursor.fetchall()) == [("b's secret",)]


# -- the server option ------------------------------------------------------------


def test_tenant_roles_is_a_server_option_off_by_default():
    assert parse_server("p", PG_URL).tenant_roles is False
    server = parse_server("p", PG_URL + "?tenant_roles=true&sslmode=prefer")
    assert server.tenant_roles is True
    assert server.settings["OPTIONS"] == {"sslmode": "prefer"}  # ours is not passed to the driver
    assert parse_server("m", "mysql://root@h:3306/?tenant_roles=false").tenant_roles is False
    assert parse_server("c", "cockroachdb://root@h:26257/?tenant_roles=true").tenant_roles is True


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "sqlite:///var/tenants/?tenant_roles=true",
            "tenant server 'x': the sqlite dialect cannot give each tenant its own database role",
        ),
        (PG_URL + "?tenant_roles=maybe", "tenant server 'x': tenant_roles must be true or false, not 'maybe'"),
    ],
)
def test_a_bad_tenant_roles_option_names_the_server(url, message):
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        parse_server("x", url)


# -- names and passwords ------------------------------------------------------------


def test_role_names_are_stable_and_fit_each_engine():
    pg = parse_server("p", PG_URL + "?tenant_roles=true")
    mysql = parse_server("m", "mysql://root@h:3306/?tenant_roles=true")
    assert credentials.role_name(pg, "tenant_acme") == "tenant_acme_owner"
    assert credentials.role_name(mysql, "tenant_acme") == "tenant_acme_owner"

    long_a, long_b = "tenant_" + "a" * 56, "tenant_" + "a" * 55 + "b"  # 63 characters each
    for server, limit in ((pg, 63), (mysql, 32)):
        names = {credentials.role_name(server, n) for n in (long_a, long_b)}
        assert len(names) == 2, "names differing only at the end keep distinct roles"
        assert all(len(n.encode()) <= limit and n.endswith("_owner") for n in names)
        assert credentials.role_name(server, long_a) == credentials.role_name(server, long_a)
    assert credentials.role_name(mysql, long_a).startswith("tenant_aaa")

    # Schema isolation: roles are server-wide, so the shared database is part of the name.
    schema = parse_server("s", PG_URL + "shared?isolation=schema&tenant_roles=true")
    assert credentials.role_name(schema, "tenant_acme") == "shared.tenant_acme_owner"
    # CockroachDB stores role names in lower case.
    crdb = parse_server("c", "cockroachdb://root@h:26257/?tenant_roles=true")
    assert credentials.role_name(crdb, "Tenant_Acme") == "tenant_acme_owner"


def test_a_tenant_never_gets_the_server_users_role():
    server = parse_server("p", "postgres://tenant_acme_owner@127.0.0.1:5432/?tenant_roles=true")
    with pytest.raises(ImproperlyConfigured, match="the server URL's own user"):
        credentials.role_name(server, "tenant_acme")


def test_passwords_are_derived_from_the_secret_key_and_never_stored(settings):
    settings.SECRET_KEY = "first-key"
    first = credentials.tenant_password("tenant_acme_owner")
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert first == credentials.tenant_password("tenant_acme_owner")
    assert first != credentials.tenant_password("tenant_globex_owner")
    assert first == credentials.tenant_password("tenant_acme_owner", secret_key="first-key")
    settings.SECRET_KEY = "second-key"
    assert credentials.tenant_password("tenant_acme_owner") != first


def test_tenant_aliases_connect_as_the_role_and_servers_as_the_url_user():
    from tenant_schema.databases import TenantDatabase

    server = parse_server("p", "postgres://admin:adminpw@127.0.0.1:5432/?tenant_roles=true")
    tenant_db = TenantDatabase("acme", server, "tenant_acme")
    settings = tenant_db.connection_settings()
    assert settings["USER"] == "tenant_acme_owner"
    assert settings["PASSWORD"] == credentials.tenant_password("tenant_acme_owner")
    assert server.settings["USER"] == "admin" and server.settings["PASSWORD"] == "adminpw"
    admin = tenant_db.connection_settings(as_server_user=True)
    assert (admin["USER"], admin["PASSWORD"]) == ("admin", "adminpw")
    plain = parse_server("p", "postgres://admin:adminpw@127.0.0.1:5432/")
    settings = TenantDatabase("acme", plain, "tenant_acme").connection_settings()
    assert (settings["USER"], settings["PASSWORD"]) == ("admin", "adminpw")


def test_postgres_gets_a_verifier_never_the_password():
    server = parse_server("pgsql", PG_URL + "?tenant_roles=true")
    password = credentials.tenant_password("tenant_acme_owner")
    for sql, params in server.dialect.create_role_sql(
        server, "tenant_acme_owner", password
    ) + server.dialect.set_role_password_sql(server, "tenant_acme_owner", password):
        assert password not in sql and password not in params
        assert scram_matches(params[0], password)


# -- CockroachDB: the generated SQL (no server here) ----------------------------------


def test_cockroach_role_sql():
    server = parse_server("crdbroles", "cockroachdb://root@crdb.invalid:26257/defaultdb?tenant_roles=true")
    dialect = server.dialect
    role = credentials.role_name(server, "tenant_acme")
    assert role == "tenant_acme_owner"
    assert dialect.create_role_sql(server, role, "pw") == [
        ('CREATE ROLE "tenant_acme_owner" WITH LOGIN NOCREATEDB NOCREATEROLE PASSWORD %s', ("pw",))
    ]
    assert dialect.set_role_password_sql(server, role, "pw") == [
        ('ALTER ROLE "tenant_acme_owner" WITH LOGIN NOCREATEDB NOCREATEROLE PASSWORD %s', ("pw",))
    ]
    assert dialect.grant_role_sql(server, role, "tenant_acme") == [
        ('REVOKE ALL ON DATABASE "tenant_acme" FROM PUBLIC', ()),
        ('ALTER DATABASE "tenant_acme" OWNER TO "tenant_acme_owner"', ()),
    ]
    assert dialect.drop_role_sql(server, role, "tenant_acme") == [('DROP ROLE IF EXISTS "tenant_acme_owner"', ())]

    schema = parse_server(
        "crdbschemaroles", "cockroachdb://root@crdb.invalid:26257/shared?isolation=schema&tenant_roles=true"
    )
    role = credentials.role_name(schema, "tenant_acme")
    assert role == "shared.tenant_acme_owner"
    assert dialect.grant_role_sql(schema, role, "tenant_acme") == [
        ('REVOKE ALL ON DATABASE "shared" FROM PUBLIC', ()),
        ('GRANT CONNECT ON DATABASE "shared" TO "shared.tenant_acme_owner"', ()),
        ('ALTER SCHEMA "tenant_acme" OWNER TO "shared.tenant_acme_owner"', ()),
    ]
    assert dialect.drop_role_sql(schema, role, "tenant_acme") == [
        ('REVOKE ALL ON DATABASE "shared" FROM "shared.tenant_acme_owner"', ()),
        ('DROP ROLE IF EXISTS "shared.tenant_acme_owner"', ()),
    ]


# -- live: the server refuses cross-tenant SQL ---------------------------------------


def test_raw_cross_tenant_sql_is_refused_by_the_server(roles_server, bare):
    a, b = bare(roles_server), bare(roles_server)
    put_row(b)
    with pytest.raises(DatabaseError, match=r"(?i)denied"):
        attempt_cross_tenant(a, b)
    if a.dialect.name == "mysql" or a.server.isolation == "schema":
        for sql in (f"INSERT INTO {qualified(b)} (label) VALUES ('from a')", f"DROP TABLE {qualified(b)}"):
            with pytest.raises(DatabaseError, match=r"(?i)denied"):
                with a.connection.cursor() as cursor:
                    cursor.execute(sql)
    with b.connection.cursor() as cursor:
        cursor.execute("SELECT label FROM t")
        assert list(cursor.fetchall()) == [("b's secret",)]


@pytest.mark.parametrize("plain", ["mysql", "pg", "pgschema"])
def test_control_without_tenant_roles_the_same_sql_reaches_the_other_tenant(plain, bare):
    a, b = bare(plain), bare(plain)
    put_row(b)
    attempt_cross_tenant(a, b)  # no error: this is what tenant_roles prevents


def test_a_tenant_uses_its_own_tables_as_its_role(roles_server, bare):
    a = bare(roles_server)
    role = credentials.role_name(a.server, a.name)
    items = register_table(a, Item, "items")
    items.insert(Item(label="mine"))
    assert [i.label for i in items.list()] == ["mine"]
    if a.dialect.name == "mysql":
        with a.connection.cursor() as cursor:
            cursor.execute("SELECT CURRENT_USER()")
            assert cursor.fetchone()[0] == f"{role}@%"
    else:
        schema = a.name if a.server.isolation == "schema" else "public"
        with a.connection.cursor() as cursor:
            cursor.execute(
                "SELECT tableowner FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = 'items'", [schema]
            )
            assert cursor.fetchone()[0] == role


def test_a_tenant_role_has_no_server_privileges(roles_server, bare):
    a = bare(roles_server)
    statements = (
        ["SELECT * FROM mysql.user", "CREATE DATABASE tstest_not_allowed", "GRANT ALL ON *.* TO CURRENT_USER"]
        if a.dialect.name == "mysql"
        else ["SET ROLE postgres", "CREATE DATABASE tstest_not_allowed", "CREATE ROLE tstest_not_allowed"]
    )
    for sql in statements:
        with pytest.raises(DatabaseError, match=r"(?i)denied|must be|privilege|not have"):
            with a.connection.cursor() as cursor:
                cursor.execute(sql)


def test_mysql_grants_do_not_treat_underscores_as_wildcards(bare):
    """``GRANT ... ON tenant_a_b.*`` unescaped would also cover ``tenant_axb``."""
    stem = f"tstest_{new_tenant_id()}"
    a = bare("mysqlroles", f"{stem}_w")
    b = bare("mysqlroles", f"{stem}xw")  # matches the pattern "<stem>_w" if '_' were a wildcard
    put_row(b)
    with pytest.raises(DatabaseError, match=r"(?i)denied"):
        attempt_cross_tenant(a, b)
    with a.connection.cursor() as cursor:
        cursor.execute("SHOW DATABASES")
        assert {row[0] for row in cursor.fetchall()} == {"information_schema", a.name}


# -- life cycle of a role -------------------------------------------------------------


def test_ensure_is_idempotent_and_drop_waits_for_the_database(roles_server, bare):
    a = bare(roles_server)
    role = credentials.role_name(a.server, a.name)
    put_row(a, "kept")
    credentials.ensure_tenant_role(a.server, a.name)  # again: nothing lost, still reachable
    a.close()
    with a.connection.cursor() as cursor:
        cursor.execute("SELECT label FROM t")
        assert list(cursor.fetchall()) == [("kept",)]
    with pytest.raises(TenantSchemaError, match="still exists"):
        credentials.drop_tenant_role(a.server, a.name)
    assert role_on_server(a.server, role)
    a.close()
    hook().tenant_schema_drop_database(dialect=a.dialect, server=a.server, name=a.name)
    credentials.drop_tenant_role(a.server, a.name)
    assert not role_on_server(a.server, role)
    credentials.drop_tenant_role(a.server, a.name)  # idempotent


def test_concurrent_role_changes_on_one_server_all_succeed(roles_server, db_access):
    """Under schema isolation every grant changes the shared database's ACL; unserialized,
    PostgreSQL fails concurrent ones with "tuple concurrently updated"."""
    prepare(roles_server)
    server = get_server(roles_server)
    names = [database_name(new_tenant_id(), server) for _ in range(8)]
    for name in names:
        hook().tenant_schema_create_database(dialect=server.dialect, server=server, name=name)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(names))

    def run(action, name):
        try:
            barrier.wait(10)
            action(server, name)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    def all_at_once(action):
        threads = [threading.Thread(target=run, args=(action, name)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    try:
        all_at_once(credentials.ensure_tenant_role)
        assert errors == []
        assert all(role_on_server(server, credentials.role_name(server, n)) for n in names)
    finally:
        for name in names:
            hook().tenant_schema_drop_database(dialect=server.dialect, server=server, name=name)
        barrier.reset()
        all_at_once(credentials.drop_tenant_role)
    assert errors == []
    assert not any(role_on_server(server, credentials.role_name(server, n)) for n in names)


def test_functions_do_nothing_without_tenant_roles(bare):
    a = bare("mysql")
    credentials.ensure_tenant_role(a.server, a.name)
    credentials.rekey_tenant_role(a.server, a.name)
    assert not role_on_server(a.server, credentials.role_name(a.server, a.name))


def scram_matches(verifier: str, password: str) -> bool:
    """Whether a PostgreSQL SCRAM-SHA-256 verifier was made from ``password``."""
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier or "")
    if not match:
        return False
    iterations, salt, stored_key = int(match[1]), base64.b64decode(match[2]), base64.b64decode(match[3])
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key)


def stored_verifier(server, role: str) -> str:
    return admin_query(server, "SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = %s", [role])[0][0]


def can_log_in(tdb: TenantDatabase, password: str) -> bool:
    """Whether the server accepts ``password`` for the tenant's role (MariaDB checks it)."""
    settings = dict(tdb.connection.settings_dict)
    settings["PASSWORD"] = password
    wrapper = type(tdb.connection)(settings, alias=f"probe:{tdb.slug}")
    try:
        wrapper.ensure_connection()
        return True
    except OperationalError as exc:
        assert "Access denied" in str(exc)
        return False
    finally:
        wrapper.close()


def test_rekey_after_a_secret_key_change_keeps_the_tenant_reachable(roles_server, bare, settings):
    a = bare(roles_server)
    role = credentials.role_name(a.server, a.name)
    put_row(a, "still here")
    old = credentials.tenant_password(role)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "rotated-" + settings.SECRET_KEY
    new = credentials.tenant_password(role)
    assert new != old
    if a.dialect.name == "mysql":
        assert can_log_in(a, old) and not can_log_in(a, new)  # in between: the server still wants the old one
    credentials.rekey_tenant_role(a.server, a.name)
    with a.connection.cursor() as cursor:  # the alias was forgotten: reconnects with the new password
        cursor.execute("SELECT label FROM t")
        assert list(cursor.fetchall()) == [("still here",)]
    assert a.connection.settings_dict["PASSWORD"] == new
    if a.dialect.name == "mysql":
        assert can_log_in(a, new) and not can_log_in(a, old)
    else:
        verifier = stored_verifier(a.server, role)
        assert scram_matches(verifier, new) and not scram_matches(verifier, old)


def test_rekey_of_a_missing_role_says_so(bare):
    a = bare("mysqlroles")
    role = credentials.role_name(a.server, a.name)
    admin_query(a.server, "DROP USER %s@'%%'", [role])
    with pytest.raises(credentials.MissingTenantRole, match=re.escape(f"tenant role {role!r} does not exist")):
        credentials.rekey_tenant_role(a.server, a.name)


# -- SQLite: no ATTACH on tenant connections ---------------------------------------------


def test_sqlite_tenant_connections_cannot_attach_another_file(bare):
    a, b = bare("sqlite"), bare("sqlite")
    put_row(b)
    other = b.dialect.file(b.server, b.name)
    copy = other.with_name(f"{a.name}_copy.sqlite3")
    for sql, params in (
        ("ATTACH DATABASE %s AS other", [str(other)]),
        ("ATTACH DATABASE ':memory:' AS m", []),
        ("VACUUM INTO %s", [str(copy)]),  # writes a file through an internal ATTACH
    ):
        with pytest.raises(OperationalError, match="too many attached databases"):
            with a.connection.cursor() as cursor:
                cursor.execute(sql, params)
    assert not copy.exists()
    # Only tenant connections are limited: a plain sqlite3 connection still attaches.
    plain = sqlite3.connect(":memory:")
    plain.execute("ATTACH DATABASE ? AS other", [str(other)])
    assert plain.execute("SELECT label FROM other.t").fetchall() == [("b's secret",)]
    plain.close()


# -- end to end: register_tenant / purge_tenant / tenant_rekey ----------------------------
# These rely on the life cycle calling ensure_tenant_role after creating the
# database and drop_tenant_role after dropping it.

pytest_e2e = pytest.mark.django_db(transaction=True)


@pytest_e2e
def test_registered_tenants_are_isolated_end_to_end(roles_server, tenant_factory):
    from tests.tenantapp.models import Note

    a, b = tenant_factory(server=roles_server), tenant_factory(server=roles_server)
    with tenant_context(b):
        Note.objects.create(title="b's secret")
    with tenant_context(a):
        Note.objects.create(title="a's own")
        assert list(Note.objects.values_list("title", flat=True)) == ["a's own"]
    a_db, b_db = a.database, b.database
    role = credentials.role_name(a_db.server, a_db.name)
    assert a_db.connection.settings_dict["USER"] == role
    with pytest.raises(DatabaseError, match=r"(?i)denied"):
        if a_db.server.isolation == "database" and a_db.dialect.name == "postgres":
            connect_elsewhere(a_db, b_db.name)
        else:
            with a_db.connection.cursor() as cursor:
                cursor.execute(f"SELECT title FROM {qualified(b_db, 'tenantapp_note')}")
    if a_db.dialect.name == "postgres":  # the role owns what provisioning created
        with a_db.connection.cursor() as cursor:
            cursor.execute(
                "SELECT tableowner FROM pg_catalog.pg_tables WHERE tablename = 'tenantapp_note' "
                "AND schemaname = current_schema()"
            )
            assert cursor.fetchone()[0] == role


@pytest_e2e
def test_purge_removes_the_role(roles_server, tenant_factory):
    from tenant_schema.lifecycle.archive import purge_tenant

    tenant = tenant_factory(server=roles_server)
    server = get_server(roles_server)
    role = credentials.role_name(server, tenant.database_name)
    assert role_on_server(server, role)
    tenant.database.close()
    purge_tenant(tenant.slug)
    assert not role_on_server(server, role)


def rekey(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("tenant_rekey", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest_e2e
def test_tenant_rekey_after_rotating_secret_key(roles_server, tenant_factory, settings):
    from tests.tenantapp.models import Note

    tenant = tenant_factory(server=roles_server)
    with tenant_context(tenant):
        Note.objects.create(title="before rotation")
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "rotated-" + settings.SECRET_KEY
    out, _ = rekey("--json")
    results = {r["slug"]: r for r in json.loads(out)}
    assert results[tenant.slug]["result"] == "rekeyed"
    assert results[tenant.slug]["role"] == credentials.role_name(get_server(roles_server), tenant.database_name)
    with tenant_context(tenant):
        assert list(Note.objects.values_list("title", flat=True)) == ["before rotation"]
    assert tenant.database.connection.settings_dict["PASSWORD"] == credentials.tenant_password(
        results[tenant.slug]["role"]
    )
    out, _ = rekey(tenant.slug)
    assert f"{tenant.slug}: rekeyed (role {results[tenant.slug]['role']} on {roles_server})" in out


@pytest_e2e
def test_tenant_rekey_creates_a_missing_role(tenant_factory):
    prepare("mysqlroles")
    from tests.tenantapp.models import Note

    tenant = tenant_factory(server="mysqlroles")
    server = get_server("mysqlroles")
    role = credentials.role_name(server, tenant.database_name)
    tenant.database.close()
    admin_query(server, "DROP USER %s@'%%'", [role])
    out, _ = rekey(tenant.slug)
    assert f"{tenant.slug}: created (role {role} on mysqlroles)" in out
    with tenant_context(tenant):
        assert Note.objects.count() == 0


@pytest_e2e
def test_tenant_rekey_errors_are_one_line(tenant_factory):
    with pytest.raises(CommandError, match=r"^no tenant 'nobody-here' is registered$"):
        rekey("nobody-here")
    plain = tenant_factory()  # the default (SQLite) server has no tenant roles
    with pytest.raises(CommandError, match=rf"^tenant '{plain.slug}' is on server 'default', which does not give"):
        rekey(plain.slug)
    out, _ = rekey()  # every tenant on a tenant_roles server: there is none
    assert out == "No tenants on servers with tenant_roles: nothing to re-key.\n"
    out, _ = rekey("--json")
    assert json.loads(out) == []


@pytest.mark.django_db(transaction=True)
def test_tenant_rekey_reports_each_failure_and_exits_non_zero():
    from tenant_schema.models import Tenant

    Tenant.objects.create(slug="orphan", server="gone", database_name="tstest_orphan", status=Tenant.Status.READY)
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match=r"^1 of 1 tenant could not be re-keyed: orphan$"):
        call_command("tenant_rekey", "--json", stdout=out, stderr=err)
    (result,) = json.loads(out.getvalue())
    assert result["slug"] == "orphan" and result["result"] == "failed"
    assert result["error"].startswith("unknown tenant server 'gone'")
