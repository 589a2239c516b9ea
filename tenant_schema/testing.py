"""pytest fixtures for sites using tenant-schema.

Installed as the ``tenant_schema`` pytest plugin (a ``pytest11`` entry
point), so with pytest-django they are available in every test:

- ``tenant_factory``: ``tenant_factory(slug=None, server=None, name="")``
  registers a ready tenant (a unique slug when none is given) and purges
  every tenant it made when the test ends, database included;
- ``tenant``: one such tenant on ``TENANT_SCHEMA["DEFAULT_SERVER"]``;
- ``in_tenant``: ``tenant``, selected as the current tenant for the test,
  so tenant models work directly in the test body (sync or async).

At the end of the session the clone templates the tenants were copied from
(one per server, see ``docs/operations.md``) are dropped too.

They request pytest-django's ``db`` fixture, so the test's
``django_db`` mark decides between a transaction rolled back afterwards
(the default) and ``transaction=True`` (needed when threads or other
processes must see the registry rows).

Tenant aliases appear at run time, so no Django test case can list them in
``databases``; an autouse fixture lets ``django_db`` tests use them and
forgets them (closing their connections) after every test. Writes to a
tenant database are not rolled back with the test's transaction: the
fixtures above purge what they made.
"""

from __future__ import annotations

import sys
import uuid

import pytest

from tenant_schema.aliases import ALIAS_PREFIX, INTERNAL_ALIAS_PREFIX

OUR_ALIAS_PREFIXES = (ALIAS_PREFIX, INTERNAL_ALIAS_PREFIX)


def unique_slug(prefix: str = "test") -> str:
    """A slug no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


_template_servers: set[str] = set()  # servers whose clone template this session's tenants may have built


@pytest.fixture(scope="session", autouse=True)
def _tenant_schema_clone_templates(django_db_blocker):
    """Drop the clone templates the session's tenants built (new databases are cloned from one per server)."""
    yield
    if not _template_servers:
        return
    from tenant_schema.exceptions import UnknownServer
    from tenant_schema.lifecycle.clone import drop_clone_templates

    with django_db_blocker.unblock():
        for key in sorted(_template_servers):
            try:
                drop_clone_templates(key)
            except UnknownServer:  # a server a test added with a settings override: gone with it
                pass


@pytest.fixture
def tenant_factory(db):
    """Register tenants for one test; purge them (row and database) afterwards."""
    from tenant_schema.exceptions import TenantNotFound
    from tenant_schema.lifecycle.archive import drop_owned_database, purge_tenant
    from tenant_schema.lifecycle.register import register_tenant

    made = []

    def make(slug: str | None = None, *, server: str | None = None, name: str = ""):
        tenant = register_tenant(slug or unique_slug(), server=server, name=name)
        made.append(tenant)
        _template_servers.add(tenant.server)
        return tenant

    yield make
    for tenant in reversed(made):
        tenant.database.close()
        try:
            purge_tenant(tenant.slug)
        except TenantNotFound:  # the test deleted the row itself: still drop the data
            drop_owned_database(tenant)


@pytest.fixture
def tenant(tenant_factory):
    """A ready tenant on the default server, purged after the test."""
    return tenant_factory()


@pytest.fixture
def in_tenant(tenant):
    """``tenant``, selected as the current tenant while the test runs."""
    from tenant_schema.context import tenant_context

    with tenant_context(tenant):
        yield tenant


@pytest.fixture(autouse=True)
def _tenant_schema_aliases(request):
    """Allow tenant and server aliases in ``django_db`` tests; forget them after each test."""
    patched = None
    if request.node.get_closest_marker("django_db") is not None:
        from django.db.backends.base.base import BaseDatabaseWrapper

        request.getfixturevalue("_django_db_helper")
        with request.getfixturevalue("django_db_blocker").unblock():
            real = BaseDatabaseWrapper.ensure_connection
        patched = BaseDatabaseWrapper.ensure_connection

        def ensure_connection(self, *args, **kwargs):
            if self.alias.startswith(OUR_ALIAS_PREFIXES):
                return real(self, *args, **kwargs)
            return patched(self, *args, **kwargs)

        BaseDatabaseWrapper.ensure_connection = ensure_connection
    yield
    if patched is not None:
        from django.db.backends.base.base import BaseDatabaseWrapper

        BaseDatabaseWrapper.ensure_connection = patched
    if "tenant_schema.databases" in sys.modules:  # tenant-schema was used in this run
        from django.db import connections

        from tenant_schema.databases import unregister_alias

        for alias in [a for a in connections.settings if a.startswith(OUR_ALIAS_PREFIXES)]:
            unregister_alias(alias)


@pytest.fixture
def tenant_schema_plugin():
    """Register dialect plugins for one test: ``tenant_schema_plugin(plugin, name=None)``.

    For plugin authors. Calls ``tenant_schema.plugins.register_plugin``, so a
    plugin declaring a dialect (``tenant_schema_register_dialects``) adds it
    too, and returns the plugin's name. The plugin manager is rebuilt before
    the test and again after it: neither the plugin, nor its dialects, nor
    anything else the test registered on the manager reaches another test.
    """
    from tenant_schema import plugins

    plugins.reset_plugins()
    yield plugins.register_plugin
    plugins.reset_plugins()
