"""Per-tenant database credentials (servers with ``?tenant_roles=true``).

Without them every tenant connection uses the server URL's user, so a raw
query on tenant A's connection can read tenant B (``SELECT ... FROM
b_db.t`` on MySQL, ``b_schema.t`` under PostgreSQL schema isolation). With
``tenant_roles`` each tenant connects as its own role, which owns the
tenant's database (or schema) and nothing else: the database server itself
refuses the cross-tenant query. The URL's user only creates and drops
databases and roles.

A role's password is an HMAC of ``SECRET_KEY`` and the role's name: every
process derives it again, nothing stores it. After ``SECRET_KEY`` changes,
``manage.py tenant_rekey`` gives every role the password derived from the new
key (see ``docs/isolation.md`` for the rotation procedure).

The functions below are no-ops on a server without ``tenant_roles``, so the
tenant life cycle calls them for every tenant.
"""

from __future__ import annotations

import re

from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.utils.crypto import salted_hmac

from .aliases import ALIAS_PREFIX, close_alias_connections, unregister_alias
from .exceptions import TenantSchemaError
from .plugins import get_plugins
from .servers import Server

__all__ = [
    "MissingTenantRole",
    "tenant_login",
    "drop_tenant_role",
    "ensure_tenant_role",
    "rekey_tenant_role",
    "role_name",
    "tenant_password",
]

#: Salt of the password HMAC: changing it changes every tenant's password.
PASSWORD_KEY_SALT = "tenant_schema.credentials.tenant_password"
#: What a role name may contain: safe unquoted in every engine's account
#: syntax, and never able to close a quoted name.
ROLE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


class MissingTenantRole(TenantSchemaError, LookupError):
    """The tenant's role does not exist on its server (``ensure_tenant_role`` creates it)."""


def role_name(server: Server, database_name: str) -> str:
    """The role the tenant whose database (or schema) is ``database_name`` connects as.

    Asked of the ``tenant_schema_role_name`` hook (default
    ``<database>_owner``, hashed down to the engine's user-name limit) and
    checked: a plain name within the limit, never the server URL's own user.
    """
    dialect = server.dialect
    role = get_plugins().hook.tenant_schema_role_name(dialect=dialect, server=server, database_name=database_name)
    if not isinstance(role, str) or not ROLE_NAME_RE.fullmatch(role):
        raise ImproperlyConfigured(
            f"tenant server {server.key!r}: role name {role!r} for {database_name!r} must be letters, digits, "
            "'_' and '.', starting with a letter or '_'"
        )
    if len(role.encode()) > dialect.max_role_name_length:
        raise ImproperlyConfigured(
            f"tenant server {server.key!r}: role name {role!r} is longer than the {dialect.name} dialect's "
            f"{dialect.max_role_name_length} bytes"
        )
    if role.lower() == str(server.settings.get("USER") or "").lower():
        raise ImproperlyConfigured(
            f"tenant server {server.key!r}: the role of {database_name!r} would be {role!r}, the server URL's "
            "own user; refusing to hand it to a tenant"
        )
    return role


def tenant_password(role: str, *, secret_key: str | None = None) -> str:
    """The password of ``role``: an HMAC-SHA256 of ``SECRET_KEY`` (or ``secret_key``), 64 hex digits.

    Deterministic, so every process derives the same one; never stored.
    """
    return salted_hmac(PASSWORD_KEY_SALT, role, secret=secret_key, algorithm="sha256").hexdigest()


def tenant_login(server: Server, database_name: str) -> tuple[str, str]:
    """``(USER, PASSWORD)`` a tenant's alias connects with on a ``tenant_roles`` server."""
    role = role_name(server, database_name)
    return role, tenant_password(role)


def ensure_tenant_role(server: Server, database_name: str) -> None:
    """Create the tenant's role if missing, set its password, give it the database (or schema).

    Idempotent. Runs on the server's own connection, after the tenant's
    database (or schema) exists and before any table is created in it: from
    then on the tenant's tables are created by, and belong to, the role.
    Nothing happens on a server without ``tenant_roles``.
    """
    if not server.tenant_roles:
        return
    role = role_name(server, database_name)
    hook = get_plugins().hook
    hook.tenant_schema_create_role(dialect=server.dialect, server=server, role=role, password=tenant_password(role))
    hook.tenant_schema_grant_role(dialect=server.dialect, server=server, role=role, database_name=database_name)


def rekey_tenant_role(server: Server, database_name: str) -> None:
    """Give the tenant's role the password derived from the current ``SECRET_KEY``.

    This process's connections of that role are closed, so that they
    reconnect with the new password. ``MissingTenantRole`` when the role
    does not exist. Nothing happens on a server without ``tenant_roles``.
    """
    if not server.tenant_roles:
        return
    role = role_name(server, database_name)
    done = get_plugins().hook.tenant_schema_set_role_password(
        dialect=server.dialect, server=server, role=role, password=tenant_password(role)
    )
    if not done:
        raise MissingTenantRole(
            f"tenant role {role!r} does not exist on server {server.key!r}; ensure_tenant_role() creates it"
        )
    forget_role_connections(role)


def drop_tenant_role(server: Server, database_name: str) -> None:
    """Drop the tenant's role, once its database (or schema) has been dropped.

    Idempotent. A database that still exists is an error (its role would be
    gone from under a tenant that still has data). Nothing happens on a
    server without ``tenant_roles``.
    """
    if not server.tenant_roles:
        return
    role = role_name(server, database_name)
    hook = get_plugins().hook
    if hook.tenant_schema_database_exists(dialect=server.dialect, server=server, name=database_name):
        raise TenantSchemaError(
            f"cannot drop role {role!r} on server {server.key!r}: database {database_name!r} still exists; "
            "drop the tenant's database first"
        )
    forget_role_connections(role)
    hook.tenant_schema_drop_role(dialect=server.dialect, server=server, role=role, database_name=database_name)


def forget_role_connections(role: str) -> None:
    """Close this process's tenant connections made as ``role`` and forget their aliases.

    The next use registers the alias again, with the password derived now.
    """
    for alias, settings in list(connections.settings.items()):
        if alias.startswith(ALIAS_PREFIX) and settings.get("USER") == role:
            close_alias_connections(alias)
            unregister_alias(alias)
