"""``Table``: one tenant table, as application code reads and writes it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models

if TYPE_CHECKING:  # pragma: no cover
    from .databases import TenantDatabase


class Table:
    """A table of one tenant, bound to the tenant's alias.

    ``row_type`` is what rows come back as: the registered dataclass, the
    Django model, or ``dict`` for a table opened by name.
    """

    def __init__(
        self,
        tenant_db: TenantDatabase,
        model: type[models.Model],
        name: str,
        row_type: Any = dict,
        source: Any = None,
    ) -> None:
        self.tenant_db = tenant_db
        self.model = model
        self.name = name
        self.row_type = row_type
        self.source = source

    def __repr__(self) -> str:
        return f"<Table {self.name!r} of tenant {self.tenant_db.tenant_id!r}>"

    @property
    def columns(self) -> list[str]:
        """Column names, in table order."""
        return [f.column for f in self.model._meta.concrete_fields]
