"""The current tenant: one ``ContextVar``, so it is right in threads and async code.

A new thread starts with no tenant; an asyncio task and ``sync_to_async``
inherit the tenant of the code that created them. ``tenant_context`` sets
it for a block (or a function) and restores the outer one afterwards, so
nesting works. The router reads it on every query, through
``current_tenant_db()``, and refuses to guess when none is set.

Only ``ready`` tenants are selected: a tenant that is provisioning, failed
or archived raises ``TenantNotReady`` unless the caller says
``maintenance=True`` (migrations, exports, repairs). ``maintenance=True``
also lets the block write to a tenant in maintenance mode, whose writes are
otherwise refused (``TenantUnavailable``).

As a decorator, ``tenant_context`` holds the tenant for as long as the
function's body runs. For a generator or an async generator that is every
time the body resumes, not the call that merely creates it: the body runs
in its own copy of the caller's context (as an asyncio task does), taken
when it starts, with the tenant selected there; each step (``next``,
``send``, ``throw``, ``close`` and their async twins) runs in that copy,
so the caller's tenant is untouched between yields, and a
``with tenant_context(...)`` block inside the body that spans yields
keeps its tenant.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Awaitable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from asgiref.sync import iscoroutinefunction

from .exceptions import TenantNotReady
from .registry import activate, current_tenant, current_tenant_db, deactivate  # noqa: F401 - re-exported

if TYPE_CHECKING:  # pragma: no cover
    from .models import Tenant

T = TypeVar("T")


def _resolve(tenant_or_slug: Tenant | str, maintenance: bool = False) -> Tenant:
    """The tenant to select; ``TenantNotReady`` unless it is ready or ``maintenance`` is set."""
    from .models import Tenant

    if isinstance(tenant_or_slug, Tenant):
        tenant = tenant_or_slug
    elif isinstance(tenant_or_slug, str):
        from .registry import get_tenant

        tenant = get_tenant(tenant_or_slug)
    else:
        raise TypeError(f"tenant_context() takes a Tenant or a slug, not {type(tenant_or_slug).__name__}")
    if not maintenance and tenant.status != Tenant.Status.READY:
        raise TenantNotReady(
            f"tenant {tenant.slug!r} is {tenant.status}, not ready: tenant_context() does not select it, "
            f"so nothing reads or changes its data by mistake; use "
            f"tenant_context({tenant.slug!r}, maintenance=True) for deliberate maintenance"
        )
    return tenant


def _select(tenant: Tenant, maintenance: bool = False) -> contextvars.Token:
    """Make ``tenant`` current; ``maintenance=True`` also lets its code write to a tenant in maintenance mode."""
    return activate(tenant, maintenance_writes=maintenance)


class tenant_context:
    """Select a tenant for a ``with`` block, an ``async with`` block or a function.

    ``tenant_or_slug`` is a ``Tenant`` row or a slug (looked up once, when the
    block is entered; ``TenantNotFound`` if unknown). The tenant must be
    ``ready`` (a ``Tenant`` row is taken with the status it was loaded
    with); any other status raises ``TenantNotReady`` unless
    ``maintenance=True``. As a decorator it selects the tenant on every
    call, for plain and ``async def`` functions alike, and for generators
    and async generators each time their body resumes (module docstring).
    """

    def __init__(self, tenant_or_slug: Tenant | str, *, maintenance: bool = False) -> None:
        self.target = tenant_or_slug
        self.maintenance = maintenance
        self._tokens: list[contextvars.Token] = []

    def __enter__(self) -> Tenant:
        tenant = _resolve(self.target, self.maintenance)
        self._tokens.append(_select(tenant, self.maintenance))
        return tenant

    def __exit__(self, *exc_info: Any) -> None:
        deactivate(self._tokens.pop())

    async def __aenter__(self) -> Tenant:
        if isinstance(self.target, str):  # the registry lookup is a sync ORM query
            self.target = await _aresolve(self.target, self.maintenance)
        return self.__enter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        self.__exit__(*exc_info)

    def __call__(self, func):
        target, maintenance = self.target, self.maintenance
        if inspect.isasyncgenfunction(func):
            return _async_generator_in_tenant(func, target, maintenance)
        if inspect.isgeneratorfunction(func):
            return _generator_in_tenant(func, target, maintenance)
        if iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args, **kwargs):
                async with tenant_context(target, maintenance=maintenance):
                    return await func(*args, **kwargs)

            return async_wrapper

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with tenant_context(target, maintenance=maintenance) as tenant:
                result = func(*args, **kwargs)
            # A generator made by a function that is not itself a generator
            # function (another decorator in between): its body runs later.
            if inspect.isgenerator(result):
                return _generator_in_tenant(lambda: result, tenant, maintenance)()
            if inspect.isasyncgen(result):
                return _async_generator_in_tenant(lambda: result, tenant, maintenance)()
            return result

        return wrapper


async def _aresolve(tenant_or_slug: Tenant | str, maintenance: bool) -> Tenant:
    if isinstance(tenant_or_slug, str):
        from asgiref.sync import sync_to_async

        return await sync_to_async(_resolve)(tenant_or_slug, maintenance)
    return _resolve(tenant_or_slug, maintenance)


def _generator_in_tenant(func, target, maintenance: bool):
    """``func`` (a generator function) with its body run in ``target``'s own context."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        context = contextvars.copy_context()
        context.run(lambda: _select(_resolve(target, maintenance), maintenance))  # when the body starts
        return (yield from _stepped(func(*args, **kwargs), context))

    return wrapper


def _stepped(steps: Generator[Any, Any, T], context: contextvars.Context) -> Generator[Any, Any, T]:
    """``yield from steps``, with each step of ``steps`` run inside ``context``.

    Used for a generator body and for the awaitables of an async generator
    (whose steps yield to the event loop): whatever the caller sends or
    throws is forwarded, a ``close()`` closes ``steps`` in ``context``.
    """
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            if error is None:
                item = context.run(steps.send, value)
            else:
                item = context.run(steps.throw, error)
        except StopIteration as stop:
            return stop.value
        finally:
            error = None  # no reference cycle through the traceback
        try:
            value = yield item
        except GeneratorExit:
            context.run(steps.close)
            raise
        except BaseException as exc:  # noqa: BLE001 - forwarded into the body, as yield from does
            value, error = None, exc


class _InContext:
    """Await ``awaitable`` with each of its steps run inside ``context``."""

    __slots__ = ("awaitable", "context")

    def __init__(self, awaitable: Awaitable[T], context: contextvars.Context) -> None:
        self.awaitable = awaitable
        self.context = context

    def __await__(self):
        return (yield from _stepped(self.awaitable.__await__(), self.context))


def _async_generator_in_tenant(func, target, maintenance: bool):
    """``func`` (an async generator function) with its body run in ``target``'s own context."""

    @functools.wraps(func)
    async def wrapper(*args, **kwargs):
        tenant = await _aresolve(target, maintenance)  # when the body starts, not before
        context = contextvars.copy_context()
        context.run(_select, tenant, maintenance)
        agen = func(*args, **kwargs)
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                if error is None:
                    item = await _InContext(agen.asend(value), context)
                else:
                    item = await _InContext(agen.athrow(error), context)
            except StopAsyncIteration:
                return
            finally:
                error = None
            try:
                value = yield item
            except GeneratorExit:
                await _InContext(agen.aclose(), context)
                raise
            except BaseException as exc:  # noqa: BLE001 - forwarded into the body
                value, error = None, exc

    return wrapper
