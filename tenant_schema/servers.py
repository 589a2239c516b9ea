"""Database servers: ``TENANT_SCHEMA["SERVERS"]`` URLs turned into Django settings.

A server is where tenant databases are created. Its URL is parsed once (with
``dj-database-url``, through the ``tenant_schema_server_settings`` hook); its
scheme selects the dialect plugin. Options that are ours, not the driver's,
are taken out of the query string:

- ``isolation=database`` (default) or ``isolation=schema`` (PostgreSQL and
  CockroachDB: one schema per tenant inside the URL's database);
- ``conn_max_age=N`` and ``conn_health_checks=true`` for tenant aliases
  (tenant aliases default to ``CONN_MAX_AGE=0``);
- ``tenant_roles=true``: each tenant connects as its own database role,
  which owns its database (or schema) and nothing else; the URL's user only
  creates and drops databases and roles (see ``docs/isolation.md``);
- ``pooler=transaction`` (or ``session``): the URL reaches the database
  through a connection pooler (PgBouncer) in that mode. Under transaction
  pooling no connection may rely on session state, so Django's server-side
  cursors are disabled; behind either, schema isolation sets the search
  path inside each transaction instead of as a start-up parameter (see
  ``docs/operations.md``);
- ``shared_connections=true|false``: the schema tenants of the server
  borrow the physical connections of one per-process set instead of each
  opening its own (each transaction sets its path, as behind a pooler). On
  by default for schema isolation where the dialect can, without a
  ``pooler`` and without ``tenant_roles``;
- ``labels=region:eu,tier:gold``: labels a new tenant can require
  (``register_tenant(..., labels={"region": "eu"})``, data residency);
- ``weight=N`` (default 1): the server's share of new tenants under the
  ``"weighted"`` placement policy (``tenant_schema.placement``).
"""

from __future__ import annotations

import functools
import re
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import connections

from . import conf
from .aliases import register_alias, server_alias
from .dialects import (
    ISOLATION_DATABASE,
    ISOLATION_SCHEMA,
    POOLER_NONE,
    POOLER_SESSION,
    POOLER_TRANSACTION,
    Dialect,
)
from .exceptions import UnknownDialect, UnknownServer
from .plugins import get_plugins

MAX_POOL = 1000
MAX_WEIGHT = 1000


@dataclass(frozen=True)
class Server:
    """One configured server: its dialect and the settings to reach it."""

    key: str
    url: str = field(repr=False)
    dialect: Dialect
    settings: dict[str, Any] = field(repr=False, compare=False)
    isolation: str = ISOLATION_DATABASE
    #: Each tenant connects as its own role (``?tenant_roles=true``).
    tenant_roles: bool = False
    #: Provisioned, unassigned databases kept ready for sign-ups (``?pool=N``).
    pool: int = 0
    #: The connection pooler between us and the database (``?pooler=transaction``), or ``""``.
    pooler: str = POOLER_NONE
    #: Schema tenants borrow the connections of one per-process set (``?shared_connections=``).
    shared_connections: bool = False
    #: Labels a new tenant can require (``?labels=region:eu,tier:gold``).
    labels: dict[str, str] = field(default_factory=dict, compare=False)
    #: Share of new tenants under the "weighted" placement policy (``?weight=N``).
    weight: int = 1

    @property
    def alias(self) -> str:
        """The connection alias used for server-level work (CREATE DATABASE)."""
        return server_alias(self.key)

    def connection(self):
        """The server-level connection, registered on first use."""
        register_alias(self.alias, self.settings)
        return connections[self.alias]

    @property
    def path(self) -> Path:
        """Directory of a file-based server (SQLite)."""
        return Path(self.settings["NAME"])

    def safe_url(self) -> str:
        """The URL with any password masked, for display."""
        return mask_url(self.url)


# -- never show a password ------------------------------------------------------
# Every message about a server URL shows it through ``mask_url``, and
# ``parse_server`` scrubs the password from any error raised while parsing
# (a plugin's included), so no exception, log line or ``manage.py check``
# output carries it.

MASK = "***"
SHORT_SECRET = 6  # a shorter password is masked where it is quoted or in a URL, not where it reads as a word
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*\Z")


def _userinfo_span(url: str) -> tuple[int, int, int] | None:
    """``(start, colon, at)`` offsets of ``user:password@`` in ``url``, else ``None``.

    The user-info ends at the last ``@`` of the host part; when there is none
    there but one later (a password with an unencoded ``/``, ``?`` or ``#``,
    which no parser reads right), the last ``@`` anywhere: masking too much
    beats showing a secret.
    """
    start = url.find("://")
    start = 0 if start < 0 else start + 3
    host_end = min((i for i in (url.find(c, start) for c in "/?#") if i >= 0), default=len(url))
    at = url.rfind("@", start, host_end)
    if at < 0:
        at = url.rfind("@", start)
    colon = url.find(":", start, at) if at >= 0 else -1
    return (start, colon, at) if colon >= 0 else None


def mask_url(url: object) -> str:
    """``url`` for display: the password replaced with ``***``; a value that is not a string, hidden."""
    if not isinstance(url, str):
        return f"<{type(url).__name__}>"
    span = _userinfo_span(url)
    if span is None:
        return url
    _, colon, at = span
    return f"{url[: colon + 1]}{MASK}{url[at:]}"


def mask_secrets(text: str, url: object) -> str:
    """``text`` with every form of ``url``'s password (as written, decoded) replaced by ``***``."""
    if not isinstance(url, str):
        return text
    span = _userinfo_span(url)
    secrets = set()
    if span is not None:
        _, colon, at = span
        raw = url[colon + 1 : at]
        secrets |= {raw, urllib.parse.unquote(raw), urllib.parse.unquote_plus(raw)}
    try:
        parsed = urllib.parse.urlsplit(url).password
    except ValueError:
        parsed = None
    if parsed:
        secrets |= {parsed, urllib.parse.unquote(parsed)}
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        if len(secret) >= SHORT_SECRET:
            text = text.replace(secret, MASK)
        else:  # where it is quoted or inside a URL, not in words ("a" in "cannot", "is not a number")
            text = re.sub(rf"(?<![\w\s]){re.escape(secret)}(?![\w\s])", MASK, text)
    return text


def _masking_secrets(parse: Callable[..., Server]) -> Callable[..., Server]:
    """Re-raise any error of ``parse(key, url)`` with the URL's password scrubbed from its message."""

    @functools.wraps(parse)
    def wrapper(key: str, url: object, *args: Any, **kwargs: Any) -> Server:
        try:
            return parse(key, url, *args, **kwargs)
        except Exception as exc:
            message = mask_secrets(str(exc), url)
            if message == str(exc):
                raise
            if isinstance(exc, ImproperlyConfigured):
                try:
                    clean = type(exc)(message)
                except Exception:  # noqa: BLE001 - an exception class with another signature
                    clean = ImproperlyConfigured(message)
            else:
                clean = ImproperlyConfigured(f"tenant server {key!r}: {message}")
        raise clean from None

    return wrapper


_cache: dict[tuple[str, str], Server] = {}
_lock = threading.Lock()


def server_urls() -> dict[str, str]:
    servers = conf.get("SERVERS")
    if not isinstance(servers, dict) or not servers:
        raise ImproperlyConfigured('TENANT_SCHEMA["SERVERS"] must be a non-empty dict of key -> URL')
    return servers


def get_server(key: str | None = None) -> Server:
    """The server ``key`` (or ``TENANT_SCHEMA["DEFAULT_SERVER"]``)."""
    key = conf.get("DEFAULT_SERVER") if key is None else key  # "" is an unknown server, not the default
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


@_masking_secrets
def parse_server(key: str, url: str) -> Server:
    """Parse one server URL; raises ``ImproperlyConfigured`` naming the server (never its password)."""
    if not isinstance(url, str):
        raise ImproperlyConfigured(
            f"tenant server {key!r}: its value is a {type(url).__name__}, not a URL string like "
            "postgres://user@host:5432/"
        )
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if not _SCHEME_RE.match(scheme):  # not shown: without a scheme, nothing says where a password is
        raise ImproperlyConfigured(
            f"tenant server {key!r}: its value is not a URL like postgres://user@host:5432/ "
            "(it must start with a scheme, such as postgres://, mysql:// or sqlite://)"
        )
    plugins = get_plugins()
    try:
        dialect = plugins.dialect_for_scheme(scheme)
    except UnknownDialect as exc:
        raise UnknownDialect(f"tenant server {key!r}: {exc}") from None
    try:
        parsed = plugins.hook.tenant_schema_server_settings(dialect=dialect, url=url)
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"tenant server {key!r}: cannot parse its URL {mask_url(url)}: {_url_problem(url) or exc}"
        ) from None
    options = parsed.setdefault("OPTIONS", {})
    isolation = str(options.pop("isolation", ISOLATION_DATABASE))
    if isolation not in (ISOLATION_DATABASE, ISOLATION_SCHEMA):
        raise ImproperlyConfigured(
            f"tenant server {key!r}: isolation must be 'database' or 'schema', not {isolation!r}"
        )
    if isolation == ISOLATION_SCHEMA and not dialect.supports_schema_isolation:
        raise ImproperlyConfigured(
            f"tenant server {key!r}: the {dialect.name} dialect cannot isolate tenants by schema"
        )
    parsed["CONN_MAX_AGE"] = _conn_max_age(key, options.pop("conn_max_age", 0))
    health = options.pop("conn_health_checks", False)
    if health not in (True, False, 0, 1):
        raise ImproperlyConfigured(f"tenant server {key!r}: conn_health_checks must be true or false, not {health!r}")
    parsed["CONN_HEALTH_CHECKS"] = bool(health)
    tenant_roles = _tenant_roles(key, dialect, options.pop("tenant_roles", False))
    pool = options.pop("pool", 0)
    if not isinstance(pool, int) or isinstance(pool, bool) or not 0 <= pool <= MAX_POOL:
        raise ImproperlyConfigured(
            f"tenant server {key!r}: pool must be a whole number of databases from 0 to {MAX_POOL}, not {pool!r}"
        )
    pooler = _pooler(key, dialect, isolation, options.pop("pooler", POOLER_NONE))
    if pooler == POOLER_TRANSACTION:
        # A server-side cursor (DECLARE ... WITH HOLD) lives in the server
        # session, which the pooler hands to another client after each
        # transaction: Django's documented setting for transaction pooling.
        parsed["DISABLE_SERVER_SIDE_CURSORS"] = True
    shared = _shared_connections(key, dialect, isolation, tenant_roles, pooler, options.pop("shared_connections", None))
    labels = parse_labels(options.pop("labels", ""), f"tenant server {key!r}: labels")
    weight = options.pop("weight", 1)
    if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= MAX_WEIGHT:
        raise ImproperlyConfigured(
            f"tenant server {key!r}: weight must be a whole number from 0 (no new tenants) to {MAX_WEIGHT}, "
            f"not {weight!r}"
        )
    return Server(
        key=key,
        url=url,
        dialect=dialect,
        settings=parsed,
        isolation=isolation,
        tenant_roles=tenant_roles,
        pool=pool,
        pooler=pooler,
        shared_connections=shared,
        labels=labels,
        weight=weight,
    )


_LABEL_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}\Z")


def parse_labels(value: object, what: str) -> dict[str, str]:
    """``"region:eu,tier:gold"`` (or ``"region=eu"``, or a dict) as ``{"region": "eu", "tier": "gold"}``.

    Names and values are lower-case letters, digits, ``_``, ``.`` and ``-``
    (at most 63 characters); ``ImproperlyConfigured`` naming ``what`` otherwise.
    """
    if isinstance(value, Mapping):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, str):
        pairs = []
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, sep, label = item.replace("=", ":", 1).partition(":")
            if not sep:
                raise ImproperlyConfigured(f"{what}: {item!r} is not name:value (as in region:eu)")
            pairs.append((name.strip(), label.strip()))
    else:
        raise ImproperlyConfigured(f"{what}: expected name:value pairs such as region:eu, not {value!r}")
    labels: dict[str, str] = {}
    for name, label in pairs:
        for part in (name, label):
            if not _LABEL_RE.match(part):
                raise ImproperlyConfigured(
                    f"{what}: {part!r} is not a label name or value: use 1-63 lower-case letters, digits, "
                    "'_', '.' and '-', starting with a letter or digit"
                )
        if name in labels and labels[name] != label:
            raise ImproperlyConfigured(f"{what}: {name!r} is given twice ({labels[name]!r} and {label!r})")
        labels[name] = label
    return labels


def _shared_connections(
    key: str, dialect: Dialect, isolation: str, tenant_roles: bool, pooler: str, value: object
) -> bool:
    """``shared_connections`` from a URL; when absent, on for schema isolation where it can be."""
    if value is None:
        return (
            isolation == ISOLATION_SCHEMA
            and dialect.supports_shared_connections
            and dialect.supports_transaction_search_path
            and not tenant_roles
            and not pooler
        )
    if value not in (True, False, 0, 1):
        raise ImproperlyConfigured(f"tenant server {key!r}: shared_connections must be true or false, not {value!r}")
    if not value:
        return False
    if isolation != ISOLATION_SCHEMA:
        raise ImproperlyConfigured(
            f"tenant server {key!r}: shared_connections=true needs isolation=schema (tenants in one "
            "database); a tenant database is only reached through connections of its own"
        )
    if not (dialect.supports_shared_connections and dialect.supports_transaction_search_path):
        raise ImproperlyConfigured(
            f"tenant server {key!r}: the {dialect.name} dialect cannot share connections between "
            "schema tenants; remove shared_connections=true from its URL"
        )
    if tenant_roles:
        raise ImproperlyConfigured(
            f"tenant server {key!r}: shared_connections=true cannot be combined with tenant_roles=true: "
            "each tenant logs in as its own role, so its connections cannot serve another tenant"
        )
    return True


def _pooler(key: str, dialect: Dialect, isolation: str, value: object) -> str:
    """``pooler`` from a URL: ``session`` or ``transaction`` (``""`` when absent or ``none``)."""
    value = POOLER_NONE if value in ("none", POOLER_NONE) else value
    if value == "statement":
        raise ImproperlyConfigured(
            f"tenant server {key!r}: pooler=statement cannot run a transaction of more than one "
            "statement (Django's atomic blocks, migrations); use pooler=transaction and set "
            "pool_mode = transaction in the pooler"
        )
    if value not in (POOLER_NONE, POOLER_SESSION, POOLER_TRANSACTION):
        raise ImproperlyConfigured(
            f"tenant server {key!r}: pooler must be 'transaction', 'session' or 'none', not {value!r}"
        )
    if value and isolation == ISOLATION_SCHEMA and not dialect.supports_transaction_search_path:
        raise ImproperlyConfigured(
            f"tenant server {key!r}: the {dialect.name} dialect cannot set a tenant's schema in each "
            "transaction, so schema isolation cannot go through a pooler; use isolation=database, "
            "or connect without the pooler"
        )
    return str(value)


def _tenant_roles(key: str, dialect: Dialect, value: object) -> bool:
    """``tenant_roles`` from a URL: true or false, and only where the dialect can do it."""
    if value not in (True, False, 0, 1):
        raise ImproperlyConfigured(f"tenant server {key!r}: tenant_roles must be true or false, not {value!r}")
    if value and not dialect.supports_tenant_roles:
        raise ImproperlyConfigured(
            f"tenant server {key!r}: the {dialect.name} dialect cannot give each tenant its own "
            "database role; remove tenant_roles=true from its URL"
        )
    return bool(value)


def _url_problem(url: str) -> str | None:
    """What is wrong with a URL that does not parse, in words that show no part of it."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "the host is not valid (an IPv6 address needs both brackets: postgres://user@[::1]:5432/)"
    try:
        _ = parts.port  # parsing the port is what fails on "host:notaport"
    except ValueError:
        hint = ""
        if "@" in url[url.find("://") + 3 :] and "@" not in parts.netloc:
            hint = "; if the password contains '/', '?', '#' or '@', percent-encode them (%2F, %3F, %23, %40)"
        return f"the port is not a number from 0 to 65535{hint}"
    return None


def _conn_max_age(key: str, value: object) -> int | None:
    """``conn_max_age`` from a URL: seconds (0 closes after each request) or ``none`` (forever)."""
    if isinstance(value, str) and value.lower() == "none":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ImproperlyConfigured(
        f"tenant server {key!r}: conn_max_age must be a whole number of seconds or 'none', not {value!r}"
    )


def _clear_cache(*, setting: str, **kwargs: Any) -> None:
    if setting == "TENANT_SCHEMA":
        _cache.clear()


setting_changed.connect(_clear_cache)
