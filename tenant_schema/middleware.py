"""``TenantMiddleware``: find the request's tenant and select it for the whole response.

The tenant comes from ``TENANT_SCHEMA["RESOLVER"]``:

- ``"subdomain"`` (default): ``acme.example.com`` -> ``acme`` (the first
  label of a host with three or more labels, or of ``acme.localhost``);
- ``"header"``: the ``TENANT_SCHEMA["HEADER"]`` request header (``X-Tenant``);
- ``"path"``: ``/acme/rest/of/path`` -> ``acme``; the prefix is removed
  from ``request.path_info`` (so the URLconf sees ``/rest/of/path``) and
  added to the script prefix (so ``reverse()`` includes it);
- a dotted path to your own ``resolver(request) -> slug | None``.

No slug (``example.com`` itself) means no tenant: shared pages work, tenant
models fail closed. A slug that is unknown, invalid or not ``ready`` is a
404, never another tenant's data. The tenant is ``request.tenant`` and the
current tenant while the view runs and while a streaming body is iterated.
Works under WSGI and ASGI.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from django.db.models.signals import post_delete, post_save
from django.http import Http404, HttpRequest
from django.urls import get_script_prefix, set_script_prefix
from django.utils.module_loading import import_string

from . import conf
from .context import _current
from .models import Tenant
from .names import validate_tenant_id
from .signals import tenant_archived, tenant_dropped

RESOLVERS = ("subdomain", "header", "path")


def from_subdomain(request: HttpRequest) -> str | None:
    host = request.get_host().rsplit(":", 1)[0].rstrip(".").lower()
    labels = host.split(".")
    if len(labels) >= 3 or (len(labels) == 2 and labels[1] == "localhost"):
        return labels[0]
    return None


def from_header(request: HttpRequest) -> str | None:
    return request.headers.get(conf.get("HEADER")) or None


def from_path(request: HttpRequest) -> str | None:
    parts = request.path_info.split("/", 2)  # "", slug, rest
    if len(parts) < 2 or not parts[1]:
        return None
    slug = parts[1]
    request.tenant_path_prefix = f"/{slug}"
    request.path_info = "/" + (parts[2] if len(parts) > 2 else "")
    return slug


@functools.lru_cache(maxsize=8)
def _resolver(setting: str) -> Callable[[HttpRequest], str | None]:
    builtin = {"subdomain": from_subdomain, "header": from_header, "path": from_path}
    if setting in builtin:
        return builtin[setting]
    try:
        return import_string(setting)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f'TENANT_SCHEMA["RESOLVER"] must be one of {", ".join(RESOLVERS)} or a dotted path '
            f"to a function: {exc}"
        ) from None


def get_resolver() -> Callable[[HttpRequest], str | None]:
    return _resolver(conf.get("RESOLVER"))


class ReadyTenants:
    """Ready tenants by slug, trusted for ``TENANT_SCHEMA["ROUTING_CACHE_SECONDS"]``.

    Without it every request pays a registry query (and, with
    ``CONN_MAX_AGE=0``, a connection to ``default``): about half the cost of
    a small request. Only ready tenants are kept, so a new tenant is served
    at once; any save or delete of a tenant in this process forgets it at
    once; other processes notice within the TTL. Callers get a copy, so a
    view changing ``request.tenant`` changes no other request's.

    The registry query runs outside the lock. A ``forget`` that lands
    between that query and the insert bumps ``_generation``, and the
    (possibly stale) row is then not cached. One counter for all slugs:
    forgets are rare (a tenant saved or deleted), and the price of a
    spurious bump is one more registry query, never a stale entry.
    """

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Tenant, float]] = {}
        self._lock = threading.Lock()
        self._generation = 0

    def get(self, slug: str) -> Tenant | None:
        cached = self.peek(slug)
        if cached is not None:
            return cached
        ttl = float(conf.get("ROUTING_CACHE_SECONDS"))
        now = time.monotonic()
        generation = self._generation
        tenant = Tenant.objects.filter(slug=slug, status=Tenant.Status.READY).first()
        with self._lock:
            if tenant is None or ttl <= 0:
                self._entries.pop(slug, None)
            elif generation != self._generation:
                pass  # forgotten while we queried: the row may predate the change
            else:
                if len(self._entries) >= self.MAX_ENTRIES:
                    self._entries.clear()
                self._entries[slug] = (tenant, now + ttl)
        return copy.copy(tenant) if tenant is not None else None

    def peek(self, slug: str) -> Tenant | None:
        """The cached tenant, without a query (async code skips a thread hop)."""
        hit = self._entries.get(slug)
        if hit is not None and hit[1] > time.monotonic():
            return copy.copy(hit[0])
        return None

    def forget(self, slug: str | None = None) -> None:
        with self._lock:
            self._generation += 1
            if slug is None:
                self._entries.clear()
            else:
                self._entries.pop(slug, None)


ready_tenants = ReadyTenants()


def _forget(sender, instance=None, tenant=None, **kwargs) -> None:
    row = instance if instance is not None else tenant
    ready_tenants.forget(getattr(row, "slug", None))


post_save.connect(_forget, sender=Tenant, dispatch_uid="tenant_schema.routing_cache.save")
post_delete.connect(_forget, sender=Tenant, dispatch_uid="tenant_schema.routing_cache.delete")
tenant_archived.connect(_forget, dispatch_uid="tenant_schema.routing_cache.archived")
tenant_dropped.connect(_forget, dispatch_uid="tenant_schema.routing_cache.dropped")


def _lookup(slug: str | None) -> Tenant | None:
    """The ready tenant ``slug``; ``Http404`` for an invalid, unknown or not-ready one."""
    try:
        validate_tenant_id(slug)
    except ValueError:
        raise Http404("unknown tenant") from None
    tenant = ready_tenants.get(slug)
    if tenant is None:
        raise Http404("unknown tenant")
    return tenant


def _select(tenant: Tenant):
    return _current.set((tenant, tenant.database))


def _in_tenant(iterator: Iterator[bytes], tenant: Tenant) -> Iterator[bytes]:
    """Iterate a streaming body with ``tenant`` selected for each chunk."""
    iterator = iter(iterator)
    while True:
        token = _select(tenant)
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        finally:
            _current.reset(token)
        yield chunk


async def _ain_tenant(iterator: AsyncIterator[bytes], tenant: Tenant) -> AsyncIterator[bytes]:
    iterator = aiter(iterator)
    while True:
        token = _select(tenant)
        try:
            chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        finally:
            _current.reset(token)
        yield chunk


def _wrap_streaming(response, tenant: Tenant):
    if getattr(response, "streaming", False):
        content = response.streaming_content
        if getattr(response, "is_async", False):
            response.streaming_content = _ain_tenant(content, tenant)
        else:
            response.streaming_content = _in_tenant(content, tenant)
    return response


class TenantMiddleware:
    """Select the request's tenant (see the module docstring)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    @contextlib.contextmanager
    def _serving(self, request: HttpRequest, tenant: Tenant):
        """Select ``tenant`` (and the path resolver's script prefix) while the view runs."""
        prefix = getattr(request, "tenant_path_prefix", None)
        old_prefix = get_script_prefix() if prefix is not None else None
        if prefix is not None:
            set_script_prefix(old_prefix.rstrip("/") + prefix + "/")
        token = _select(tenant)
        try:
            yield
        finally:
            _current.reset(token)
            if old_prefix is not None:
                set_script_prefix(old_prefix)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        slug = get_resolver()(request)
        request.tenant = None
        if slug is None:
            return self.get_response(request)
        tenant = request.tenant = _lookup(slug)
        with self._serving(request, tenant):
            response = self.get_response(request)
        return _wrap_streaming(response, tenant)

    async def __acall__(self, request: HttpRequest):
        from asgiref.sync import sync_to_async

        slug = get_resolver()(request)
        request.tenant = None
        if slug is None:
            return await self.get_response(request)
        tenant = ready_tenants.peek(slug) or await sync_to_async(_lookup)(slug)
        request.tenant = tenant
        with self._serving(request, tenant):
            response = await self.get_response(request)
        return _wrap_streaming(response, tenant)
