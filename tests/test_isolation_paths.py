"""Isolation past save() and delete(): every ORM path that takes a model instance, and tenant_context's limits.

Both tenants of a ``pair`` hold the same rows under the same primary keys,
so a path that used tenant B's object on tenant A's database would hit A's
row with that key rather than miss: each test asserts the error *and* that
neither tenant's rows changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re

import pytest
from asgiref.sync import sync_to_async
from django.db.models import Q
from django.test import override_settings

from tenant_schema import CrossTenantAccess, archive_tenant, current_tenant, tenant_context
from tenant_schema.exceptions import TenantNotReady
from tenant_schema.lifecycle.migrate import migrate_tenant
from tenant_schema.models import Tenant
from tests.tenantapp.models import Category, Note, Tag

Links = Tag.notes.through


@dataclasses.dataclass
class Side:
    tenant: Tenant
    category: Category
    notes: list[Note]
    tag: Tag  # has the category and both notes
    spare: Tag  # has the category, no notes

    @property
    def alias(self) -> str:
        return self.tenant.database.alias


def make_side(tenant: Tenant) -> Side:
    with tenant_context(tenant):
        category = Category.objects.create(name="same name")
        notes = [Note.objects.create(title=f"{tenant.slug} note {i}") for i in range(2)]
        tag = Tag.objects.create(label=f"{tenant.slug} tag", category=category)
        tag.notes.add(*notes)
        spare = Tag.objects.create(label=f"{tenant.slug} spare", category=category)
    return Side(tenant, category, notes, tag, spare)


def rows(tenant: Tenant) -> dict[str, list]:
    """Everything the tenant's database holds."""
    with tenant_context(tenant):
        return {
            "categories": sorted(Category.objects.values_list("pk", "name")),
            "notes": sorted(Note.objects.values_list("pk", "title")),
            "tags": sorted(Tag.objects.values_list("pk", "label", "category_id")),
            "links": sorted(Links.objects.values_list("tag_id", "note_id")),
        }


@contextlib.contextmanager
def nothing_written(*sides: Side):
    before = [rows(side.tenant) for side in sides]
    yield
    assert [rows(side.tenant) for side in sides] == before


def loaded_from(side: Side) -> str:
    """The start of the CrossTenantAccess message for one of ``side``'s objects."""
    return rf"was loaded from '{re.escape(side.alias)}'"


@pytest.fixture
def pair(server_key, tenant_factory) -> tuple[Side, Side]:
    a = make_side(tenant_factory(server=server_key))
    b = make_side(tenant_factory(server=server_key))
    keys = lambda s: (s.category.pk, [n.pk for n in s.notes], s.tag.pk, s.spare.pk)  # noqa: E731
    assert keys(a) == keys(b)  # same keys on both sides: a crossed path would hit a row, not miss it
    return a, b


# -- bulk operations -------------------------------------------------------------


@pytest.mark.django_db
def test_bulk_update_refuses_objects_of_another_tenant(pair):
    a, b = pair
    mine, theirs = a.notes[1], b.notes[0]
    mine.title = theirs.title = "written from a"
    with nothing_written(a, b), tenant_context(a.tenant):
        with pytest.raises(CrossTenantAccess, match=rf"Note {theirs.pk} {loaded_from(b)}.*bulk_update\(\)"):
            Note.objects.bulk_update([mine, theirs], ["title"])  # one foreign object: nothing is written
        with pytest.raises(CrossTenantAccess, match=loaded_from(b)):  # naming a's database is no way round it
            Note.objects.using(a.alias).bulk_update([theirs], ["title"])
    with tenant_context(a.tenant):  # on the object's own database it works, whichever tenant is selected
        Note.objects.using(b.alias).bulk_update([theirs], ["title"])
        Note.objects.bulk_update([mine], ["title"])
    assert dict(rows(b.tenant)["notes"])[theirs.pk] == dict(rows(a.tenant)["notes"])[mine.pk] == "written from a"
    assert dict(rows(a.tenant)["notes"])[theirs.pk] == f"{a.tenant.slug} note 0"


@pytest.mark.django_db
def test_bulk_create_refuses_objects_of_another_tenant(pair):
    a, b = pair
    theirs = b.notes[0]
    with tenant_context(b.tenant):
        related_in_b = Tag(label="built in b", category=b.category)  # relating it to b's row ties it to b
    with tenant_context(a.tenant):
        Note.objects.filter(pk=theirs.pk).delete()  # free the key: nothing but the check stops the insert
    with nothing_written(a, b), tenant_context(a.tenant):
        with pytest.raises(CrossTenantAccess, match=rf"Note {theirs.pk} {loaded_from(b)}.*bulk_create\(\)"):
            Note.objects.bulk_create([Note(title="new"), theirs])
        theirs.pk = None  # dropping its key does not make it a's
        with pytest.raises(CrossTenantAccess, match=loaded_from(b)):
            Note.objects.bulk_create([theirs])
        with pytest.raises(CrossTenantAccess, match=loaded_from(b)):
            Tag.objects.bulk_create([related_in_b])
    # New objects, and copies built from another tenant's values, go to the current tenant.
    with tenant_context(a.tenant):
        made = Note.objects.bulk_create([Note(title="fresh"), Note(title=b.notes[1].title, body="copied")])
        assert {n._state.db for n in made} == {a.alias}
        assert set(Note.objects.filter(body="copied").values_list("title", flat=True)) == {b.notes[1].title}
    with tenant_context(b.tenant):
        assert not Note.objects.filter(title="fresh").exists()


# -- relation managers -------------------------------------------------------------


@pytest.mark.django_db
def test_relation_managers_refuse_objects_of_another_tenant(pair):
    a, b = pair
    refused = {  # each would change a's rows that share keys with b's objects
        "reverse foreign key remove": lambda: a.category.tags.remove(b.tag),
        "reverse foreign key set": lambda: a.category.tags.set([b.tag]),
        "many-to-many remove": lambda: a.tag.notes.remove(b.notes[0]),
        "many-to-many set": lambda: a.tag.notes.set([b.notes[0]]),
        "reverse many-to-many remove": lambda: a.notes[0].tags.remove(b.tag),
        "reverse many-to-many set": lambda: a.notes[0].tags.set([a.spare, b.tag]),
    }
    with nothing_written(a, b), tenant_context(a.tenant):
        for _name, call in refused.items():
            with pytest.raises(CrossTenantAccess, match=loaded_from(b)):
                call()
        # add() was refused before: the router does not allow the relation (Django's ValueError).
        with pytest.raises(ValueError, match="router prevents this relation"):
            a.category.tags.add(b.tag)
        with pytest.raises(ValueError, match="instance is on database"):
            a.tag.notes.add(b.notes[0])
        # b's own manager while a is selected: the router refuses it.
        with pytest.raises(CrossTenantAccess, match=f"current tenant is '{a.tenant.slug}'"):
            b.tag.notes.remove(b.notes[0])
    with tenant_context(a.tenant):  # within one tenant they work as ever, objects or keys
        a.tag.notes.set([a.notes[1]])
        a.category.tags.remove(a.spare)
        a.notes[1].tags.remove(a.tag.pk)
        assert list(a.tag.notes.all()) == [] and list(a.category.tags.all()) == [a.tag]
    assert rows(b.tenant)["links"] == sorted((b.tag.pk, n.pk) for n in b.notes)


# -- objects as query values -----------------------------------------------------------


@pytest.mark.django_db
def test_objects_of_another_tenant_are_not_query_values(pair):
    a, b = pair
    refused = {
        "filter": lambda: list(Tag.objects.filter(category=b.category)),
        "exclude": lambda: Tag.objects.exclude(category=b.category).count(),
        "get": lambda: Tag.objects.get(pk=a.tag.pk, category=b.category),
        "__in": lambda: list(Tag.objects.filter(category__in=[a.category, b.category])),
        "many-to-many": lambda: Note.objects.filter(tags=b.tag).exists(),
        "negated many-to-many (a subquery)": lambda: list(Note.objects.exclude(tags=b.tag)),
        "Q": lambda: list(Tag.objects.filter(Q(label="x") | Q(category=b.category))),
        "querysets combined with |": lambda: list(
            Tag.objects.filter(label="x") | Tag.objects.filter(category=b.category)
        ),
        "inner queryset": lambda: list(Note.objects.filter(pk__in=Links.objects.filter(tag=b.tag).values("note_id"))),
        "get_or_create": lambda: Tag.objects.get_or_create(label=a.tag.label, category=b.category),
        "update() of matching rows": lambda: Tag.objects.filter(category=b.category).update(label="x"),
        "update() setting the object": lambda: Tag.objects.update(category=b.category),
        "delete() of matching rows": lambda: Tag.objects.filter(category=b.category).delete(),
    }
    with nothing_written(a, b), tenant_context(a.tenant):
        not_refused = []
        for name, call in refused.items():
            try:
                call()
            except CrossTenantAccess as exc:
                assert re.search(rf"(Category|Tag) \d+ {loaded_from(b)}.* runs on '{a.alias}'", str(exc)), str(exc)
            else:
                not_refused.append(name)
        assert not_refused == []
    with tenant_context(b.tenant):  # a queryset is tied to its objects' tenant, not to where it was built
        in_b = Tag.objects.filter(category=b.category).order_by("pk")
    with tenant_context(a.tenant):
        with pytest.raises(CrossTenantAccess, match=loaded_from(b)):
            list(in_b)
        assert list(Tag.objects.filter(category=a.category).order_by("pk")) == [a.tag, a.spare]
        assert Note.objects.filter(tags=a.tag).count() == 2
        # On the object's own database the query runs, whichever tenant is selected.
        assert [t.label for t in Tag.objects.using(b.alias).filter(category=b.category).order_by("pk")] == [
            b.tag.label,
            b.spare.label,
        ]
        # A plain key is a value of the current tenant: nothing ties it to b.
        assert Tag.objects.filter(category_id=b.category.pk).count() == 2
    with tenant_context(b.tenant):
        assert list(in_b) == [b.tag, b.spare]


# -- refresh and delete -----------------------------------------------------------------


@pytest.mark.django_db
def test_refresh_and_delete_stay_with_the_objects_tenant(pair):
    a, b = pair
    theirs = b.notes[0]
    with nothing_written(a, b), tenant_context(a.tenant):
        for call in (
            theirs.refresh_from_db,
            lambda: theirs.refresh_from_db(from_queryset=Note.objects.all()),
            lambda: theirs.refresh_from_db(using=a.alias),
            theirs.delete,
            b.category.delete,  # would null a's tags (SET_NULL) by b's key
        ):
            with pytest.raises(CrossTenantAccess, match=loaded_from(b)):
                call()
    assert (theirs.title, theirs._state.db) == (f"{b.tenant.slug} note 0", b.alias)
    with tenant_context(a.tenant):  # a cascade stays in the deleted object's tenant
        a.category.delete()
        assert set(Tag.objects.values_list("category_id", flat=True)) == {None}
    with tenant_context(b.tenant):
        theirs.refresh_from_db(from_queryset=Note.objects.all())
        assert set(Tag.objects.values_list("category_id", flat=True)) == {b.category.pk}


@pytest.mark.django_db(transaction=True)
async def test_async_twins_are_checked_too(pair):
    a, b = pair
    before = await sync_to_async(rows)(a.tenant), await sync_to_async(rows)(b.tenant)
    theirs = b.notes[0]
    theirs.title = "written from a"
    async with tenant_context(a.tenant):
        for awaitable in (
            Note.objects.abulk_update([theirs], ["title"]),
            Note.objects.abulk_create([theirs]),
            a.tag.notes.aremove(theirs),
            a.category.tags.aset([b.tag]),
            Tag.objects.filter(category=b.category).acount(),
            theirs.arefresh_from_db(from_queryset=Note.objects.all()),
        ):
            with pytest.raises(CrossTenantAccess, match=loaded_from(b)):
                await awaitable
    assert (await sync_to_async(rows)(a.tenant), await sync_to_async(rows)(b.tenant)) == before


# -- tenant_context on generators ----------------------------------------------------------


@pytest.mark.django_db
def test_a_decorated_generator_holds_its_tenant_each_time_it_resumes(server_key, tenant_factory):
    a, b = tenant_factory(server=server_key), tenant_factory(server=server_key)
    with tenant_context(a):
        Note.objects.create(title="in a")
    finished = []

    @tenant_context(a)
    def walk():
        try:
            received = yield current_tenant(), list(Note.objects.values_list("title", flat=True))
            yield current_tenant(), received
            try:
                yield current_tenant(), Note.objects.count()
            except KeyError as exc:
                yield "caught", exc.args[0], current_tenant()
            return "done"
        finally:
            finished.append(current_tenant())

    with tenant_context(b):
        gen = walk()
        assert next(gen) == (a, ["in a"])
        assert current_tenant() == b and Note.objects.count() == 0  # the caller's tenant between yields
        Note.objects.create(title="in b")
        assert gen.send("sent") == (a, "sent")
        assert next(gen) == (a, 1)
        assert gen.throw(KeyError("thrown")) == ("caught", "thrown", a)
        with pytest.raises(StopIteration) as stop:
            next(gen)
        assert stop.value.value == "done" and current_tenant() == b
        closed = walk()
        next(closed)
        closed.close()  # the body's finally runs in its tenant too
    assert finished == [a, a] and current_tenant() is None


@pytest.mark.django_db
def test_nested_generators_and_blocks_inside_them(tenant_factory):
    a, b, c = tenant_factory(), tenant_factory(), tenant_factory()

    @tenant_context(b.slug)  # a slug is looked up when the body starts
    def inner():
        yield "inner", current_tenant()
        return current_tenant()

    @tenant_context(a)
    def outer():
        returned = yield from inner()  # inner's body in b; outer's in a
        yield "returned", returned, current_tenant()
        with tenant_context(c):  # a block spanning yields keeps its tenant, in the body only
            yield "block", current_tenant()
            yield "block", current_tenant()
        yield "after", current_tenant()

    seen = [(item, current_tenant()) for item in outer()]
    assert seen == [
        (("inner", b), None),
        (("returned", b, a), None),
        (("block", c), None),
        (("block", c), None),
        (("after", a), None),
    ]
    gen = outer()
    with tenant_context(c):
        assert next(gen) == ("inner", b) and current_tenant() == c
    assert next(gen) == ("returned", b, a) and current_tenant() is None


@pytest.mark.django_db(transaction=True)  # slugs are looked up in another thread
async def test_a_decorated_async_generator_holds_its_tenant_each_time_it_resumes(server_key, tenant_factory):
    a = await sync_to_async(tenant_factory)(server=server_key)
    b = await sync_to_async(tenant_factory)(server=server_key)
    async with tenant_context(a):
        await Note.objects.acreate(title="in a")
    finished = []

    @tenant_context(a.slug)
    async def walk():
        try:
            received = yield current_tenant(), [t async for t in Note.objects.values_list("title", flat=True)]
            await asyncio.sleep(0)
            yield current_tenant(), received
            async with tenant_context(b):
                yield "block", current_tenant(), await Note.objects.acount()
                await asyncio.sleep(0)
                yield "block", current_tenant()
            try:
                yield "after", current_tenant()
            except KeyError as exc:
                yield "caught", exc.args[0], current_tenant()
        finally:
            await asyncio.sleep(0)
            finished.append(current_tenant())

    async with tenant_context(b):
        agen = walk()
        assert await anext(agen) == (a, ["in a"])
        assert current_tenant() == b and await Note.objects.acount() == 0
        assert await agen.asend("sent") == (a, "sent")
        assert await anext(agen) == ("block", b, 0)
        assert await anext(agen) == ("block", b)
        assert await anext(agen) == ("after", a)
        assert await agen.athrow(KeyError("thrown")) == ("caught", "thrown", a)
        with pytest.raises(StopAsyncIteration):
            await anext(agen)
        closed = walk()
        await anext(closed)
        await closed.aclose()
    assert finished == [a, a] and current_tenant() is None

    async def ticks(n):
        for _ in range(n):
            await asyncio.sleep(0)
            yield current_tenant()

    async def drain(agen):
        return [t async for t in agen] + [current_tenant()]

    in_a, in_b = tenant_context(a)(ticks), tenant_context(b)(ticks)
    assert await asyncio.gather(drain(in_a(3)), drain(in_b(3))) == [[a, a, a, None], [b, b, b, None]]


@pytest.mark.django_db(transaction=True)
async def test_coroutines_keep_working(tenant_factory):
    a = await sync_to_async(tenant_factory)()

    @tenant_context(a.slug)
    async def count():
        await asyncio.sleep(0)
        return current_tenant(), await Note.objects.acount()

    @tenant_context(a)
    async def gen_then_count():
        yield await count()

    assert await count() == (a, 0)
    assert [x async for x in gen_then_count()] == [(a, 0)]
    assert current_tenant() is None


@pytest.mark.django_db(transaction=True)
async def test_a_cancelled_async_generator_finishes_in_its_tenant(tenant_factory):
    a = await sync_to_async(tenant_factory)()
    finished, started = [], asyncio.Event()

    @tenant_context(a)
    async def waits():
        try:
            started.set()
            await asyncio.Event().wait()
            yield "never"
        finally:
            finished.append(current_tenant())

    async def consume():
        async for _ in waits():
            pass

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == [a] and current_tenant() is None


# -- tenants that are not ready ----------------------------------------------------------

STATUS_MESSAGE = r"tenant '{slug}' is {status}, not ready.*maintenance=True"


@pytest.mark.django_db
def test_tenants_that_are_not_ready_are_refused_unless_for_maintenance(server_key, tenant_factory):
    tenant = tenant_factory(server=server_key)
    with tenant_context(tenant):
        Note.objects.create(title="kept")
    archived = archive_tenant(tenant.slug)

    def count():
        return Note.objects.count()

    def generator():
        yield Note.objects.count()

    message = STATUS_MESSAGE.format(slug=tenant.slug, status="archived")
    for call in (tenant_context(tenant.slug)(count), lambda: next(tenant_context(tenant.slug)(generator)())):
        with pytest.raises(TenantNotReady, match=message):
            call()
    for target in (tenant.slug, archived):
        with pytest.raises(TenantNotReady, match=message):
            with tenant_context(target):
                pytest.fail("the block must not run")
    assert current_tenant() is None

    with tenant_context(tenant.slug, maintenance=True) as selected:  # on purpose: read and write
        assert selected.status == Tenant.Status.ARCHIVED
        assert list(Note.objects.values_list("title", flat=True)) == ["kept"]
        Note.objects.create(title="export done")
    assert tenant_context(tenant.slug, maintenance=True)(count)() == 2
    assert list(tenant_context(archived, maintenance=True)(generator)()) == [2]

    for status in (Tenant.Status.PROVISIONING, Tenant.Status.FAILED):
        Tenant.objects.filter(pk=tenant.pk).update(status=status)
        with pytest.raises(TenantNotReady, match=STATUS_MESSAGE.format(slug=tenant.slug, status=status)):
            with tenant_context(tenant.slug):
                pass
        with tenant_context(tenant.slug, maintenance=True):
            assert Note.objects.count() == 2


@pytest.mark.django_db(transaction=True)
async def test_async_paths_refuse_tenants_that_are_not_ready(tenant_factory):
    tenant = await sync_to_async(tenant_factory)()
    await sync_to_async(archive_tenant)(tenant.slug)
    message = STATUS_MESSAGE.format(slug=tenant.slug, status="archived")

    async def coroutine():
        return await Note.objects.acount()

    async def generator():
        yield await Note.objects.acount()

    with pytest.raises(TenantNotReady, match=message):
        async with tenant_context(tenant.slug):
            pytest.fail("the block must not run")
    with pytest.raises(TenantNotReady, match=message):
        await tenant_context(tenant.slug)(coroutine)()
    with pytest.raises(TenantNotReady, match=message):
        await anext(tenant_context(tenant.slug)(generator)())
    async with tenant_context(tenant.slug, maintenance=True):
        assert await Note.objects.acount() == 0
    assert await tenant_context(tenant.slug, maintenance=True)(coroutine)() == 0
    assert [n async for n in tenant_context(tenant.slug, maintenance=True)(generator)()] == [0]


V1 = {"tenantapp": "tests.tenantapp.migrations_v1"}


@pytest.mark.django_db
def test_migrating_an_archived_tenant_still_works(tenant_factory):
    """The library's own maintenance (migrate_tenant) selects archived tenants on purpose."""
    with override_settings(MIGRATION_MODULES=V1):
        tenant = tenant_factory()
    archived = archive_tenant(tenant.slug)
    assert migrate_tenant(archived) == ["tenantapp.0002_note_pinned"]


@pytest.mark.django_db(transaction=True)
async def test_generators_behind_another_decorator_are_held_too(tenant_factory):
    """A decorator in between hides the generator function: the generator it returns is still held."""
    a = await sync_to_async(tenant_factory)()

    def passthrough(func):
        def call(*args, **kwargs):  # a plain function returning the generator
            return func(*args, **kwargs)

        return call

    @tenant_context(a)
    @passthrough
    def sync_gen():
        yield current_tenant()
        yield current_tenant()

    @tenant_context(a)
    @passthrough
    async def async_gen():
        yield current_tenant()
        await asyncio.sleep(0)
        yield current_tenant()

    gen = sync_gen()
    assert [(next(gen), current_tenant()), (next(gen), current_tenant())] == [(a, None), (a, None)]
    agen = async_gen()
    assert [(await anext(agen), current_tenant()), (await anext(agen), current_tenant())] == [(a, None), (a, None)]
