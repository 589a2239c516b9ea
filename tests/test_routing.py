"""TenantRouter and tenant_context: tenant models follow the current tenant, and fail closed."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field
from typing import Optional

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import router

from tenant_schema import (
    CrossTenantAccess,
    NoTenantSelected,
    TenantNotFound,
    current_tenant,
    register_tables,
    tenant_context,
)
from tenant_schema.models import Tenant
from tenant_schema.routers import TenantRouter
from tenant_schema.schema.mapping import APP_LABEL
from tests.tenantapp.models import Category, Note, Tag


@pytest.mark.django_db
def test_no_tenant_fails_closed_and_never_falls_back_to_default():
    with pytest.raises(NoTenantSelected, match="no tenant selected"):
        Note.objects.count()
    with pytest.raises(NoTenantSelected):
        Note.objects.create(title="nowhere")
    assert current_tenant() is None


@pytest.mark.django_db
def test_shared_models_stay_on_default(in_tenant):
    assert TenantRouter().db_for_read(User) is None  # not a tenant model: no opinion
    assert router.db_for_read(User) == "default"  # so Django routes it to default
    User.objects.create(username="shared-user")
    assert User.objects.using("default").filter(username="shared-user").exists()
    assert Tenant.objects.filter(slug=in_tenant.slug).exists()


@pytest.mark.django_db
def test_tenant_models_use_the_current_tenants_alias(tenant_factory):
    a, b = tenant_factory(), tenant_factory()
    with tenant_context(a):
        assert router.db_for_write(Note) == a.database.alias
        Note.objects.create(title="in a")
    with tenant_context(b):
        assert router.db_for_read(Note) == b.database.alias
        assert Note.objects.count() == 0
    with tenant_context(a):
        assert list(Note.objects.values_list("title", flat=True)) == ["in a"]


def test_allow_migrate_keeps_apps_on_their_side():
    r = router.routers[0]
    assert r.allow_migrate("tenant:acme", "tenantapp") is True
    assert r.allow_migrate("tenant:acme", "auth") is False
    assert r.allow_migrate("tenant:acme", "tenant_schema") is False
    assert r.allow_migrate("default", "tenantapp") is False
    assert r.allow_migrate("default", "auth") is None
    assert r.allow_migrate("tenant_schema:server:pg", "auth") is False
    for db in ("default", "tenant:acme", "tenant_schema:server:pg"):  # register_table makes these tables
        assert r.allow_migrate(db, APP_LABEL) is False


@pytest.mark.django_db
def test_relations_across_tenants_are_refused(tenant_factory):
    a, b = tenant_factory(), tenant_factory()
    with tenant_context(a):
        category_a = Category.objects.create(name="from a")
        note_a = Note.objects.create(title="a")
        tag_a = Tag.objects.create(label="a")
    with tenant_context(b):
        tag_b = Tag.objects.create(label="b")
        with pytest.raises(ValueError, match="router prevents this relation"):
            tag_b.category = category_a
        with pytest.raises(ValueError, match="instance is on database .* value is on database"):
            tag_b.notes.add(note_a)
        with pytest.raises(CrossTenantAccess, match=f"current tenant is '{b.slug}'"):
            note_a.save()
        with pytest.raises(CrossTenantAccess):
            note_a.refresh_from_db()
    with tenant_context(a):
        tag_a.category = category_a
        tag_a.save()
        tag_a.notes.add(note_a)
        assert Tag.objects.get(pk=tag_a.pk).category == category_a
        assert list(note_a.tags.all()) == [tag_a]


@pytest.mark.django_db
def test_nesting_restores_the_outer_tenant(tenant_factory):
    a, b = tenant_factory(), tenant_factory()
    with tenant_context(a):
        with tenant_context(b.slug) as inner:
            assert inner == b and current_tenant() == b
        assert current_tenant() == a
        with pytest.raises(RuntimeError):
            with tenant_context(b):
                raise RuntimeError("boom")
        assert current_tenant() == a
    assert current_tenant() is None


@pytest.mark.django_db
def test_unknown_slug_is_a_clear_error():
    with pytest.raises(TenantNotFound, match="no tenant 'ghost' is registered"):
        with tenant_context("ghost"):
            pass
    with pytest.raises(TypeError, match="takes a Tenant or a slug"):
        with tenant_context(42):
            pass


@pytest.mark.django_db(transaction=True)  # the async slug lookup runs in another thread
def test_decorator_on_plain_and_async_functions(tenant):
    @tenant_context(tenant)
    def sync_count():
        return current_tenant().slug, Note.objects.count()

    @tenant_context(tenant.slug)
    async def async_slug():
        return current_tenant().slug

    assert sync_count() == (tenant.slug, 0)
    assert current_tenant() is None
    assert asyncio.run(async_slug()) == tenant.slug


@pytest.mark.django_db
def test_a_new_thread_starts_with_no_tenant(in_tenant):
    seen = []
    thread = threading.Thread(target=lambda: seen.append(current_tenant()))
    thread.start()
    thread.join()
    assert seen == [None] and current_tenant() == in_tenant


@pytest.mark.django_db(transaction=True)
async def test_async_tasks_inherit_and_keep_their_own_tenant(tenant_factory):
    a, b = await sync_to_async(tenant_factory)(), await sync_to_async(tenant_factory)()

    async def which(tenant):
        async with tenant_context(tenant):
            await asyncio.sleep(0)
            inner = asyncio.create_task(asyncio.sleep(0, result=current_tenant()))
            return current_tenant(), await inner

    results = await asyncio.gather(which(a), which(b), which(a))
    assert results == [(a, a), (b, b), (a, a)]
    assert current_tenant() is None


@pytest.mark.django_db
def test_in_tenant_fixture_selects_the_tenant(in_tenant):
    assert current_tenant() == in_tenant and in_tenant.status == Tenant.Status.READY
    Note.objects.create(title="fixture")
    assert Note.objects.count() == 1


@dataclass
class Shelf:
    label: str = field(metadata={"max_length": 40})
    id: Optional[int] = None


@dataclass
class Book:
    shelf: Shelf  # cascades from shelves
    title: str = field(metadata={"max_length": 80})
    id: Optional[int] = None


@pytest.mark.django_db
def test_registered_table_models_are_tenant_models(server_key, tenant_factory):
    """``table.model`` with no explicit database fails closed, like a TENANT_APPS model."""
    a, b = tenant_factory(server=server_key), tenant_factory(server=server_key)
    tables_a = register_tables(a.database, [(Shelf, "shelves"), (Book, "books")])
    tables_b = register_tables(b.database, [(Shelf, "shelves"), (Book, "books")])
    shelves, books = tables_a["shelves"], tables_a["books"]
    assert tables_b["books"].model is books.model  # one shared class: only the router tells tenants apart

    with pytest.raises(NoTenantSelected):
        router.db_for_read(books.model)
    with pytest.raises(NoTenantSelected):
        books.model.objects.count()
    with pytest.raises(NoTenantSelected):
        shelves.model.objects.create(label="nowhere")

    with tenant_context(a):
        assert router.db_for_write(books.model) == a.database.alias
        shelf = shelves.model.objects.create(label="in a")
        books.model.objects.create(shelf=shelf, title="t1")  # a foreign key inside one tenant
    with tenant_context(b):
        assert router.db_for_read(books.model) == b.database.alias
        assert books.model.objects.count() == 0
        with pytest.raises(CrossTenantAccess):
            shelf.save()
        shelf_b = shelves.model.objects.create(label="in b")
        book_b = books.model.objects.get(pk=tables_b["books"].create({"shelf": shelf_b.pk, "title": "b"}).id)
        with pytest.raises(ValueError, match="router prevents this relation"):
            book_b.shelf = shelf
    assert [s.label for s in shelves.list()] == ["in a"]
    assert [(x.title, x.shelf) for x in books.list()] == [("t1", shelf.pk)]


@pytest.mark.django_db
def test_tables_name_their_tenant_whatever_tenant_is_selected(server_key, tenant_factory):
    """Table calls pass the alias explicitly: they work with no tenant or another one selected."""
    a, b = tenant_factory(server=server_key), tenant_factory(server=server_key)
    tables = register_tables(a.database, [(Shelf, "shelves"), (Book, "books")])
    shelves, books = tables["shelves"], tables["books"]
    register_tables(b.database, [(Shelf, "shelves"), (Book, "books")])
    for selected in (None, b):
        with tenant_context(selected) if selected else contextlib.nullcontext():
            shelf = shelves.create({"label": "s"})
            books.batch_create([{"shelf": shelf, "title": "x"}, {"shelf": shelf.id, "title": "y"}])
            first = books.list(order_by="id")[0]
            books.upsert([{"id": first.id, "shelf": shelf, "title": "x2"}], conflict="id")
            assert books.update(first.id, {"title": "x3"}).title == "x3"
            assert [x.title for x in books.list(order_by="id")] == ["x3", "y"]
            assert shelves.delete(shelf.id) is True  # cascades to its books, in tenant a
            assert books.count() == 0 and shelves.count() == 0
    assert b.database.table("books").count() == 0
