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
models fail closed. A slug that is unknown, invalid or not ``ready`` is a
404, never another tenant's data. The tenant is ``request.tenant`` and the
current tenant while the view runs and while a streaming body is iterated.
Works under WSGI and ASGI.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
from collections.abc import AsyncIterator, Callable, Iterator

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from django.http import Http404, HttpRequest
from django.http.request import split_domain_port
from django.urls import get_script_prefix, set_script_prefix
from django.utils.module_loading import import_string

from . import conf
from .models import Tenant
from .registry import activate, deactivate, normalize_slug, ready_tenants

RESOLVERS = ("subdomain", "header", "path")


def from_subdomain(request: HttpRequest) -> str | None:
    """The first label of the host; ``None`` for an IP address or an ``EXCLUDED_SUBDOMAINS`` label."""
    host, _port = split_domain_port(request.get_host())  # lower-cased, trailing dot removed
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
