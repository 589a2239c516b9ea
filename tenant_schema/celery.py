"""Celery: a task runs inside the tenant that sent it.

``install(app)``, in the site's ``celery.py`` right after ``Celery(...)``,
connects three Celery signals (once per process) and puts ``TenantTask``
under the app's base task class:

- ``before_task_publish``: a message sent while a tenant is current (inside
  ``tenant_context``, a request, or a task running in a tenant) carries the
  tenant's slug in its headers, under ``TENANT_HEADER``. A header given
  explicitly is kept: ``apply_async(headers={TENANT_HEADER: "acme"})``
  sends to acme from anywhere, ``{TENANT_HEADER: None}`` sends with no
  tenant from inside one. Every way of sending passes here: ``delay``,
  ``apply_async``, ``send_task``, chains, groups, chords, and retries
  (``self.retry()`` re-sends the request's headers).
- ``task_prerun``: the worker reads the tenant's registry row (fresh, so a
  tenant archived while its task waited in the queue is seen) and selects
  it for the task's run, chain and callbacks included. A message without
  the header runs with no tenant.
- ``task_postrun``, which Celery sends after every outcome (success,
  failure, retry, ``Ignore``, ``Reject``): the connections the task opened
  to its tenant in the worker thread are closed, the alias it registered
  is forgotten (``TenantDatabase.released``), and the tenant is deselected.
  A worker serving 10,000 tenants holds no tenant connection between tasks.

A task whose tenant cannot be selected (archived, purged, or a header that
names no tenant) fails with ``TenantNotReady`` or ``TenantNotFound``
without running its body: ``TenantTask.before_start`` raises it, outside
``autoretry_for`` (which wraps the body only), so it is recorded as the
task's failure once and not retried. Signal receivers cannot fail a task
(Celery logs their errors and runs the task), hence the base class; a task
declared with its own ``base=`` gets the tenant selected all the same but
should derive from ``app.Task`` (or ``TenantTask``) to fail cleanly.

``for_each_tenant`` sends a task once per ready tenant, paging through the
registry; ``stagger`` gives each tenant a stable offset in a window, which
``for_each_tenant(..., spread=...)`` uses as the countdown: the beat recipe
of docs/integrations.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from collections.abc import Iterator
from typing import Any

import celery
from celery.canvas import Signature
from celery.signals import before_task_publish, task_postrun, task_prerun
from django.core.exceptions import ImproperlyConfigured

from .context import current_tenant, tenant_context
from .exceptions import TenantNotFound, TenantNotReady
from .registry import get_tenant

__all__ = [
    "FOR_EACH_TENANT_TASK",
    "TENANT_HEADER",
    "TENANT_UID_HEADER",
    "TenantTask",
    "for_each_tenant",
    "install",
    "stagger",
]

#: The message header holding the slug of the tenant a task runs in.
TENANT_HEADER = "tenant_schema_slug"
#: The header holding that tenant's ``uid`` (set with the slug when a task is sent from inside a
#: tenant, or by ``for_each_tenant``): a slug purged and registered again by someone else while the
#: task waited names another tenant, and the task fails instead of running there.
TENANT_UID_HEADER = "tenant_schema_uid"
#: Name of the task ``install`` registers: ``for_each_tenant`` as a task, for beat entries.
FOR_EACH_TENANT_TASK = "tenant_schema.for_each_tenant"
#: Attributes set on a task's request (``task.request``) between prerun and postrun.
_SELECTION = "tenant_schema_selection"  # the ExitStack holding the selected tenant
_PROBLEM = "tenant_schema_problem"  # why the tenant could not be selected

_installed: weakref.WeakSet[celery.Celery] = weakref.WeakSet()


class TenantTask(celery.Task):
    """Base task class: a task whose tenant could not be selected fails before its body runs.

    ``install(app)`` puts it under the app's base class, so every task the
    app creates (``@app.task``, ``@shared_task``) has it. A subclass that
    overrides ``before_start`` must call ``super().before_start(...)``.
    """

    def before_start(self, task_id: str, args: tuple, kwargs: dict) -> None:
        problem = vars(self.request).get(_PROBLEM)
        if problem is not None:
            raise problem
        super().before_start(task_id, args, kwargs)


def install(app: celery.Celery) -> celery.Celery:
    """Make ``app``'s tasks run in the tenant that sent them (module docstring); returns ``app``.

    Call it before the app's tasks are created: right after ``Celery(...)``
    in the site's ``celery.py`` (tasks declared with ``@app.task`` or
    ``@shared_task`` are created when the app is finalized, on first use).
    Calling it again does nothing. It also registers ``FOR_EACH_TENANT_TASK``.
    """
    if app in _installed:
        return app
    base = app.Task
    if not issubclass(base, TenantTask):
        if app.finalized:
            raise ImproperlyConfigured(
                f"tenant_schema.celery.install({app.main or app!r}) was called after the app created its tasks: "
                "call it right after Celery(...) in the site's celery.py, before anything uses the app"
            )
        app.Task = type(base.__name__, (TenantTask, base), {"__module__": base.__module__})
    before_task_publish.connect(_put_tenant_in_headers, dispatch_uid="tenant_schema.celery.publish")
    task_prerun.connect(_select_tenant, dispatch_uid="tenant_schema.celery.prerun")
    task_postrun.connect(_release_tenant, dispatch_uid="tenant_schema.celery.postrun")
    app.task(name=FOR_EACH_TENANT_TASK, bind=True, shared=False)(_for_each_tenant_task)
    _installed.add(app)
    return app


# -- sending ---------------------------------------------------------------------------


def _put_tenant_in_headers(sender=None, headers: dict | None = None, **kwargs: Any) -> None:
    if headers is None or TENANT_HEADER in headers:
        return  # an explicit header (a tenant, or None for none) is the sender's choice
    tenant = current_tenant()
    if tenant is not None:
        headers[TENANT_HEADER] = tenant.slug
        headers[TENANT_UID_HEADER] = tenant.uid.hex


# -- running -----------------------------------------------------------------------------


def _header(request, name: str = TENANT_HEADER) -> Any:
    """Header ``name`` of a task's request (``None`` when absent)."""
    headers = request.headers or {}
    if name in headers:
        return headers[name]
    return getattr(request, name, None)  # message headers are also request attributes


def _ready_tenant(slug: Any, task, uid: Any = None) -> Any:
    """The ready tenant ``slug`` names (and ``uid``, when the sender gave it), read from the registry now."""
    from .models import Tenant

    if not isinstance(slug, str):
        raise TenantNotFound(
            f"task {task.name!r} was not run: its {TENANT_HEADER!r} header must be a tenant slug, not {slug!r}"
        )
    try:
        tenant = get_tenant(slug)
    except TenantNotFound:
        raise TenantNotFound(
            f"task {task.name!r} was not run: it was sent for tenant {slug!r}, which is not registered "
            "(purged, or never registered)"
        ) from None
    if uid is not None and uid != tenant.uid.hex:
        raise TenantNotFound(
            f"task {task.name!r} was not run: it was sent for tenant {slug!r}, which was purged since; "
            "the slug now names another tenant"
        )
    if tenant.status != Tenant.Status.READY:
        raise TenantNotReady(
            f"task {task.name!r} was not run: it was sent for tenant {slug!r}, which is {tenant.status} now "
            "(tasks run in ready tenants only)"
        )
    return tenant


def _select_tenant(sender=None, task=None, **kwargs: Any) -> None:
    """``task_prerun``: select the tenant the message names, for the task's run."""
    request = task.request
    slug = _header(request)
    if slug is None:
        return
    try:
        tenant = _ready_tenant(slug, task, _header(request, TENANT_UID_HEADER))
        with contextlib.ExitStack() as stack:
            stack.enter_context(tenant_context(tenant))
            stack.enter_context(tenant.database.released())
            setattr(request, _SELECTION, stack.pop_all())
    except Exception as exc:  # noqa: BLE001 - raised by TenantTask.before_start, as the task's failure
        setattr(request, _PROBLEM, exc)


def _release_tenant(sender=None, task=None, **kwargs: Any) -> None:
    """``task_postrun``: close the task's connections to its tenant, forget its alias, deselect it."""
    selection = vars(task.request).pop(_SELECTION, None)
    if selection is not None:
        selection.close()


# -- fan-out and staggering ----------------------------------------------------------------


def stagger(slug: str, window: float) -> float:
    """Seconds in ``[0, window)`` for tenant ``slug``: the same on every run, in every process.

    A stable hash of the slug, so tenants spread evenly over the window
    and each tenant's periodic task runs at the same offset every period.
    """
    if isinstance(window, bool) or not isinstance(window, int | float) or not window > 0:
        raise ValueError(f"stagger() window must be a positive number of seconds, not {window!r}")
    if not isinstance(slug, str):
        raise TypeError(f"stagger() takes a tenant slug, not {type(slug).__name__}")
    digest = hashlib.sha256(slug.encode()).digest()
    return int.from_bytes(digest[:8], "big") * window / 2**64


def _ready_slugs(batch_size: int) -> Iterator[tuple[str, str]]:
    """(slug, uid hex) of the ready tenants, read ``batch_size`` rows at a time (keyset pages by primary key)."""
    from .models import Tenant

    last = 0
    while True:
        page = list(
            Tenant.objects.filter(status=Tenant.Status.READY, pk__gt=last)
            .order_by("pk")
            .values_list("pk", "slug", "uid")[:batch_size]
        )
        for _pk, slug, uid in page:
            yield slug, uid.hex
        if len(page) < batch_size:
            return
        last = page[-1][0]


def _signature(task: Any, args: Any, kwargs: Any, app: celery.Celery | None) -> Signature:
    if isinstance(task, Signature):
        return task.clone(args=tuple(args or ()), kwargs=kwargs or {})
    if isinstance(task, celery.Task):
        return task.signature(tuple(args or ()), kwargs or {})
    if isinstance(task, str):
        return (app or celery.current_app).signature(task, args=tuple(args or ()), kwargs=kwargs or {})
    raise TypeError(f"for_each_tenant() takes a task, a signature or a task name, not {type(task).__name__}")


def for_each_tenant(
    task: Any,
    args: Any = (),
    kwargs: dict | None = None,
    *,
    spread: float = 0,
    batch_size: int = 100,
    app: celery.Celery | None = None,
    **options: Any,
) -> int:
    """Send ``task`` once to every ready tenant; the number of messages sent.

    ``task`` is a task, a signature (``args`` and ``kwargs`` are added to
    its own, as its ``clone`` does) or a task name (sent with ``app``, else
    the current app). Each message carries
    its tenant in ``TENANT_HEADER``, whatever tenant is current here.
    Pooled, provisioning, failed and archived tenants get none. The
    registry is read ``batch_size`` rows at a time, so 10,000 tenants are
    never in memory at once. ``spread=N`` delays each tenant's message by
    ``stagger(slug, N)`` seconds, so the tenants' tasks do not all start
    at once; other ``options`` are ``apply_async``'s (``queue``,
    ``countdown``, ``expires``, ...).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"for_each_tenant() batch_size must be a positive integer, not {batch_size!r}")
    if isinstance(spread, bool) or not isinstance(spread, int | float) or spread < 0:
        raise ValueError(f"for_each_tenant() spread must be a number of seconds (0 or more), not {spread!r}")
    sig = _signature(task, args, kwargs, app)
    headers = {**(sig.options.get("headers") or {}), **(options.pop("headers", None) or {})}
    countdown = options.pop("countdown", None) or 0
    sent = 0
    with (app or sig.app).producer_or_acquire(options.pop("producer", None)) as producer:
        for slug, uid in _ready_slugs(batch_size):
            delay = countdown + (stagger(slug, spread) if spread else 0)
            sig.apply_async(
                headers={**headers, TENANT_HEADER: slug, TENANT_UID_HEADER: uid},
                producer=producer,
                **({"countdown": delay} if delay else {}),
                **options,
            )
            sent += 1
    return sent


def _for_each_tenant_task(
    self, task: str, args: Any = (), kwargs: dict | None = None, spread: float = 0, batch_size: int = 100
) -> int:
    """``for_each_tenant`` as a task (``FOR_EACH_TENANT_TASK``): a beat entry fans ``task`` out to every tenant."""
    return for_each_tenant(task, args, kwargs, spread=spread, batch_size=batch_size, app=self.app)
