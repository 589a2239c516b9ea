"""TenantWebsocketMiddleware, driven by Channels' own WebsocketCommunicator against live tenant databases."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.urls import path

from tenant_schema import NoTenantSelected, tenant_context
from tenant_schema.channels import BAD_REQUEST, UNKNOWN_TENANT, TenantWebsocketMiddleware, tenant_group
from tenant_schema.context import current_tenant
from tenant_schema.lifecycle.archive import archive_tenant
from tests.tenantapp.models import Note

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 10  # seconds: a first connection to a tenant database on MySQL can take a while
#: The threads sync handlers ran in (asgiref's one sync thread, as under Daphne).
HANDLER_THREADS: list[int] = []


def state(scope) -> dict:
    """What a consumer reports: the current tenant, ``scope["tenant"]`` and the tenant's note titles."""
    tenant = current_tenant()
    try:
        titles = sorted(Note.objects.values_list("title", flat=True))
    except NoTenantSelected:
        titles = "no tenant selected"
    return {
        "tenant": tenant.slug if tenant else None,
        "scope_tenant": scope["tenant"].slug if scope["tenant"] else None,
        "titles": titles,
    }


class SyncNotes(WebsocketConsumer):
    """Sync handlers: Channels runs each one through ``database_sync_to_async``."""

    def connect(self):
        self.accept()
        if self.channel_layer is not None:
            async_to_sync(self.channel_layer.group_add)(tenant_group("notes"), self.channel_name)
        self.send(text_data=json.dumps(state(self.scope)))

    def receive(self, text_data=None, bytes_data=None):
        HANDLER_THREADS.append(threading.get_ident())
        title = json.loads(text_data).get("add")
        if title:
            Note.objects.create(title=title)
        self.send(text_data=json.dumps(state(self.scope)))

    def notes_refresh(self, event):  # a channel-layer event, sent from outside any tenant
        self.send(text_data=json.dumps(state(self.scope)))

    def disconnect(self, code):
        if self.channel_layer is not None:
            async_to_sync(self.channel_layer.group_discard)(tenant_group("notes"), self.channel_name)


class AsyncNotes(AsyncWebsocketConsumer):
    """Async handlers: writes through Django's async ORM, reads through ``database_sync_to_async``."""

    async def connect(self):
        await self.accept()
        await self.send(text_data=json.dumps(await database_sync_to_async(state)(self.scope)))

    async def receive(self, text_data=None, bytes_data=None):
        title = json.loads(text_data).get("add")
        if title:
            await Note.objects.acreate(title=title)
        await self.send(text_data=json.dumps(await database_sync_to_async(state)(self.scope)))


class Farewell(AsyncWebsocketConsumer):
    """Writes a row when the socket closes, through the async ORM (no ``database_sync_to_async`` around it)."""

    async def connect(self):
        await self.accept()

    async def disconnect(self, code):
        await Note.objects.acreate(title="left")
        HANDLER_THREADS.append(await sync_to_async(threading.get_ident)())


application = TenantWebsocketMiddleware(
    URLRouter(
        [
            path("ws/notes/", SyncNotes.as_asgi()),
            path("ws/anotes/", AsyncNotes.as_asgi()),
            path("ws/farewell/", Farewell.as_asgi()),
        ]
    )
)


def resolver(settings, name: str) -> None:
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "RESOLVER": name}


def seeded(tenant_factory, server: str | None = None):
    """Two ready tenants on ``server``, each holding one note of its own."""
    tenants = tenant_factory(server=server), tenant_factory(server=server)
    for tenant in tenants:
        with tenant_context(tenant):
            Note.objects.create(title=f"note of {tenant.slug}")
    return tenants


@pytest.fixture
def two_tenants(tenant_factory):
    return seeded(tenant_factory)


def host(slug: str) -> list[tuple[bytes, bytes]]:
    return [(b"host", f"{slug}.example.com".encode())]


async def opened(url: str, headers=None, app=application) -> tuple[WebsocketCommunicator, dict]:
    """A connected communicator and the consumer's greeting."""
    communicator = WebsocketCommunicator(app, url, headers=headers or [])
    connected, code = await communicator.connect(timeout=TIMEOUT)
    assert connected, f"refused with {code}"
    return communicator, await communicator.receive_json_from(timeout=TIMEOUT)


async def ask(communicator: WebsocketCommunicator, message: dict) -> dict:
    await communicator.send_json_to(message)
    return await communicator.receive_json_from(timeout=TIMEOUT)


async def refused_with(url: str, headers=None) -> int | None:
    communicator = WebsocketCommunicator(application, url, headers=headers or [])
    connected, code = await communicator.connect(timeout=TIMEOUT)
    await communicator.wait(TIMEOUT)
    return None if connected else code


def holds_connection(tenant) -> tuple[bool, int]:
    """Whether this thread has a connection to ``tenant``'s database open, and which thread this is."""
    alias = tenant.database.alias
    return alias in connections.settings and connections[alias].connection is not None, threading.get_ident()


@database_sync_to_async
def titles_in(tenant) -> list[str]:
    with tenant_context(tenant):
        return sorted(Note.objects.values_list("title", flat=True))


@pytest.mark.parametrize("url", ["/ws/notes/", "/ws/anotes/"], ids=["sync", "async"])
async def test_two_sockets_each_read_and_write_only_their_own_tenant(url, server_key, tenant_factory):
    a, b = await database_sync_to_async(seeded)(tenant_factory, server_key)
    to_a, hello_a = await opened(url, host(a.slug))
    to_b, hello_b = await opened(url, host(b.slug))
    try:
        for tenant, hello in ((a, hello_a), (b, hello_b)):
            assert hello == {"tenant": tenant.slug, "scope_tenant": tenant.slug, "titles": [f"note of {tenant.slug}"]}
        assert (await ask(to_a, {"add": "for a"}))["titles"] == ["for a", f"note of {a.slug}"]
        assert (await ask(to_b, {"add": "for b"}))["titles"] == ["for b", f"note of {b.slug}"]
        await asyncio.sleep(0.2)  # later messages, long after the connect, interleaved with the other socket
        assert await ask(to_a, {}) == {
            "tenant": a.slug,
            "scope_tenant": a.slug,
            "titles": ["for a", f"note of {a.slug}"],
        }
        assert (await ask(to_b, {}))["tenant"] == b.slug
    finally:
        await to_a.disconnect(timeout=TIMEOUT)
        await to_b.disconnect(timeout=TIMEOUT)
    assert await titles_in(a) == ["for a", f"note of {a.slug}"]
    assert await titles_in(b) == ["for b", f"note of {b.slug}"]
    assert current_tenant() is None


async def test_header_path_and_a_sites_own_resolver(two_tenants, settings):
    a, b = two_tenants
    resolver(settings, "header")
    communicator, hello = await opened("/ws/notes/", [(b"x-tenant", b.slug.encode())])
    await communicator.disconnect()
    assert hello["tenant"] == b.slug and hello["titles"] == [f"note of {b.slug}"]

    resolver(settings, "path")  # /<slug>/ws/notes/ reaches the same route as /ws/notes/
    communicator, hello = await opened(f"/{a.slug}/ws/anotes/")
    await communicator.disconnect()
    assert hello["tenant"] == a.slug and hello["titles"] == [f"note of {a.slug}"]
    assert await refused_with("/nobody/ws/notes/") == UNKNOWN_TENANT

    resolver(settings, "tests.tenantapp.urls.resolve_from_query")  # reads request.GET
    communicator, hello = await opened(f"/ws/notes/?tenant={b.slug}")
    await communicator.disconnect()
    assert hello["scope_tenant"] == b.slug and hello["titles"] == [f"note of {b.slug}"]


async def test_unknown_invalid_or_not_ready_tenants_are_refused(two_tenants, settings):
    a, _ = two_tenants
    assert await refused_with("/ws/notes/", host("nobody")) == UNKNOWN_TENANT
    await database_sync_to_async(archive_tenant)(a)
    assert await refused_with("/ws/notes/", host(a.slug)) == UNKNOWN_TENANT
    resolver(settings, "header")
    assert await refused_with("/ws/notes/", [(b"x-tenant", b"Not A Slug")]) == UNKNOWN_TENANT


async def test_no_slug_means_no_tenant_and_tenant_models_fail_closed(two_tenants, settings):
    for headers in ([(b"host", b"example.com")], host("www")):  # no subdomain; an EXCLUDED_SUBDOMAINS label
        communicator, hello = await opened("/ws/notes/", headers)
        await communicator.disconnect()
        assert hello == {"tenant": None, "scope_tenant": None, "titles": "no tenant selected"}
    resolver(settings, "path")
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "PUBLIC_PATHS": ["/ws/"]}
    communicator, hello = await opened("/ws/notes/")
    await communicator.disconnect()
    assert hello["tenant"] is None


@pytest.mark.parametrize("name", ["subdomain", "header", "path"])
async def test_a_host_allowed_hosts_refuses_is_refused_and_logged(name, two_tenants, settings, caplog):
    """Whichever resolver reads the tenant: the header and path resolvers never look at the host themselves."""
    a, _ = two_tenants
    settings.ALLOWED_HOSTS = [".example.com"]
    resolver(settings, name)
    url = f"/{a.slug}/ws/notes/" if name == "path" else "/ws/notes/"
    headers = [(b"host", f"{a.slug}.evil.test".encode()), (b"x-tenant", a.slug.encode())]
    with caplog.at_level(logging.ERROR, logger="django.security.DisallowedHost"):
        assert await refused_with(url, headers) == BAD_REQUEST
    assert f"{a.slug}.evil.test" in caplog.text
    resolver(settings, "subdomain")
    communicator, hello = await opened("/ws/notes/", host(a.slug))
    await communicator.disconnect()
    assert hello["tenant"] == a.slug


async def test_the_tenant_is_selected_only_while_the_socket_lives(two_tenants):
    a, _ = two_tenants
    seen = []

    async def around(scope, receive, send):  # what runs outside the middleware, in the socket's own task
        seen.append(current_tenant())
        await application(scope, receive, send)
        seen.append(current_tenant())

    communicator, hello = await opened("/ws/notes/", host(a.slug), app=around)
    assert hello["tenant"] == a.slug
    await communicator.disconnect()
    assert seen == [None, None]
    assert current_tenant() is None


async def test_channel_layer_events_are_handled_in_each_sockets_tenant(two_tenants, settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    a, b = two_tenants
    to_a, _ = await opened("/ws/notes/", host(a.slug))
    to_b, _ = await opened("/ws/notes/", host(b.slug))
    try:
        async with tenant_context(a):  # a's group "notes" is a's only
            await get_channel_layer().group_send(tenant_group("notes"), {"type": "notes.refresh"})
        first = await to_a.receive_json_from(timeout=TIMEOUT)
        assert await to_b.receive_nothing(timeout=0.3), "b's socket in a group of the same name heard nothing"
        async with tenant_context(b):
            await get_channel_layer().group_send(tenant_group("notes"), {"type": "notes.refresh"})
        second = await to_b.receive_json_from(timeout=TIMEOUT)
        assert await to_a.receive_nothing(timeout=0.3)
    finally:
        await to_a.disconnect()
        await to_b.disconnect()
    assert [(x["tenant"], x["titles"]) for x in (first, second)] == [
        (a.slug, [f"note of {a.slug}"]),
        (b.slug, [f"note of {b.slug}"]),
    ]


def test_tenant_group_names_are_the_tenants_own_and_valid(two_tenants):
    a, b = two_tenants
    with tenant_context(a):
        mine = tenant_group("chat.room-1")
    with tenant_context(b):
        theirs = tenant_group("chat.room-1")
    assert mine == f"tenant-{a.uid.hex}.chat.room-1" and mine != theirs
    with pytest.raises(NoTenantSelected):
        tenant_group("chat")
    with tenant_context(a):
        for bad in ("", "room 1", "ròom", "x" * 60):
            with pytest.raises(ValueError, match="invalid group name"):
                tenant_group(bad)
        assert len(tenant_group("x" * 59)) == 99


async def test_a_socket_whose_tenant_goes_away_is_closed_at_its_next_message(two_tenants):
    from tenant_schema import drop_tenant_db, register_tenant

    a, b = two_tenants
    archived, _ = await opened("/ws/notes/", host(a.slug))
    await sync_to_async(archive_tenant)(a.slug)
    await archived.send_json_to({"add": "after archive"})
    assert await archived.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": UNKNOWN_TENANT}

    reused, _ = await opened("/ws/notes/", host(b.slug))
    await sync_to_async(drop_tenant_db)(b.slug)
    newcomer = await sync_to_async(register_tenant)(b.slug, server=b.server)  # someone else takes the slug
    try:
        await reused.send_json_to({"add": "into the newcomer?"})
        assert await reused.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": UNKNOWN_TENANT}
        assert await titles_in(newcomer) == []
    finally:
        await sync_to_async(drop_tenant_db)(newcomer.slug)
    assert await sync_to_async(archived_titles)(a) == [f"note of {a.slug}"], "nothing written after the archive"


def archived_titles(tenant) -> list[str]:
    with tenant_context(tenant.slug, maintenance=True):
        return sorted(Note.objects.values_list("title", flat=True))


async def test_handlers_give_their_tenant_connections_back(two_tenants):
    a, _ = two_tenants
    communicator, _ = await opened("/ws/notes/", host(a.slug))
    assert (await ask(communicator, {"add": "x"}))["titles"] == [f"note of {a.slug}", "x"]
    # Queued behind the handler in asgiref's one sync thread: runs after database_sync_to_async closed it.
    assert await sync_to_async(holds_connection)(a) == (False, HANDLER_THREADS[-1])
    await communicator.disconnect()

    communicator = WebsocketCommunicator(application, "/ws/farewell/", headers=host(a.slug))
    assert (await communicator.connect(timeout=TIMEOUT))[0]
    await communicator.disconnect(timeout=TIMEOUT)  # Farewell.disconnect writes through the async ORM
    assert await sync_to_async(holds_connection)(a) == (False, HANDLER_THREADS[-1])  # closed after disconnect()
    assert "left" in await titles_in(a)


async def test_other_scope_types_pass_through_untouched():
    seen = []

    async def inner(scope, receive, send):
        seen.append((scope, current_tenant()))

    scope = {"type": "http", "path": "/notes/", "headers": [(b"host", b"acme.example.com")]}
    await TenantWebsocketMiddleware(inner)(scope, None, None)
    assert seen == [(scope, None)]
