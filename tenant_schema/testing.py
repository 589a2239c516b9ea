"""pytest fixtures for sites using tenant-schema.

Installed as the ``tenant_schema`` pytest plugin (a ``pytest11`` entry
point), so with pytest-django they are available in every test:

- ``tenant_factory``: ``tenant_factory(slug=None, server=None, name="")``
  registers a ready tenant (a unique slug when none is given) and purges
  every tenant it made when the test ends, database included;
- ``tenant``: one such tenant on ``TENANT_SCHEMA["DEFAULT_SERVER"]``;
- ``in_tenant``: ``tenant``, selected as the current tenant for the test,
  so tenant models work directly in the test body (sync or async).

They request pytest-django's ``db`` fixture, so the test's
``django_db`` mark decides between a transaction rolled back afterwards
(the default) and ``transaction=True`` (needed when threads or other
processes must see the registry rows).
"""

from __future__ import annotations

import uuid

import pytest


def unique_slug(prefix: str = "test") -> str:
    """A slug no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def tenant_factory(db):
    """Register tenants for one test; purge them (row and database) afterwards."""
    from tenant_schema.databases import drop_tenant_db
    from tenant_schema.exceptions import TenantNotFound
    from tenant_schema.provisioning import purge_tenant, register_tenant

    made = []

    def make(slug: str | None = None, *, server: str | None = None, name: str = ""):
        tenant = register_tenant(slug or unique_slug(), server=server, name=name)
        made.append(tenant)
        return tenant

    yield make
    for tenant in reversed(made):
        tenant.database.close()
        try:
            purge_tenant(tenant.slug)
        except TenantNotFound:  # the test deleted the row itself: still drop the data
            drop_tenant_db(tenant.slug, server=tenant.server, database_name_=tenant.database_name)


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
