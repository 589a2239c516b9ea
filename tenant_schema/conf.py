"""Reading ``settings.TENANT_SCHEMA`` with its defaults, in one place."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # key -> dj-database-url style URL; the scheme names the dialect plugin.
    "SERVERS": {"default": "sqlite:///var/tenants/"},
    "DEFAULT_SERVER": "default",
    # Prefix of every tenant database / schema name.
    "DATABASE_PREFIX": "tenant_",
    # Load third-party plugins from the ``tenant_schema`` entry-point group.
    "PLUGINS_AUTOLOAD": True,
    # Dotted paths of extra plugin modules to register explicitly.
    "PLUGINS": [],
    # Apps whose models live in each tenant's database (issue 3).
    "TENANT_APPS": [],
    # Apps stated to live in ``default`` (every app not in TENANT_APPS does);
    # ``manage.py check`` flags an app listed in both.
    "SHARED_APPS": [],
    # Dataclass tables every new tenant gets: [("pkg.mod.Class", "table", "pk"), ...]
    "TENANT_TABLES": [],
    # Most connections tenant-schema holds open per process (tenants' and the
    # servers' own), across threads and async tasks. Low on purpose: every
    # process of the site gets this many, and PostgreSQL allows 100 in all by
    # default (MySQL 151); keep processes x cap + the site's own connections
    # below the server's max_connections (docs/configuration.md).
    "MAX_OPEN_CONNECTIONS": 20,
    # Seconds a thread waits for a free connection slot (other threads close
    # idle ones at their next tenant query or request end) before failing
    # with ConnectionLimitReached. 0 fails at once.
    "CONNECTION_WAIT_TIMEOUT": 5,
    # Most tenant aliases (and bindings) kept per process; the least recently
    # used idle ones are forgotten past it. None: 10 x MAX_OPEN_CONNECTIONS.
    "MAX_ALIASES": None,
    # New tenant databases are cloned from a per-server template at the
    # current migration plan where the dialect can (PostgreSQL database
    # isolation, SQLite); False always creates them with DDL.
    "CLONE_TEMPLATES": True,
    # How middleware finds the tenant: "subdomain", "header", "path" or a dotted path.
    "RESOLVER": "subdomain",
    "HEADER": "X-Tenant",
    # Paths the "path" resolver serves without a tenant: the path itself and
    # everything under it ("/admin/" covers /admin, /admin/ and /admin/login/).
    "PUBLIC_PATHS": ["/admin/", "/static/", "/media/"],
    # First host labels the "subdomain" resolver does not read as a slug.
    "EXCLUDED_SUBDOMAINS": ["www"],
    # How long the middleware trusts a ready tenant's registry row before
    # looking it up again. Changes made in this process (archive, purge,
    # save) take effect at once; other processes see them within this many
    # seconds. 0 looks the tenant up on every request.
    "ROUTING_CACHE_SECONDS": 5,
    # Seconds a client is told to wait (Retry-After) when TenantMiddleware
    # answers a write to a tenant in maintenance mode with a 503.
    "MAINTENANCE_RETRY_AFTER": 120,
    # Which server a new tenant goes to when register_tenant is given none:
    # None (DEFAULT_SERVER), "fewest", "weighted" or a dotted path (tenant_schema.placement).
    "PLACEMENT": None,
}

AUTOLOAD_ENV = "TENANT_SCHEMA_DISABLE_PLUGIN_AUTOLOAD"


def get(key: str) -> Any:
    """One ``TENANT_SCHEMA`` setting, or its default."""
    configured = getattr(settings, "TENANT_SCHEMA", {}) if settings.configured else {}
    if key in configured:
        return configured[key]
    return DEFAULTS[key]


def plugins_autoload() -> bool:
    """Third-party autoload is off when the env var is set or the setting is false."""
    if os.environ.get(AUTOLOAD_ENV, "").strip() not in ("", "0"):
        return False
    return bool(get("PLUGINS_AUTOLOAD"))
