"""Database servers: ``TENANT_SCHEMA["SERVERS"]`` URLs turned into Django settings.

A server is where tenant databases are created. Its URL is parsed once (with
``dj-database-url``, through the ``tenant_schema_server_settings`` hook); its
scheme selects the dialect plugin. Options that are ours, not the driver's,
are taken out of the query string:

- ``isolation=database`` (default) or ``isolation=schema`` (PostgreSQL and
  CockroachDB: one schema per tenant inside the URL's database);
- ``conn_max_age=N`` and ``conn_health_checks=true`` for tenant aliases
  (tenant aliases default to ``CONN_MAX_AGE=0``).
"""

from __future__ import annotations

import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import connections

from . import conf
from .dialects import ISOLATION_DATABASE, ISOLATION_SCHEMA, Dialect
from .exceptions import UnknownServer
from .plugins import get_plugins

OUR_URL_OPTIONS = ("isolation", "conn_max_age", "conn_health_checks")


@dataclass(frozen=True)
class Server:
    """One configured server: its dialect and the settings to reach it."""

    key: str
    url: str = field(repr=False)
    dialect: Dialect
    settings: dict[str, Any] = field(repr=False, compare=False)
    isolation: str = ISOLATION_DATABASE

    @property
    def alias(self) -> str:
        """The connection alias used for server-level work (CREATE DATABASE)."""
        return f"tenant_schema:server:{self.key}"

    def connection(self):
        """The server-level connection, registered on first use."""
        from .databases import register_alias

        register_alias(self.alias, self.settings)
        return connections[self.alias]

    @property
    def path(self) -> Path:
        """Directory of a file-based server (SQLite)."""
        return Path(self.settings["NAME"])

    def safe_url(self) -> str:
        """The URL with any password masked, for display."""
        parts = urllib.parse.urlsplit(self.url)
        if not parts.password:
            return self.url  # urlunsplit would drop a slash of sqlite:////abs/path
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


_cache: dict[tuple[str, str], Server] = {}
_lock = threading.Lock()


def server_urls() -> dict[str, str]:
    servers = conf.get("SERVERS")
    if not isinstance(servers, dict) or not servers:
        raise ImproperlyConfigured('TENANT_SCHEMA["SERVERS"] must be a non-empty dict of key -> URL')
    return servers


def get_server(key: str | None = None) -> Server:
    """The server ``key`` (or ``TENANT_SCHEMA["DEFAULT_SERVER"]``)."""
    key = key or conf.get("DEFAULT_SERVER")
    urls = server_urls()
    if key not in urls:
        raise UnknownServer(f"unknown tenant server {key!r}; configured servers: {', '.join(sorted(urls))}")
    url = urls[key]
    cached = _cache.get((key, url))
    if cached is not None:
        return cached
    with _lock:
        server = _cache.get((key, url)) or parse_server(key, url)
        _cache[(key, url)] = server
    return server


def parse_server(key: str, url: str) -> Server:
    """Parse one server URL; raises ``ImproperlyConfigured`` naming the server."""
    if not isinstance(url, str) or "://" not in url:
        raise ImproperlyConfigured(f"tenant server {key!r}: {url!r} is not a URL like postgres://user@host:5432/")
    plugins = get_plugins()
    scheme = url.split("://", 1)[0]
    dialect = plugins.dialect_for_scheme(scheme)
    try:
        parsed = plugins.hook.tenant_schema_server_settings(dialect=dialect, url=url)
    except ValueError as exc:
        raise ImproperlyConfigured(f"tenant server {key!r}: cannot parse its URL: {exc}") from None
    options = parsed.setdefault("OPTIONS", {})
    isolation = str(options.pop("isolation", ISOLATION_DATABASE))
    if isolation not in (ISOLATION_DATABASE, ISOLATION_SCHEMA):
        raise ImproperlyConfigured(f"tenant server {key!r}: isolation must be 'database' or 'schema', not {isolation!r}")
    if isolation == ISOLATION_SCHEMA and not dialect.supports_schema_isolation:
        raise ImproperlyConfigured(f"tenant server {key!r}: the {dialect.name} dialect cannot isolate tenants by schema")
    parsed["CONN_MAX_AGE"] = _conn_max_age(key, options.pop("conn_max_age", 0))
    health = options.pop("conn_health_checks", False)
    if health not in (True, False, 0, 1):
        raise ImproperlyConfigured(f"tenant server {key!r}: conn_health_checks must be true or false, not {health!r}")
    parsed["CONN_HEALTH_CHECKS"] = bool(health)
    if parsed.get("ENGINE", "").endswith("sqlite3"):
        parsed["NAME"] = str(_resolve_dir(parsed.get("NAME", "")))
    return Server(key=key, url=url, dialect=dialect, settings=parsed, isolation=isolation)


def _conn_max_age(key: str, value: object) -> int | None:
    """``conn_max_age`` from a URL: seconds (0 closes after each request) or ``none`` (forever)."""
    if isinstance(value, str) and value.lower() == "none":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ImproperlyConfigured(
        f"tenant server {key!r}: conn_max_age must be a whole number of seconds or 'none', not {value!r}"
    )


def _resolve_dir(name: str) -> Path:
    """A relative SQLite directory is relative to ``BASE_DIR`` (else the cwd)."""
    path = Path(name or "var/tenants")
    if not path.is_absolute():
        base = getattr(django_settings, "BASE_DIR", None)
        path = (Path(base) if base else Path.cwd()) / path
    return path


def all_servers() -> list[Server]:
    return [get_server(key) for key in server_urls()]


def _clear_cache(*, setting: str, **kwargs: Any) -> None:
    if setting == "TENANT_SCHEMA":
        _cache.clear()


setting_changed.connect(_clear_cache)
