"""``TenantWebsocketMiddleware``: a websocket is served inside the tenant of its handshake.

Django Channels (the ``[channels]`` extra) wraps the websocket routes of
``asgi.py``::

    application = ProtocolTypeRouter({
        "http": get_asgi_application(),  # TenantMiddleware in MIDDLEWARE
        "websocket": TenantWebsocketMiddleware(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    })

The tenant is found once, when the socket connects, exactly as
``TenantMiddleware`` finds a request's: the handshake (an HTTP GET) becomes
Django's own ``ASGIRequest`` and goes through ``TENANT_SCHEMA["RESOLVER"]``
(``subdomain``, ``header``, ``path`` or a site's own resolver), its
``ALLOWED_HOSTS`` check and the ready-tenant cache. Then:

- a ready tenant is ``scope["tenant"]`` and the current tenant for as long
  as the socket lives: every handler of the consumer, sync or async, runs in
  it. Sync handlers run through ``database_sync_to_async`` and Django's
  async ORM through ``sync_to_async``: both copy the task's context into
  their thread, so the tenant goes with it. Channels closes the thread's
  obsolete connections (``close_old_connections``) around sync handlers and
  before each async one and after ``disconnect``: tenant aliases are
  ordinary Django aliases, so theirs are closed too (with the default
  ``CONN_MAX_AGE=0``, after every handler). When the socket ends the
  tenant is released;
- the ``path`` resolver's ``/<slug>`` prefix is moved from the path into
  ``scope["root_path"]``, so ``URLRouter`` routes ``/acme/ws/chat/`` as
  ``ws/chat/``, the same routes for every resolver;
- no slug (``example.com`` itself, a ``PUBLIC_PATHS`` path): ``scope["tenant"]``
  is ``None`` and no tenant is selected; tenant models fail closed;
- a slug that is invalid, unknown or not ready: the handshake is refused
  with close code ``UNKNOWN_TENANT`` (4404), the consumer never runs;
- a ``Host`` that ``ALLOWED_HOSTS`` refuses: refused with ``BAD_REQUEST``
  (4400), logged to ``django.security.DisallowedHost`` as Django does,
  whichever resolver is configured.

While the socket lives, each message it receives first checks that its
tenant is still the ready tenant of that slug (the ready-tenant cache, so
no query while the row is cached): a tenant archived meanwhile, or purged
and its slug registered again by someone else, closes the socket with
``UNKNOWN_TENANT`` instead of handing the message to the consumer.

Channels groups are shared by every socket of the channel layer: a group
named ``"chat"`` would join every tenant's sockets. ``tenant_group(name)``
gives the current tenant its own group of that name.

A refusal is a ``websocket.close`` before ``websocket.accept``: servers
answer the handshake with HTTP 403 (the code is what the application sent,
seen by ``WebsocketCommunicator`` and in logs, not by a browser). Other
scope types (``http``, ``lifespan``) pass through untouched: HTTP is
``TenantMiddleware``'s.
"""

from __future__ import annotations

import io
import logging
import re
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpRequest

from .exceptions import NoTenantSelected
from .middleware import resolve_tenant
from .registry import activate, current_tenant, deactivate, ready_tenants

if TYPE_CHECKING:  # pragma: no cover
    from .models import Tenant

__all__ = ["BAD_REQUEST", "UNKNOWN_TENANT", "TenantWebsocketMiddleware", "request_for_scope", "tenant_group"]

#: Close code of a handshake naming an invalid, unknown or not-ready tenant.
UNKNOWN_TENANT = 4404
#: Close code of a handshake Django refuses (a ``Host`` not in ``ALLOWED_HOSTS``).
BAD_REQUEST = 4400

_SCHEMES = {"ws": "http", "wss": "https"}
#: Channels' own rule for group names (``channels.layers.BaseChannelLayer``): ASCII letters,
#: digits, hyphens, underscores and periods, shorter than 100 characters.
_GROUP_RE = re.compile(r"[a-zA-Z\d\-_.]+")
_GROUP_MAX = 99


def tenant_group(name: str) -> str:
    """The current tenant's own Channels group called ``name``: ``tenant-<uid>.<name>``.

    Use it wherever a consumer names a group (``group_add``, ``group_send``,
    ``group_discard``), so a ``"chat"`` group of one tenant never reaches
    another tenant's sockets. The tenant's ``uid`` (not its slug, which can
    be registered again after a purge) keeps the group its own.
    ``NoTenantSelected`` outside a tenant; ``ValueError`` for a name Channels
    would refuse.
    """
    tenant = current_tenant()
    if tenant is None:
        raise NoTenantSelected("tenant_group() needs a current tenant: call it in a consumer of a tenant's socket")
    prefix = f"tenant-{tenant.uid.hex}."
    longest = _GROUP_MAX - len(prefix)
    if not isinstance(name, str) or not _GROUP_RE.fullmatch(name) or len(name) > longest:
        raise ValueError(
            f"invalid group name {name!r}: use 1-{longest} ASCII letters, digits, hyphens, underscores "
            "and periods (the tenant's prefix takes the rest of Channels' 99)"
        )
    return prefix + name


def request_for_scope(scope: dict[str, Any]) -> HttpRequest:
    """The websocket handshake of ``scope`` as the ``HttpRequest`` resolvers read.

    Django's own ``ASGIRequest`` of a GET with no body: headers in ``META``
    (``HTTP_HOST``, ``HTTP_X_TENANT``), ``path``/``path_info``, ``GET`` from
    the query string, ``get_host()`` checked against ``ALLOWED_HOSTS``, and
    ``ws``/``wss`` read as ``http``/``https``.
    """
    scheme = scope.get("scheme", "ws")
    handshake = {**scope, "method": "GET", "scheme": _SCHEMES.get(scheme, scheme)}
    return ASGIRequest(handshake, io.BytesIO())


class TenantWebsocketMiddleware:
    """Serve each websocket inside the tenant its handshake names (see the module docstring)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        request = request_for_scope(scope)
        try:
            tenant: Tenant | None = await database_sync_to_async(_resolve)(request)
        except Http404:
            return await _refuse(receive, send, UNKNOWN_TENANT)
        except SuspiciousOperation as exc:
            logging.getLogger(f"django.security.{type(exc).__name__}").error(str(exc))
            return await _refuse(receive, send, BAD_REQUEST)
        scope = {**scope, "tenant": tenant}
        prefix = getattr(request, "tenant_path_prefix", None)  # the path resolver's /<slug>
        if prefix is not None:
            scope["root_path"] = scope.get("root_path", "") + prefix
        if tenant is None:
            return await self.inner(scope, receive, send)
        token = activate(tenant)
        try:
            return await self.inner(scope, _checking(tenant, receive, send), send)
        finally:
            deactivate(token)


def _resolve(request: HttpRequest) -> Tenant | None:
    request.get_host()  # ALLOWED_HOSTS, whichever resolver reads the tenant (DisallowedHost otherwise)
    return resolve_tenant(request)


def _checking(tenant: Tenant, receive, send):
    """``receive`` that closes the socket instead of delivering a message once ``tenant`` is gone."""

    async def checked():
        message = await receive()
        if message["type"] == "websocket.receive" and not await _still_served(tenant):
            await send({"type": "websocket.close", "code": UNKNOWN_TENANT})
            return {"type": "websocket.disconnect", "code": UNKNOWN_TENANT}
        return message

    return checked


async def _still_served(tenant: Tenant) -> bool:
    """Whether the slug still names this tenant, ready (a cached row costs no query and no copy)."""
    uid = ready_tenants.cached_uid(tenant.slug)
    if uid is None:
        row = await database_sync_to_async(ready_tenants.get)(tenant.slug)
        uid = row.uid if row is not None else None
    return uid == tenant.uid


async def _refuse(receive, send, code: int) -> None:
    """Refuse the handshake: close before accepting (servers answer HTTP 403)."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": code})
