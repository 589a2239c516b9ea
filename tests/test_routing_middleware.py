"""TenantMiddleware under WSGI (Client) and ASGI (AsyncClient), streaming included."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client

from tenant_schema import tenant_context
from tenant_schema.databases import close_tenant_connections
from tenant_schema.lifecycle.archive import archive_tenant
from tests.tenantapp.models import Note

pytestmark = pytest.mark.urls("tests.tenantapp.urls")


def resolver(settings, name: str) -> None:
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "RESOLVER": name}


@pytest.fixture
def two_tenants(tenant_factory):
    a, b = tenant_factory(), tenant_factory()
    for tenant in (a, b):
        with tenant_context(tenant):
            Note.objects.create(title=f"note of {tenant.slug}")
    return a, b


@pytest.mark.django_db
def test_subdomain_selects_the_tenant(two_tenants):
    a, b = two_tenants
    for tenant in (a, b):
        data = Client(HTTP_HOST=f"{tenant.slug}.example.com").get("/notes/").json()
        assert data == {
            "tenant": tenant.slug,
            "request_tenant": tenant.slug,
            "titles": [f"note of {tenant.slug}"],
            "url": "/notes/",
        }
    assert Client(HTTP_HOST=f"{a.slug}.localhost:8000").get("/notes/").json()["tenant"] == a.slug


@pytest.mark.django_db
def test_unknown_or_not_ready_tenants_get_404(two_tenants, settings):
    a, _ = two_tenants
    assert Client(HTTP_HOST="nobody.example.com").get("/notes/").status_code == 404
    archive_tenant(a)
    assert Client(HTTP_HOST=f"{a.slug}.example.com").get("/notes/").status_code == 404
    resolver(settings, "header")
    assert Client(headers={"X-Tenant": "Not A Slug"}).get("/notes/").status_code == 404


@pytest.mark.django_db
def test_no_slug_means_shared_pages_only(two_tenants):
    client = Client(HTTP_HOST="example.com")
    assert client.get("/shared/").content == b"shared tenant=None"
    assert client.get("/notes/").status_code == 404, "a tenant view with no tenant is not found, as an unknown one"


@pytest.mark.django_db
def test_header_resolver(two_tenants, settings):
    resolver(settings, "header")
    a, b = two_tenants
    assert Client(headers={"X-Tenant": b.slug}).get("/notes/").json()["titles"] == [f"note of {b.slug}"]
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "HEADER": "X-Customer"}
    assert Client(headers={"X-Customer": a.slug}).get("/notes/").json()["tenant"] == a.slug


@pytest.mark.django_db
def test_path_resolver_strips_the_prefix_and_reverse_keeps_it(two_tenants, settings):
    resolver(settings, "path")
    a, _ = two_tenants
    data = Client().get(f"/{a.slug}/notes/").json()
    assert data["tenant"] == a.slug and data["url"] == f"/{a.slug}/notes/"
    assert Client().get("/nobody/notes/").status_code == 404


@pytest.mark.django_db
def test_a_sites_own_resolver(two_tenants, settings):
    resolver(settings, "tests.tenantapp.urls.resolve_from_query")
    _, b = two_tenants
    assert Client().get(f"/notes/?tenant={b.slug}").json()["tenant"] == b.slug


@pytest.mark.django_db
def test_streaming_body_is_iterated_inside_the_tenant(two_tenants):
    a, _ = two_tenants
    response = Client(HTTP_HOST=f"{a.slug}.example.com").get("/stream/")
    assert b"".join(response.streaming_content).decode() == f"{a.slug}:1;" * 3


@pytest.mark.django_db(transaction=True)
async def test_asgi_views_and_streaming(tenant_factory, settings):
    resolver(settings, "header")  # the ASGI test client always sends its own Host header first
    a, b = await sync_to_async(tenant_factory)(), await sync_to_async(tenant_factory)()
    async with tenant_context(b):
        await Note.objects.acreate(title="only in b")
    client = AsyncClient()

    def get(url, slug):
        return client.get(url, headers={"X-Tenant": slug})

    assert (await get("/anotes/", b.slug)).json() == {"tenant": b.slug, "titles": ["only in b"]}
    assert (await get("/notes/", b.slug)).json()["titles"] == ["only in b"]
    for url in ("/astream/", "/stream/"):
        response = await get(url, b.slug)
        if response.is_async:
            chunks = [chunk async for chunk in response.streaming_content]
        else:  # what Django's ASGI handler does with a sync iterator
            chunks = await sync_to_async(list)(response.streaming_content)
        assert b"".join(chunks).decode() == f"{b.slug}:1;" * 3
    assert (await get("/anotes/", a.slug)).json() == {"tenant": a.slug, "titles": []}
    assert (await get("/anotes/", "ghost")).status_code == 404
    # acreate() above ran outside any request, in asgiref's long-lived sync thread: close
    # what it opened there, as a site does at shutdown (it would count against the cap).
    await sync_to_async(close_tenant_connections)()


@pytest.mark.django_db
def test_ready_tenants_are_cached_and_changes_in_this_process_apply_at_once(two_tenants, django_assert_num_queries):
    from tenant_schema.middleware import ready_tenants

    a, _ = two_tenants
    ready_tenants.forget()
    client = Client(HTTP_HOST=f"{a.slug}.example.com")
    assert client.get("/notes/").status_code == 200
    with django_assert_num_queries(0, using="default"):  # the registry is not asked again
        assert client.get("/notes/").json()["tenant"] == a.slug
    archive_tenant(a)
    assert client.get("/notes/").status_code == 404


@pytest.mark.django_db
def test_changes_from_other_processes_are_seen_within_the_ttl(two_tenants, settings, monkeypatch):
    from tenant_schema import registry
    from tenant_schema.models import Tenant

    a, _ = two_tenants
    registry.ready_tenants.forget()
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "ROUTING_CACHE_SECONDS": 5}
    now = [1000.0]
    monkeypatch.setattr(registry.time, "monotonic", lambda: now[0])
    client = Client(HTTP_HOST=f"{a.slug}.example.com")
    assert client.get("/notes/").status_code == 200
    # Another process archives it: a queryset update sends no signal here.
    Tenant.objects.filter(pk=a.pk).update(status=Tenant.Status.ARCHIVED)
    now[0] += 4.9
    assert client.get("/notes/").status_code == 200
    now[0] += 0.2
    assert client.get("/notes/").status_code == 404


@pytest.mark.django_db
def test_routing_cache_can_be_turned_off(two_tenants, settings):
    from tenant_schema.models import Tenant

    a, _ = two_tenants
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "ROUTING_CACHE_SECONDS": 0}
    client = Client(HTTP_HOST=f"{a.slug}.example.com")
    assert client.get("/notes/").status_code == 200
    Tenant.objects.filter(pk=a.pk).update(status=Tenant.Status.ARCHIVED)
    assert client.get("/notes/").status_code == 404


@pytest.mark.django_db
def test_request_tenant_is_a_private_copy(two_tenants):
    from tenant_schema.middleware import ready_tenants

    a, _ = two_tenants
    first = ready_tenants.get(a.slug)
    first.name = "changed by a view"
    assert ready_tenants.get(a.slug).name != "changed by a view"


@pytest.mark.django_db
def test_a_tenant_archived_while_its_lookup_is_in_flight_is_not_cached_as_ready(two_tenants):
    """A forget() between the registry query and the cache insert is not lost."""
    from django.db import connections

    from tenant_schema.middleware import ready_tenants
    from tenant_schema.models import Tenant

    a, _ = two_tenants
    ready_tenants.forget()
    archived = []

    def archive_right_after_the_lookup(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if not archived and Tenant._meta.db_table in sql and sql.lstrip().upper().startswith("SELECT"):
            archived.append(a.slug)
            archive_tenant(a)  # as another request thread would, while the lookup is in flight
        return result

    with connections["default"].execute_wrapper(archive_right_after_the_lookup):
        ready_tenants.get(a.slug)  # read before the archive: this one call may still see it ready
    assert archived == [a.slug]
    assert ready_tenants.get(a.slug) is None
    assert Client(HTTP_HOST=f"{a.slug}.example.com").get("/notes/").status_code == 404
