"""The current tenant: one ``ContextVar``, so it is right in threads and async code.

A new thread starts with no tenant; an asyncio task and ``sync_to_async``
inherit the tenant of the code that created them. ``tenant_context`` sets
it for a block (or a function) and restores the outer one afterwards, so
nesting works. The router reads it on every query, through
``current_tenant_db()``, and refuses to guess when none is set.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from typing import TYPE_CHECKING, Any

from .exceptions import NoTenantSelected

if TYPE_CHECKING:  # pragma: no cover
    from .databases import TenantDatabase
    from .models import Tenant

_current: contextvars.ContextVar[tuple[Tenant, TenantDatabase] | None] = contextvars.ContextVar(
    "tenant_schema_current_tenant", default=None
)


def current_tenant() -> Tenant | None:
    """The ``Tenant`` selected in this thread / async context, or ``None``."""
    active = _current.get()
    return active[0] if active is not None else None


def current_tenant_db() -> TenantDatabase:
    """The current tenant's ``TenantDatabase``; ``NoTenantSelected`` if there is none."""
    active = _current.get()
    if active is None:
        raise NoTenantSelected(
            "no tenant selected: query tenant models inside `with tenant_context(tenant):` "
            "(TenantMiddleware sets it per request)"
        )
    return active[1]


def _resolve(tenant_or_slug: Tenant | str) -> Tenant:
    from .models import Tenant

    if isinstance(tenant_or_slug, Tenant):
        return tenant_or_slug
    if isinstance(tenant_or_slug, str):
        from .provisioning import get_tenant

        return get_tenant(tenant_or_slug)
    raise TypeError(f"tenant_context() takes a Tenant or a slug, not {type(tenant_or_slug).__name__}")


class tenant_context:  # noqa: N801 - used like contextlib's lower-case helpers
    """Select a tenant for a ``with`` block, an ``async with`` block or a function.

    ``tenant_or_slug`` is a ``Tenant`` row or a slug (looked up once, when the
    block is entered; ``TenantNotFound`` if unknown). As a decorator it selects
    the tenant on every call, for plain and ``async def`` functions alike.
    """

    def __init__(self, tenant_or_slug: Tenant | str) -> None:
        self.target = tenant_or_slug
        self._tokens: list[contextvars.Token] = []

    def __enter__(self) -> Tenant:
        tenant = _resolve(self.target)
        self._tokens.append(_current.set((tenant, tenant.database)))
        return tenant

    def __exit__(self, *exc_info: Any) -> None:
        _current.reset(self._tokens.pop())

    async def __aenter__(self) -> Tenant:
        from asgiref.sync import sync_to_async

        if isinstance(self.target, str):  # the registry lookup is a sync ORM query
            self.target = await sync_to_async(_resolve)(self.target)
        return self.__enter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        self.__exit__(*exc_info)

    def __call__(self, func):
        target = self.target
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*args, **kwargs):
                async with tenant_context(target):
                    return await func(*args, **kwargs)

            return async_wrapper

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with tenant_context(target):
                return func(*args, **kwargs)

        return wrapper
