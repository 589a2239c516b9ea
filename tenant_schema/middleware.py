"""``TenantMiddleware``: find the request's tenant and select it for the whole response.

The tenant comes from ``TENANT_SCHEMA["RESOLVER"]``:

- ``"subdomain"`` (default): ``acme.example.com`` -> ``acme`` (the first
  label of a host with three or more labels, or of ``acme.localhost``);
  never an IP address (``127.0.0.1``, ``[::1]``) or a label of
  ``TENANT_SCHEMA["EXCLUDED_SUBDOMAINS"]`` (``www``);
- ``"header"``: the ``TENANT_SCHEMA["HEADER"]`` request header (``X-Tenant``);
- ``"path"``: ``/acme/rest/of/path`` -> ``acme``; the prefix is removed
  from ``request.path_info`` (so the URLconf sees ``/rest/of/path``) and
  added to the script prefix (so ``reverse()`` includes it); paths under
  ``TENANT_SCHEMA["PUBLIC_PATHS"]`` (``/admin/``, ``/static/``, ``/media/``)
  have no slug;
- a dotted path to your own ``resolver(request) -> slug | None``.

No slug (``example.com`` itself) means no tenant: shared pages work, tenant
models fail closed, and a view that queries them anyway is a 404 (as for a
slug that names no tenant), not a 500. A slug that is unknown, invalid or
not ``ready`` is a 404, never another tenant's data. The tenant is
``request.tenant`` and the current tenant while the view runs and while a
streaming body is iterated. Works under WSGI and ASGI.

A tenant in maintenance mode (``Tenant.maintenance``) is served for reads:
``GET``, ``HEAD``, ``OPTIONS`` and ``TRACE`` reach the view; any other
method is answered with a 503 and a ``Retry-After`` header
(``TENANT_SCHEMA["MAINTENANCE_RETRY_AFTER"]`` seconds) before the view runs,
and a view whose write raises ``TenantUnavailable`` gets the same 503.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
from collections.abc import AsyncIterator, Callable, Iterator

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import get_script_prefix, set_script_prefix
from django.utils.cache import add_never_cache_headers
from django.utils.module_loading import import_string

from . import conf, django_private
from .exceptions import NoTenantSelected, TenantUnavailable
from .models import Tenant
from .registry import activate, deactivate, normalize_slug, ready_tenants

RESOLVERS = ("subdomain", "header", "path")
#: Methods a tenant in maintenance mode still serves (RFC 9110's safe methods).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
MAINTENANCE_BODY = "Down for maintenance: changes cannot be saved right now. Please try again later.\n"


def from_subdomain(request: HttpRequest) -> str | None:
    """The first label of the host; ``None`` for an IP address or an ``EXCLUDED_SUBDOMAINS`` label."""
    host, _port = django_private.split_host(request.get_host())  # lower-cased, trailing dot removed
    if not host or host.startswith("[") or _is_ip_address(host):
        return None
    labels = host.split(".")
    if len(labels) >= 3 or (len(labels) == 2 and labels[1] == "localhost"):
        return None if labels[0] in excluded_subdomains() else labels[0]
    return None


@functools.lru_cache(maxsize=1024)
def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def excluded_subdomains() -> frozenset[str]:
    """``TENANT_SCHEMA["EXCLUDED_SUBDOMAINS"]``, lower-cased."""
    return _lowered(tuple(_as_list(conf.get("EXCLUDED_SUBDOMAINS"))))


@functools.lru_cache(maxsize=8)
def _lowered(labels: tuple[str, ...]) -> frozenset[str]:
    return frozenset(str(label).lower() for label in labels)


def _as_list(value) -> list:
    return [value] if isinstance(value, str) else list(value or ())


def is_public_path(path: str) -> bool:
    """Whether ``path`` is (under) one of ``TENANT_SCHEMA["PUBLIC_PATHS"]``; for your own resolvers too."""
    for prefix in _public_prefixes(tuple(_as_list(conf.get("PUBLIC_PATHS")))):
        if path == prefix or (prefix != "/" and path.startswith(prefix + "/")):
            return True
    return False


@functools.lru_cache(maxsize=8)
def _public_prefixes(paths: tuple[str, ...]) -> tuple[str, ...]:
    return tuple("/" + str(path).strip("/") for path in paths)


def from_header(request: HttpRequest) -> str | None:
    return request.headers.get(conf.get("HEADER")) or None


def from_path(request: HttpRequest) -> str | None:
    """The first path segment, unless the path is one of ``PUBLIC_PATHS``."""
    if is_public_path(request.path_info):
        return None
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
            f'TENANT_SCHEMA["RESOLVER"] must be one of {", ".join(RESOLVERS)} or a dotted path to a function: {exc}'
        ) from None


def get_resolver() -> Callable[[HttpRequest], str | None]:
    return _resolver(conf.get("RESOLVER"))


def _lookup(slug: str | None) -> Tenant | None:
    """The ready tenant ``slug``; ``Http404`` for an invalid, unknown or not-ready one."""
    try:
        slug = normalize_slug(slug)
    except ValueError:
        raise Http404("unknown tenant") from None
    tenant = ready_tenants.get(slug)
    if tenant is None:
        raise Http404("unknown tenant")
    return tenant


def resolve_tenant(request: HttpRequest) -> Tenant | None:
    """The ready tenant ``request`` names through ``TENANT_SCHEMA["RESOLVER"]``; ``None`` if it names none.

    ``Http404`` for a slug that is invalid, unknown or not ready, as
    ``TenantMiddleware`` answers. For other entry points that must find the
    tenant exactly as HTTP requests do (``tenant_schema.channels``). It may
    query the registry (and a site's own resolver may too): async code calls
    it in a thread.
    """
    slug = get_resolver()(request)
    return None if slug is None else _lookup(slug)


def _select(tenant: Tenant):
    return activate(tenant)


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
            deactivate(token)
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
            deactivate(token)
        yield chunk


def _wrap_streaming(response, tenant: Tenant):
    if getattr(response, "streaming", False):
        content = response.streaming_content
        if getattr(response, "is_async", False):
            response.streaming_content = _ain_tenant(content, tenant)
        else:
            response.streaming_content = _in_tenant(content, tenant)
    return response


def retry_after() -> int:
    """``TENANT_SCHEMA["MAINTENANCE_RETRY_AFTER"]``: whole seconds, 0 or more."""
    value = conf.get("MAINTENANCE_RETRY_AFTER")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ImproperlyConfigured(
            f'TENANT_SCHEMA["MAINTENANCE_RETRY_AFTER"] must be a whole number of seconds (0 or more), not {value!r}'
        )
    return value


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
            deactivate(token)
            if old_prefix is not None:
                set_script_prefix(old_prefix)

    def maintenance_response(self, request: HttpRequest, slug: str) -> HttpResponse:
        """The 503 for a write to tenant ``slug`` in maintenance mode; override it for your own page."""
        response = HttpResponse(MAINTENANCE_BODY, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(retry_after())
        add_never_cache_headers(response)
        return response

    def _refused(self, request: HttpRequest, tenant: Tenant) -> HttpResponse | None:
        """The 503 for an unsafe request to a tenant in maintenance mode, before its view runs."""
        if tenant.maintenance and request.method not in SAFE_METHODS:
            return self.maintenance_response(request, tenant.slug)
        return None

    def process_exception(self, request: HttpRequest, exception: Exception):
        """A view's write refused in maintenance mode is a 503; a view run with no tenant a 404."""
        if isinstance(exception, TenantUnavailable):
            return self.maintenance_response(request, exception.slug)
        if isinstance(exception, NoTenantSelected):
            # Raised here, Django answers it as it answers an unknown tenant (the site's handler404).
            raise Http404("no tenant selected") from None
        return None

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        slug = get_resolver()(request)
        request.tenant = None
        if slug is None:
            return self.get_response(request)
        tenant = request.tenant = _lookup(slug)
        refused = self._refused(request, tenant)
        if refused is not None:
            return refused
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
        refused = self._refused(request, tenant)
        if refused is not None:
            return refused
        with self._serving(request, tenant):
            response = await self.get_response(request)
        return _wrap_streaming(response, tenant)
