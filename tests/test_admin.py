"""Who may do what in the Tenant admin (Django's test client; the browser tests are in test_admin_browser.py).

Staff without the tenant permissions get nothing; view permission shows the
list but runs nothing; change permission runs the actions; only a superuser
purges, and nobody can delete a row with Django's delete (it would orphan
the tenant's database).
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.db import OperationalError
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from tenant_schema import hookimpl, tenant_context
from tenant_schema.management.inspection import database_exists
from tenant_schema.models import Tenant
from tenant_schema.plugins import get_plugin_manager

from .conftest import new_tenant_id

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"


@pytest.fixture
def tenant(db_access):
    from tenant_schema.lifecycle.archive import purge_tenant
    from tenant_schema.lifecycle.register import register_tenant

    made = register_tenant(new_tenant_id(), name="Client Co")
    yield made
    if Tenant.objects.filter(pk=made.pk).exists():
        made.database.close()
        purge_tenant(made)


@pytest.fixture
def login(client, django_user_model):
    """``login(*permission codenames, superuser=False)``: a logged-in staff client."""

    def make(*codenames: str, superuser: bool = False):
        user = django_user_model.objects.create_user(
            f"user{django_user_model.objects.count()}", password=PASSWORD, is_staff=True, is_superuser=superuser
        )
        user.user_permissions.set(
            Permission.objects.filter(content_type__app_label="tenant_schema", codename__in=codenames)
        )
        client.force_login(user)
        return client

    return make


def urls(tenant: Tenant) -> dict[str, str]:
    return {
        "changelist": reverse("admin:tenant_schema_tenant_changelist"),
        "add": reverse("admin:tenant_schema_tenant_add"),
        "change": reverse("admin:tenant_schema_tenant_change", args=[tenant.pk]),
        "delete": reverse("admin:tenant_schema_tenant_delete", args=[tenant.pk]),
        "archive": reverse("admin:tenant_schema_tenant_run", args=[tenant.pk, "archive"]),
        "purge": reverse("admin:tenant_schema_tenant_purge", args=[tenant.pk]),
    }


def test_staff_without_permissions_get_nothing(login, tenant):
    client = login()
    index = client.get(reverse("admin:index"))
    assert index.status_code == 200
    assert b"tenant_schema/tenant" not in index.content
    for name, url in urls(tenant).items():
        assert client.get(url).status_code == 403, name
        assert client.post(url, {"slug": tenant.slug}).status_code == 403, name
    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.READY
    assert database_exists(tenant)


def test_view_permission_shows_the_tenant_but_runs_nothing(login, tenant):
    client = login("view_tenant")
    page = client.get(urls(tenant)["changelist"])
    assert page.status_code == 200
    assert tenant.slug in page.content.decode()
    assert b'name="action"' not in page.content, "no actions without the change permission"
    detail = client.get(urls(tenant)["change"]).content.decode()
    assert "tenantapp_note" in detail
    assert 'value="archive"' not in detail and 'class="purgelink"' not in detail
    assert client.post(urls(tenant)["archive"]).status_code == 403
    assert client.post(urls(tenant)["purge"], {"slug": tenant.slug}).status_code == 403
    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.READY


def test_change_permission_archives_but_cannot_purge(login, tenant):
    client = login("view_tenant", "change_tenant")
    detail = client.get(urls(tenant)["change"]).content.decode()
    assert 'value="archive"' in detail and 'class="purgelink"' not in detail
    assert client.get(urls(tenant)["archive"]).status_code == 405, "actions are POST only"
    response = client.post(urls(tenant)["archive"], follow=True)
    assert f"{tenant.slug} archived" in response.content.decode()
    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.ARCHIVED
    assert database_exists(tenant), "archiving keeps the data"
    assert client.post(urls(tenant)["purge"], {"slug": tenant.slug}).status_code == 403
    assert database_exists(tenant)


def test_superuser_purges_only_with_the_slug_typed(login, tenant):
    client = login(superuser=True)
    assert client.get(urls(tenant)["delete"]).status_code == 403, "Django's delete is never available"
    assert b"delete_selected" not in client.get(urls(tenant)["changelist"]).content

    wrong = client.post(urls(tenant)["purge"], {"slug": "yes"})
    assert wrong.status_code == 200
    assert "That is not this tenant" in wrong.content.decode()
    assert database_exists(tenant)

    tenant.database.close()
    done = client.post(urls(tenant)["purge"], {"slug": tenant.slug}, follow=True)
    assert done.redirect_chain[-1][0] == urls(tenant)["changelist"]
    assert f"{tenant.slug} purged" in done.content.decode()
    assert not Tenant.objects.filter(pk=tenant.pk).exists()
    assert not database_exists(tenant)


class RefusingServer:
    """A plugin whose CREATE DATABASE fails, as a full or read-only server would."""

    @hookimpl(tryfirst=True)
    def tenant_schema_create_database(self, dialect, server, name):
        raise OperationalError("could not create database: no space left on device")

    @hookimpl(tryfirst=True)
    def tenant_schema_clone_database(self, dialect, server, template, name):
        raise OperationalError("could not create database: no space left on device")


def test_adding_a_tenant_provisions_it_and_a_failure_can_be_retried(login, db_access):
    from tenant_schema.lifecycle.archive import purge_tenant

    client = login(superuser=True)
    page = client.get(reverse("admin:tenant_schema_tenant_add")).content.decode()
    assert re.search(r'<label[^>]*for="id_server"[^>]*>Server:</label>', page), "a label like the others"
    assert '<option value="pg">pg (postgres)</option>' in page, "each server with its dialect"
    assert "automatic" not in page, "without a placement policy the default server is pre-selected"
    slug = new_tenant_id()
    form = {"slug": slug, "name": "Retry Co", "server": "default"}
    pm = get_plugin_manager()
    pm.register(RefusingServer(), name="refusing-server")
    try:
        response = client.post(reverse("admin:tenant_schema_tenant_add"), form, follow=True)
    finally:
        pm.unregister(name="refusing-server")
    tenant = Tenant.objects.get(slug=slug)
    assert response.redirect_chain[-1][0] == reverse("admin:tenant_schema_tenant_change", args=[tenant.pk])
    page = response.content.decode()
    assert "no space left on device" in page and "was added successfully" not in page
    assert tenant.status == Tenant.Status.FAILED
    assert 'value="provision"' in page, "the page offers the retry"

    response = client.post(reverse("admin:tenant_schema_tenant_run", args=[tenant.pk, "provision"]), follow=True)
    assert f"Tenant {slug} is ready." in response.content.decode()
    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.READY
    assert "tenantapp_note" in response.content.decode(), "the live tables are shown"
    tenant.database.close()
    purge_tenant(tenant)


def test_migrate_action_applies_pending_migrations(login, tenant):
    with tenant_context(tenant):
        MigrationExecutor(tenant.database.connection).migrate([("tenantapp", "0001_initial")])
    tenant.database.close()
    client = login("view_tenant", "change_tenant")
    changelist = reverse("admin:tenant_schema_tenant_changelist")
    response = client.post(changelist, {"action": "migrate", "_selected_action": [tenant.pk]}, follow=True)
    assert f"Tenant {tenant.slug}: applied tenantapp.0002_note_pinned" in response.content.decode()
    response = client.post(changelist, {"action": "migrate", "_selected_action": [tenant.pk]}, follow=True)
    assert f"Tenant {tenant.slug} is up to date." in response.content.decode()


def test_maintenance_and_restore_actions(login, tenant):
    client = login("view_tenant", "change_tenant")
    changelist = reverse("admin:tenant_schema_tenant_changelist")
    in_maintenance = changelist + "?maintenance__exact=1"
    assert tenant.slug not in client.get(in_maintenance).content.decode()

    response = client.post(changelist, {"action": "maintenance_on", "_selected_action": [tenant.pk]}, follow=True)
    assert f"Tenant {tenant.slug} is in maintenance mode: reads are served, writes are refused." in (
        response.content.decode()
    )
    tenant.refresh_from_db()
    assert tenant.maintenance and tenant.status == Tenant.Status.READY
    assert tenant.slug in client.get(in_maintenance).content.decode(), "the list filters on maintenance"
    detail = client.get(urls(tenant)["change"]).content.decode()
    assert 'value="maintenance_off"' in detail and 'value="maintenance_on"' not in detail

    run = reverse("admin:tenant_schema_tenant_run", args=[tenant.pk, "maintenance_off"])
    response = client.post(run, follow=True)
    assert f"Tenant {tenant.slug} is out of maintenance mode" in response.content.decode()
    tenant.refresh_from_db()
    assert not tenant.maintenance

    response = client.post(changelist, {"action": "restore", "_selected_action": [tenant.pk]}, follow=True)
    assert f"Tenant {tenant.slug} is ready, not archived; it was not restored." in response.content.decode()
    client.post(urls(tenant)["archive"])
    detail = client.get(urls(tenant)["change"]).content.decode()
    assert 'value="restore"' in detail and 'value="maintenance_on"' not in detail
    response = client.post(reverse("admin:tenant_schema_tenant_run", args=[tenant.pk, "restore"]), follow=True)
    assert f"Tenant {tenant.slug} restored: it is ready again." in response.content.decode()
    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.READY


def test_view_permission_cannot_switch_maintenance(login, tenant):
    client = login("view_tenant")
    for action in ("maintenance_on", "restore"):
        assert client.post(reverse("admin:tenant_schema_tenant_run", args=[tenant.pk, action])).status_code == 403
    tenant.refresh_from_db()
    assert not tenant.maintenance


def test_the_add_form_leaves_the_server_to_the_placement_policy(login, settings, db_access):
    from tenant_schema.lifecycle.archive import purge_tenant

    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "PLACEMENT": "fewest"}
    client = login(superuser=True)
    page = client.get(reverse("admin:tenant_schema_tenant_add")).content.decode()
    assert re.search(r'<option value="-automatic-" selected>automatic', page)
    slug = new_tenant_id()
    client.post(reverse("admin:tenant_schema_tenant_add"), {"slug": slug, "name": "", "server": "-automatic-"})
    tenant = Tenant.objects.get(slug=slug)
    assert tenant.status == Tenant.Status.READY and tenant.server in settings.TENANT_SCHEMA["SERVERS"]
    tenant.database.close()
    purge_tenant(tenant)
