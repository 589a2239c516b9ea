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
  (4400), logged to ``django.security.DisallowedHost`` as Django does.

A refusal is a ``websocket.close`` before ``websocket.accept``: servers
answer the handshake with HTTP 403 (the code is what the application sent,
seen by ``WebsocketCommunicator`` and in logs, not by a browser). Other
scope types (``http``, ``lifespan``) pass through untouched: HTTP is
``TenantMiddleware``'s.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpRequest

from .middleware import resolve_tenant
from .registry import activate, deactivate

if TYPE_CHECKING:  # pragma: no cover
    from .models import Tenant

__all__ = ["BAD_REQUEST", "UNKNOWN_TENANT", "TenantWebsocketMiddleware", "request_for_scope"]

#: Close code of a handshake naming an invalid, unknown or not-ready tenant.
UNKNOWN_TENANT = 4404
#: Close code of a handshake Django refuses (a ``Host`` not in ``ALLOWED_HOSTS``).
BAD_REQUEST = 4400

_SCHEMES = {"ws": "http", "wss": "https"}


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
            tenant: Tenant | None = await database_sync_to_async(resolve_tenant)(request)
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
            return await self.inner(scope, receive, send)
        finally:
            deactivate(token)


async def _refuse(receive, send, code: int) -> None:
    """Refuse the handshake: close before accepting (servers answer HTTP 403)."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": code})
