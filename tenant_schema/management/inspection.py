"""A live look at tenant databases, shared by the commands and the admin.

Operators want what is really on the server, not what this process thinks
it created, so everything here asks the database. A tenant whose database
does not exist (provisioning failed before creating it, or it was dropped
by hand) is reported as such, without trying to connect to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.db import DatabaseError

from ..exceptions import TenantSchemaError
from ..models import Tenant
from ..plugins import get_plugins
from ..registry import missing_registry
from ..schema.ddl import list_tables
from ..schema.indexes import IndexInfo, list_indexes
from ..servers import get_server


def database_exists(tenant: Tenant) -> bool:
    """Whether the tenant's database (or schema) is on its server."""
    server = get_server(tenant.server)
    return bool(
        get_plugins().hook.tenant_schema_database_exists(
            dialect=server.dialect, server=server, name=tenant.database_name
        )
    )


def table_names(tenant: Tenant) -> list[str] | None:
    """The tenant's tables, sorted; ``None`` when its database does not exist."""
    if not database_exists(tenant):
        return None
    return list_tables(tenant.database)


def tables_and_indexes(tenant: Tenant) -> dict[str, list[IndexInfo]] | None:
    """``{table: [IndexInfo, ...]}``; ``None`` when the database does not exist."""
    names = table_names(tenant)
    if names is None:
        return None
    tdb = tenant.database
    return {name: list_indexes(tdb, name) for name in names}


def table_count(tenant: Tenant) -> int | None:
    """How many tables the tenant has, or ``None`` if that cannot be known now.

    Used by listings, where one unreachable server must not hide the others.
    """
    try:
        names = table_names(tenant)
    except (TenantSchemaError, ImproperlyConfigured, DatabaseError, ValueError):
        return None
    return None if names is None else len(names)


def one_line(exc: BaseException) -> str:
    """The first line of an error message (driver errors span several)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@contextmanager
def command_errors() -> Iterator[None]:
    """Turn the errors an operator can cause into a one-line ``CommandError``.

    Bad slugs and names (``ValueError``), unknown tenants and servers
    (``TenantSchemaError``, ``ImproperlyConfigured``) and unreachable
    databases (``DatabaseError``) are the operator's to fix; anything else
    is a bug and keeps its traceback.
    """
    try:
        yield
    except CommandError:
        raise
    except (TenantSchemaError, ImproperlyConfigured, ValueError) as exc:
        raise CommandError(one_line(exc)) from None
    except DatabaseError as exc:
        missing = missing_registry()
        raise CommandError(one_line(missing) if missing else f"database error: {one_line(exc)}") from None


def add_label_option(parser) -> None:
    """``--label NAME=VALUE``, repeatable: what a new tenant's server must carry (tenant_register, tenant_import)."""
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="A label the tenant's server must carry (?labels= in its URL), e.g. region=eu; repeatable.",
    )


def table_lines(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """``header`` and ``rows`` as aligned text columns (``None`` shown as ``-``), for the listing commands."""
    cells = [list(header)] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
