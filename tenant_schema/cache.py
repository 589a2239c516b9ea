"""Per-tenant cache keys: each tenant's entries apart, in any Django cache backend.

``make_key`` is a ``KEY_FUNCTION`` for ``CACHES``::

    CACHES = {"default": {..., "KEY_FUNCTION": "tenant_schema.cache.make_key"}}

Django's cache builds every key it reads or writes with it, so the current
tenant (``current_tenant()``) becomes part of each one:
``<KEY_PREFIX>:<tenant uid>:<version>:<key>``. The same
``cache.get("menu")`` reads a different entry in each tenant, for ``get``,
``set``, ``get_many``, ``incr``, ``delete_many``, versions and the async
twins alike. Code that runs with no tenant selected (a shared page, a
management command) has a namespace of its own, ``-``, which no tenant's
can be.

A tenant is named by its ``uid``, not its slug. A slug is a name, and a
name can be given again: after ``purge_tenant("acme")`` someone else may
register ``acme``, and must not be served the old tenant's cached pages,
permissions or user lists, which may live on in Redis for as long as
their timeout. A ``uid`` is never given twice, and it stays the same while
a tenant is archived and restored, so the tenant's entries stay its own.

``cache.clear()`` is not per tenant: it empties the whole cache (Django's
``RedisCache`` runs ``FLUSHDB``), every tenant's entries and the shared
ones. ``tenant_key_pattern`` is the Redis pattern of one tenant's keys, to
scan for and delete them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .registry import current_tenant

if TYPE_CHECKING:  # pragma: no cover
    from .models import Tenant

__all__ = ["NO_TENANT", "make_key", "reverse_key", "tenant_key_pattern"]

#: The namespace of keys made with no tenant selected; a uid is 32 hex digits, never this.
NO_TENANT = "-"

# The first ":<uid or ->:<version>:" after the prefix ends it: a KEY_PREFIX
# may hold colons, a key anything.
_MADE_KEY = re.compile(r"(?P<prefix>.*?):(?:[0-9a-f]{32}|-):[^:]*:(?P<key>.*)", re.S)
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


def _namespace(tenant: Tenant | None) -> str:
    return NO_TENANT if tenant is None else tenant.uid.hex


def make_key(key: Any, key_prefix: str, version: Any) -> str:
    """``<key_prefix>:<current tenant's uid, or ->:<version>:<key>``: Django's key with the tenant in it.

    Reads only the current tenant's ``ContextVar``: no query, so it costs
    next to nothing on every cache call.
    """
    return f"{key_prefix}:{_namespace(current_tenant())}:{version}:{key}"


def reverse_key(key: str) -> str:
    """The key ``make_key`` was given: for django-redis's ``REVERSE_KEY_FUNCTION`` (``cache.keys()``).

    ``ValueError`` for a key ``make_key`` did not make. The ``KEY_PREFIX``
    may hold colons, but not a piece that looks like the rest of a made
    key (``:-:1:``): the first such piece ends the prefix.
    """
    match = _MADE_KEY.fullmatch(key)
    if match is None:
        raise ValueError(
            f"{key!r} is not a key made by tenant_schema.cache.make_key, "
            "which makes '<KEY_PREFIX>:<tenant uid, or - for no tenant>:<version>:<key>'"
        )
    return match["key"]


def tenant_key_pattern(tenant: Tenant | None, key_prefix: str = "") -> str:
    """The Redis ``SCAN``/``KEYS`` pattern matching every key of ``tenant`` (``None``: no tenant), all versions.

    ``key_prefix`` is the cache's ``KEY_PREFIX`` (``cache.key_prefix``);
    Redis's glob characters in it are escaped.
    """
    escaped = _GLOB_SPECIAL.sub(r"\\\1", key_prefix)
    return f"{escaped}:{_namespace(tenant)}:*"
