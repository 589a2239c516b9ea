"""The Tenant registry row, get/archive, and the system checks."""

from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ValidationError
from django.db import connections

from tenant_schema import signals
from tenant_schema.exceptions import TenantNotFound, TenantNotReady
from tenant_schema.lifecycle.archive import archive_tenant
from tenant_schema.models import Tenant
from tenant_schema.registry import get_tenant


@pytest.mark.django_db
def test_slug_is_validated_with_a_clear_message():
    tenant = Tenant(slug="Not_OK", server="default", database_name="x")
    with pytest.raises(ValidationError) as info:
        tenant.full_clean()
    assert "invalid tenant slug 'Not_OK'" in str(info.value.message_dict["slug"])


@pytest.mark.parametrize(
    "bad, expected",
    [
        ("../victim", "invalid tenant database name '../victim'"),
        ("a b", "invalid tenant database name 'a b'"),
        ("x\n", "invalid tenant database name 'x\\n'"),
        ("1abc", "invalid tenant database name '1abc'"),
        ("x;DROP", "invalid tenant database name 'x;DROP'"),
        ("a" * 65, "the limit here is 64"),
        ("", "cannot be blank"),
    ],
)
def test_database_name_is_validated_with_a_clear_message(bad, expected):
    tenant = Tenant(slug="ok", server="default", database_name=bad)
    with pytest.raises(ValidationError) as info:
        tenant.full_clean(validate_unique=False)
    assert expected in " ".join(info.value.message_dict["database_name"])


def test_a_row_with_a_bad_database_name_never_reaches_a_database():
    tenant = Tenant(slug="ok", server="sqlite", database_name="../victim")  # e.g. written by raw SQL
    with pytest.raises(ValueError, match="invalid tenant database name '../victim'"):
        _ = tenant.database


def test_the_row_holds_no_credentials():
    fields = {f.name for f in Tenant._meta.get_fields()}
    assert not fields & {"password", "user", "host", "url", "credentials"}


@pytest.mark.django_db
def test_get_tenant_names_what_was_wrong():
    with pytest.raises(TenantNotFound, match="no tenant 'ghost' is registered"):
        get_tenant("ghost")
    with pytest.raises(TenantNotFound, match="invalid tenant slug"):
        get_tenant("Robert'); DROP TABLE")


@pytest.mark.django_db
def test_archive_keeps_data_closes_connections_and_signals(tenant):
    from tenant_schema import tenant_context
    from tests.tenantapp.models import Note

    with tenant_context(tenant):
        Note.objects.create(title="kept")
    assert connections[tenant.database.alias].connection is not None
    seen = []
    signals.tenant_archived.connect(
        lambda sender, tenant, **kw: seen.append((sender, tenant.status)), weak=False, dispatch_uid="arch"
    )
    try:
        archived = archive_tenant(tenant.slug)
    finally:
        signals.tenant_archived.disconnect(dispatch_uid="arch")
    assert seen == [(Tenant, Tenant.Status.ARCHIVED)]
    assert get_tenant(tenant.slug).status == Tenant.Status.ARCHIVED
    assert connections[tenant.database.alias].connection is None
    with pytest.raises(TenantNotReady, match="is archived"):
        tenant_context(archived).__enter__()
    with tenant_context(archived, maintenance=True):  # the data is kept, for deliberate maintenance
        assert Note.objects.count() == 1


def errors():
    return {e.id: e.msg for e in run_checks(tags=["tenant_schema"])}


def with_setting(settings, **changes):
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, **changes}


def test_a_correct_setup_passes(settings):
    assert errors() == {}


def test_unknown_scheme_and_unparsable_url(settings):
    with_setting(settings, SERVERS={**settings.TENANT_SCHEMA["SERVERS"], "odd": "oracle://db/", "bad": "not a url"})
    found = errors()
    assert "no dialect plugin handles URL scheme 'oracle'" in found["tenant_schema.E002"]
    assert "tenant server 'bad': its value is not a URL like postgres://user@host:5432/" in found["tenant_schema.E003"]


def test_default_server_must_exist(settings):
    with_setting(settings, DEFAULT_SERVER="elsewhere")
    assert "'elsewhere', which is not a key of SERVERS" in errors()["tenant_schema.E004"]


def test_router_and_middleware_missing(settings):
    settings.DATABASE_ROUTERS = []
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "tenant_schema" not in m]
    found = errors()
    assert "TenantRouter is not in DATABASE_ROUTERS" in found["tenant_schema.E008"]
    assert "TenantMiddleware is not in MIDDLEWARE" in found["tenant_schema.W001"]


def test_app_both_tenant_and_shared(settings):
    with_setting(settings, SHARED_APPS=["tests.tenantapp"])
    assert "'tenantapp' is listed both in TENANT_APPS and in SHARED_APPS" in errors()["tenant_schema.E006"]


def test_tenant_apps_must_be_installed_and_not_core(settings):
    with_setting(settings, TENANT_APPS=["tests.tenantapp", "not.installed", "auth"])
    found = errors()
    assert "'not.installed', which is not installed" in found["tenant_schema.E005"]
    assert "'auth' cannot be a tenant app" in found["tenant_schema.E007"]


def test_bad_cap_resolver_and_tenant_tables(settings):
    with_setting(
        settings,
        MAX_OPEN_CONNECTIONS=0,
        RESOLVER="no.such.resolver",
        TENANT_TABLES=[("tests.tenantapp.tables.Nope", "nope", "id")],
    )
    found = errors()
    assert "MAX_OPEN_CONNECTIONS" in found["tenant_schema.E009"]
    assert "RESOLVER" in found["tenant_schema.E010"]
    assert "does not import" in found["tenant_schema.E011"]


def test_tenant_app_without_migrations(settings):
    settings.MIGRATION_MODULES = {"tenantapp": None}
    assert "'tenantapp' has no migrations" in errors()["tenant_schema.E012"]


def test_tenant_app_whose_migrations_package_is_empty(settings):
    """Only ``__init__.py`` in ``migrations/``: Django counts the app as migrated, yet it has no migration."""
    settings.MIGRATION_MODULES = {"tenantapp": "tests.tenantapp.migrations_empty"}
    assert "'tenantapp' has no migrations" in errors()["tenant_schema.E012"]


@pytest.mark.django_db
def test_registration_refuses_a_tenant_app_with_no_migration_before_anything_exists(settings):
    from tenant_schema import register_tenant
    from tenant_schema.exceptions import TenantSchemaError
    from tenant_schema.models import Tenant

    settings.MIGRATION_MODULES = {"tenantapp": "tests.tenantapp.migrations_empty"}
    with pytest.raises(TenantSchemaError, match=r"'tenantapp' has no migrations.*makemigrations tenantapp"):
        register_tenant("no-tables-yet", server="sqlite")
    assert not Tenant.objects.filter(slug="no-tables-yet").exists()


def test_tenant_app_with_migrations_passes(settings):
    assert "tenant_schema.E012" not in errors()
