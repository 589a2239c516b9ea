"""The current tenant on every log record: ``%(tenant)s`` in a format.

``TenantContextFilter`` sets ``record.tenant`` to the slug of the tenant
selected where the record was made, or ``-`` when none is. It reads the
current tenant's ``ContextVar`` only, never the database: it runs on every
log line.

Attach it to handlers (``"filters": ["tenant"]`` in a handler of
``LOGGING``), not to loggers: a logger's filters only see records logged
on that logger itself, not those its children propagate to it. A record
that already has a ``tenant`` (from ``extra={"tenant": ...}``, or from a
filter on a ``QueueHandler`` in the thread that logged it) keeps it, so a
``QueueListener``'s thread, where no tenant is selected, does not overwrite it.
"""

from __future__ import annotations

import logging

from .registry import current_tenant

__all__ = ["NO_TENANT", "TenantContextFilter"]

#: ``record.tenant`` when no tenant is selected.
NO_TENANT = "-"


class TenantContextFilter(logging.Filter):
    """Set ``record.tenant`` to the current tenant's slug (``-`` for none).

    It drops no record, unless given a logger ``name`` (as ``logging.Filter``
    is): then only the records of that logger and its children pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "tenant"):
            tenant = current_tenant()
            record.tenant = NO_TENANT if tenant is None else tenant.slug
        return super().filter(record)
