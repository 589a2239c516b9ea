"""Registration never adopts or destroys a database it did not create (issue 7, section 3).

A database already holding a tenant's derived name (another site sharing the
server and ``DATABASE_PREFIX``, another application's, a registry restored
from backup) is refused with ``NotOurDatabase`` by registration, resumption,
purge and fleet migration, and is left exactly as it was.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import CommandError

from tenant_schema import NotOurDatabase, databases, ownership
from tenant_schema.databases import database_name
from tenant_schema.lifecycle.archive import purge_tenant
from tenant_schema.lifecycle.fleet import migrate_tenants
from tenant_schema.lifecycle.register import register_tenant
from tenant_schema.models import Tenant
from tenant_schema.plugins import get_plugins
from tenant_schema.servers import get_server
from tenant_schema.testing import unique_slug

from .conftest import require_live_server, require_server

SERVERS = ["sqlite", "pg", "pgschema", "mysql"]


@pytest.fixture(params=SERVERS)
def any_server(request, db_access):
    require_live_server(request.param)
    return request.param


def _exists(server_key: str, name: str) -> bool:
    server = get_server(server_key)
    return get_plugins().hook.tenant_schema_database_exists(dialect=server.dialect, server=server, name=name)


class Foreign:
    """A database someone else made under the name a slug derives, holding their data."""

    def __init__(self, server_key: str, slug: str) -> None:
        self.server = get_server(server_key)
        self.name = database_name(slug, self.server)
        hook = get_plugins().hook
        assert hook.tenant_schema_create_database(dialect=self.server.dialect, server=self.server, name=self.name)
        self.tdb = databases.TenantDatabase(f"foreign-{slug}", self.server, self.name)
        with self.tdb.connection.cursor() as cursor:
            cursor.execute("CREATE TABLE precious (id INTEGER PRIMARY KEY, note VARCHAR(50))")
            cursor.execute("INSERT INTO precious VALUES (1, 'theirs')")
        self.tdb.close()

    def rows(self) -> list:
        with self.tdb.connection.cursor() as cursor:
            cursor.execute("SELECT id, note FROM precious")
            rows = [tuple(r) for r in cursor.fetchall()]
        self.tdb.close()
        return rows

    def tables(self) -> list[str]:
        connection = self.tdb.connection
        with connection.cursor() as cursor:
            names = sorted(connection.introspection.table_names(cursor))
        self.tdb.close()
        return names

    def drop(self) -> None:
        self.tdb.close()
        databases.unregister_alias(self.tdb.alias)
        get_plugins().hook.tenant_schema_drop_database(dialect=self.server.dialect, server=self.server, name=self.name)


@pytest.fixture
def foreign():
    made: list[Foreign] = []

    def make(server_key: str, slug: str) -> Foreign:
        made.append(Foreign(server_key, slug))
        return made[-1]

    yield make
    for db in made:
        db.drop()


def _cleanup_row(slug: str) -> None:
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is not None:
        databases.forget_binding(tenant.database)
        tenant.delete()


def test_registration_refuses_a_database_it_did_not_create(any_server, foreign):
    slug = unique_slug("theirs")
    theirs = foreign(any_server, slug)
    try:
        with pytest.raises(NotOurDatabase, match=rf"{theirs.name!r} .* exists but is not tenant {slug!r}'s"):
            register_tenant(slug, server=any_server)
        tenant = Tenant.objects.get(slug=slug)
        assert tenant.status == Tenant.Status.FAILED
        assert "NotOurDatabase" in tenant.last_error
        # A second attempt (the "resume" path) is refused the same way.
        with pytest.raises(NotOurDatabase):
            register_tenant(slug, server=any_server)
        assert theirs.rows() == [(1, "theirs")]
        assert theirs.tables() == ["precious"]  # nothing added, nothing dropped
        # Purging the failed row never drops their database.
        with pytest.raises(NotOurDatabase):
            purge_tenant(slug)
        assert theirs.rows() == [(1, "theirs")]
    finally:
        _cleanup_row(slug)


def test_a_marker_from_another_registry_is_not_ours(any_server):
    """Same slug, same server, same prefix, but another site's registry row: refused."""
    slug = unique_slug("twin")
    first = register_tenant(slug, server=any_server)
    data_tables = set(ownership_tables(first))
    Tenant.objects.filter(pk=first.pk).delete()  # the other site's row is not in our registry
    databases.forget_binding(first.database)
    try:
        with pytest.raises(NotOurDatabase, match="belongs to another registry's tenant"):
            register_tenant(slug, server=any_server)
        assert set(ownership_tables(first)) == data_tables
    finally:
        _cleanup_row(slug)
        revived = Tenant.objects.create(
            slug=slug, uid=first.uid, server=first.server, database_name=first.database_name
        )
        purge_tenant(revived)
    assert not _exists(any_server, first.database_name)


def ownership_tables(tenant) -> list[str]:
    connection = tenant.database.admin_connection
    with connection.cursor() as cursor:
        names = connection.introspection.table_names(cursor)
    tenant.database.close()
    return names


def test_purge_and_fleet_migration_refuse_a_database_whose_marker_changed(any_server):
    slug = unique_slug("swapped")
    tenant = register_tenant(slug, server=any_server)
    model = ownership.marker_model()
    model.objects.using(tenant.database.admin_connection.alias).update(tenant_uid="0" * 32)
    tenant.database.close()
    try:
        assert not migrate_tenants([slug]).results[0].connected  # the registry records it up to date
        report = migrate_tenants([slug], verify=True)  # a run that connects refuses it
        assert [r.slug for r in report.failures] == [slug]
        assert "NotOurDatabase" in report.failures[0].error
        with pytest.raises(NotOurDatabase):
            purge_tenant(slug)
        assert _exists(any_server, tenant.database_name)
        assert Tenant.objects.get(slug=slug).status == Tenant.Status.ARCHIVED  # not served, not dropped
    finally:
        model.objects.using(tenant.database.admin_connection.alias).update(tenant_uid=tenant.uid.hex)
        tenant.database.close()
        purge_tenant(slug)
    assert not _exists(any_server, tenant.database_name)


def test_the_marker_is_bookkeeping_not_a_tenant_table(any_server):
    from tenant_schema import list_tables

    tenant = register_tenant(unique_slug("marked"), server=any_server)
    try:
        marker = ownership.read_marker(tenant.database)
        assert marker.tenant_uid == tenant.uid.hex and marker.slug == tenant.slug
        assert ownership.MARKER_TABLE not in list_tables(tenant.database)
    finally:
        purge_tenant(tenant)


@pytest.mark.django_db(transaction=True)
def test_a_crash_between_creating_and_marking_needs_a_person_to_claim_it(server_key):
    """The only window where our own database has no marker: refused until an operator claims it."""
    from tests.tenantapp.helpers import start_child

    slug = unique_slug("unmarked")
    no_cloning = {**settings.TENANT_SCHEMA, "CLONE_TEMPLATES": False}  # a clone is marked by rewrite_marker
    child = start_child(slug, server_key, crash="write_marker", module="ownership", tenant_schema=no_cloning)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 3, err
    try:
        with pytest.raises(NotOurDatabase, match=f"tenant_claim {slug}"):
            register_tenant(slug)
        out = _call("tenant_claim", slug)
        assert "is marked as tenant" in out
        assert register_tenant(slug).status == Tenant.Status.READY
    finally:
        purge_tenant(slug)


def test_tenant_claim_refuses_another_tenants_database(any_server, foreign):
    slug = unique_slug("claim")
    other = register_tenant(unique_slug("owner"), server=any_server)
    try:
        Tenant.objects.create(slug=slug, server=any_server, database_name=other.database_name, status="failed")
        with pytest.raises(CommandError, match="belongs to another registry's tenant"):
            _call("tenant_claim", slug)
        with pytest.raises(CommandError, match="no tenant 'nobody' is registered"):
            _call("tenant_claim", "nobody")
    finally:
        Tenant.objects.filter(slug=slug).delete()
        purge_tenant(other)


def _call(*args) -> str:
    import io

    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# -- names that must never be a tenant's --------------------------------------


@pytest.mark.parametrize(
    "server_key, prefix, slug, reserved",
    [
        ("mysql", "s", "ys", "sys"),
        ("mysql", "my", "sql", "mysql"),
        ("pg", "template", "0", "template0"),
        ("pg", "pg_", "x", "pg_x"),
        ("pg", "post", "gres", "postgres"),
        ("pgschema", "pub", "lic", "public"),
    ],
)
def test_a_slug_that_would_name_a_system_database_is_refused_before_any_sql(
    server_key, prefix, slug, reserved, settings, db_access
):
    require_server("pg" if server_key == "pgschema" else server_key)
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "DATABASE_PREFIX": prefix}
    statements = []
    server = get_server(server_key)
    with server.connection().execute_wrapper(lambda execute, sql, *a: statements.append(sql) or execute(sql, *a)):
        with pytest.raises(ValueError, match=f"database name {reserved!r}, which .* reserves"):
            register_tenant(slug, server=server_key)
    assert statements == []
    assert not Tenant.objects.filter(slug=slug).exists()


def test_an_empty_database_prefix_is_refused_by_a_check_and_before_any_sql(settings, db_access):
    from django.core.exceptions import ImproperlyConfigured

    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "DATABASE_PREFIX": ""}
    errors = [e for e in run_checks() if e.id.startswith("tenant_schema.")]
    assert any("DATABASE_PREFIX" in e.msg and e.level >= 40 for e in errors), errors
    with pytest.raises(ImproperlyConfigured, match="DATABASE_PREFIX"):
        register_tenant("acme-empty-prefix", server="sqlite")
    assert not Tenant.objects.filter(slug="acme-empty-prefix").exists()


def test_table_functions_take_a_tenant_database_a_tenant_or_a_slug(any_server):
    from dataclasses import dataclass

    from tenant_schema import (
        create_index,
        drop_index,
        drop_table,
        list_indexes,
        list_tables,
        register_table,
        table_exists,
    )

    @dataclass
    class Memo:
        id: int
        text: str

    tenant = register_tenant(unique_slug("forms"), server=any_server)
    try:
        for given in (tenant.database, tenant, tenant.slug):
            table = register_table(given, Memo, "memos")
            assert table.tenant_db is tenant.database
            assert table_exists(given, "memos") and "memos" in list_tables(given)
            name = create_index(given, "memos", ["text"])
            assert [i.name for i in list_indexes(given, "memos")] == [name]
            assert drop_index(given, name) and drop_table(given, "memos")
        with pytest.raises(TypeError, match="a TenantDatabase, a Tenant or a tenant slug, not int"):
            list_tables(42)
        from tenant_schema import TenantNotFound

        with pytest.raises(TenantNotFound):
            list_tables("nobody-here")
    finally:
        purge_tenant(tenant)


def test_a_claimed_database_keeps_its_data_when_registration_resumes(any_server, foreign):
    """Claim, then register: the data stays.

    On MySQL a never-ready database of our own is re-created; a claimed one never.
    """
    slug = unique_slug("adopt")
    theirs = foreign(any_server, slug)
    try:
        with pytest.raises(NotOurDatabase):
            register_tenant(slug, server=any_server)
        assert "is marked as tenant" in _call("tenant_claim", slug)
        tenant = register_tenant(slug, server=any_server)
        assert tenant.status == Tenant.Status.READY
        assert theirs.rows() == [(1, "theirs")]
        assert ownership.read_marker(tenant.database).origin == "claimed"
        tenant.database.close()
    finally:
        _cleanup_row(slug)


def test_only_one_creator_is_told_it_created_a_database_and_only_one_marker_is_written(any_server):
    from django.db import IntegrityError

    server = get_server(any_server)
    hook = get_plugins().hook
    slug = unique_slug("once")
    name = database_name(slug, server)
    assert hook.tenant_schema_create_database(dialect=server.dialect, server=server, name=name) is True
    try:
        assert hook.tenant_schema_create_database(dialect=server.dialect, server=server, name=name) is False
        mine = Tenant(slug=slug, server=any_server, database_name=name)
        other = Tenant(slug=slug, server=any_server, database_name=name)
        tdb = databases.TenantDatabase(slug, server, name)
        ownership.write_marker(tdb, mine)
        with pytest.raises(IntegrityError):
            ownership.write_marker(tdb, other)
        assert ownership.read_marker(tdb).tenant_uid == mine.uid.hex
        tdb.close()
        databases.unregister_alias(tdb.alias)
    finally:
        hook.tenant_schema_drop_database(dialect=server.dialect, server=server, name=name)
