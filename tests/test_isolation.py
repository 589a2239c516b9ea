"""Many threads and async tasks, each in its own tenant, interleaved: no row lands elsewhere."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async

from tenant_schema import close_tenant_connections, current_tenant, tenant_context
from tests.tenantapp.models import Category, Note, Tag

ROWS = 15


def check_only_own_rows(tenants, writers_per_tenant: int) -> None:
    for tenant in tenants:
        with tenant_context(tenant):
            titles = list(Note.objects.values_list("title", flat=True))
            assert len(titles) == ROWS * writers_per_tenant
            assert all(t.startswith(f"{tenant.slug}/") for t in titles), titles
            assert Category.objects.get().name == tenant.slug
            assert set(Tag.objects.values_list("label", flat=True)) <= {tenant.slug}
            assert all(
                t.startswith(f"{tenant.slug}/")
                for t in Note.objects.filter(tags__isnull=False).values_list("title", flat=True)
            )


@pytest.mark.django_db(transaction=True)
def test_threads_each_in_a_tenant(server_key, tenant_factory):
    tenants = [tenant_factory(server=server_key) for _ in range(4)]
    for tenant in tenants:
        with tenant_context(tenant):
            Category.objects.create(name=tenant.slug)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(tenant, n):
        try:
            barrier.wait(10)
            for i in range(ROWS):
                with tenant_context(tenant):
                    category = Category.objects.get()
                    note = Note.objects.create(title=f"{tenant.slug}/{n}/{i}")
                    Tag.objects.create(label=category.name, category=category).notes.add(note)
                    assert current_tenant() == tenant
                    assert Note.objects.exclude(title__startswith=f"{tenant.slug}/").count() == 0
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)
        finally:
            close_tenant_connections()

    threads = [threading.Thread(target=work, args=(tenants[n % 4], n)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    check_only_own_rows(tenants, writers_per_tenant=2)


@pytest.mark.django_db(transaction=True)
async def test_interleaved_async_tasks_each_in_a_tenant(server_key, tenant_factory):
    tenants = [await sync_to_async(tenant_factory)(server=server_key) for _ in range(4)]
    for tenant in tenants:
        async with tenant_context(tenant):
            await Category.objects.acreate(name=tenant.slug)

    async def work(tenant, n):
        async with tenant_context(tenant):
            category = await Category.objects.aget()
            for i in range(ROWS):
                note = await Note.objects.acreate(title=f"{tenant.slug}/{n}/{i}")
                tag = await Tag.objects.acreate(label=category.name, category=category)
                await tag.notes.aadd(note)
                await asyncio.sleep(0)  # hand over to another tenant's task mid-way
                assert current_tenant() == tenant
                assert await Note.objects.exclude(title__startswith=f"{tenant.slug}/").acount() == 0

    await asyncio.gather(*(work(tenants[n % 4], n) for n in range(12)))
    await sync_to_async(close_tenant_connections)()
    await sync_to_async(check_only_own_rows)(tenants, 3)
    await sync_to_async(close_tenant_connections)()  # asgiref's worker thread outlives the test: leave it none


@pytest.mark.django_db(transaction=True)
async def test_threads_and_tasks_together(tenant_factory):
    """Sync workers in threads (sync_to_async(thread_sensitive=False)) next to async tasks."""
    tenants = [await sync_to_async(tenant_factory)(server="sqlite") for _ in range(3)]
    for tenant in tenants:
        async with tenant_context(tenant):
            await Category.objects.acreate(name=tenant.slug)

    def sync_work(tenant, n):
        with tenant_context(tenant):
            for i in range(ROWS):
                Note.objects.create(title=f"{tenant.slug}/{n}/{i}")
        close_tenant_connections()

    async def async_work(tenant, n):
        async with tenant_context(tenant):
            for i in range(ROWS):
                await Note.objects.acreate(title=f"{tenant.slug}/{n}/{i}")
                await asyncio.sleep(0)

    jobs = []
    for n, tenant in enumerate(tenants):
        jobs.append(sync_to_async(sync_work, thread_sensitive=False)(tenant, f"s{n}"))
        jobs.append(async_work(tenant, f"a{n}"))
    await asyncio.gather(*jobs)
    await sync_to_async(close_tenant_connections)()
    await sync_to_async(check_only_own_rows)(tenants, 2)
    await sync_to_async(close_tenant_connections)()  # asgiref's worker thread outlives the test: leave it none
