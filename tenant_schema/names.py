"""Validation of every name that can reach SQL, applied before any SQL runs.

Names are also quoted by the backend when they are used; validating first
means a bad name fails with a message saying what is allowed, and never
half-way through a batch.
"""

from __future__ import annotations

import re

from django.db.backends.utils import names_digest

# Used with ``fullmatch``: ``$`` alone would accept a trailing newline.
SLUG_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
SLUG_MAX_LENGTH = 40
IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Registry rows of warm-pool databases have slugs ``pool-<16 hex digits>``;
#: no tenant can be given such an id.
POOL_SLUG_PREFIX = "pool-"
POOL_SLUG_RE = re.compile(r"pool-[0-9a-f]{16}")
#: Registry rows of ``tenant_move`` (a move's target, then the source it keeps)
#: have slugs ``move-<16 hex digits>``; no tenant can be given such an id either.
MOVE_SLUG_PREFIX = "move-"
MOVE_SLUG_RE = re.compile(r"move-[0-9a-f]{16}")
#: Registry rows of ``tenant_import`` while it fills a new database (renamed to
#: the tenant's slug when it is done) have slugs ``import-<16 hex digits>``.
IMPORT_SLUG_PREFIX = "import-"
IMPORT_SLUG_RE = re.compile(r"import-[0-9a-f]{16}")


def validate_slug(value: object) -> str:
    """Return ``value`` if it is a valid tenant slug, else raise ``ValueError``.

    Tenant slugs are DNS labels (so they work as subdomains): lower-case ASCII
    letters, digits and inner hyphens, 1 to 40 characters. No underscores, so
    the database name derived from an id (hyphens become underscores) is
    unique per id.
    """
    if not isinstance(value, str):
        raise ValueError(f"tenant slug must be a string, got {type(value).__name__}")
    if not value or len(value) > SLUG_MAX_LENGTH or not SLUG_RE.fullmatch(value):
        raise ValueError(
            f"invalid tenant slug {value!r}: use 1-{SLUG_MAX_LENGTH} lower-case letters, "
            "digits and hyphens, starting and ending with a letter or digit"
        )
    return value


def normalize_slug(value: object) -> str:
    """The canonical form of a tenant slug a person typed, validated.

    Tenant slugs are DNS labels, which are case-insensitive, and the database
    name derived from a slug turns hyphens into underscores, so ``Tenant_123``,
    ``tenant_123`` and ``tenant-123`` name one tenant: they normalise to
    ``tenant-123`` (lower case, underscores become hyphens). Anything else
    that is not a valid slug is a ``ValueError`` saying what is allowed.
    """
    if not (isinstance(value, str) and value.isascii()):
        return validate_slug(value)
    try:
        slug = validate_slug(value.lower().replace("_", "-"))
    except ValueError:
        validate_slug(value)  # the message names what was typed, not its normalised form
        raise
    for pattern, prefix, what in (
        (POOL_SLUG_RE, POOL_SLUG_PREFIX, "the warm pool's databases"),
        (MOVE_SLUG_RE, MOVE_SLUG_PREFIX, "the databases tenant_move fills and keeps"),
        (IMPORT_SLUG_RE, IMPORT_SLUG_PREFIX, "the databases tenant_import fills"),
    ):
        if pattern.fullmatch(slug):
            raise ValueError(
                f"invalid tenant slug {value!r}: slugs of the form {prefix}<16 hex digits> are reserved for {what}"
            )
    return slug


def validate_identifier(value: object, kind: str, max_length: int) -> str:
    """Return ``value`` if it is a safe SQL identifier, else raise ``ValueError``.

    ``kind`` names what is validated ("table name", "column name", ...) so
    the message points at the argument that was wrong. Reserved words are
    allowed: the backend quotes every identifier.
    """
    if not isinstance(value, str):
        raise ValueError(f"{kind} must be a string, got {type(value).__name__}")
    if not IDENTIFIER_RE.fullmatch(value):
        raise ValueError(
            f"invalid {kind} {value!r}: use ASCII letters, digits and underscores, not starting with a digit"
        )
    if len(value) > max_length:
        raise ValueError(f"{kind} {value!r} is {len(value)} characters; the limit here is {max_length}")
    return value


def shorten(name: str, max_length: int) -> str:
    """``name`` if it fits, else a prefix plus a stable 8-character hash of it (Django's ``names_digest``).

    Not Django's ``truncate_name`` (4 hash characters, no ``_``): index
    names already in tenant databases were made this way, and creating an
    index again must find it under the same name.
    """
    if len(name) <= max_length:
        return name
    return f"{name[: max_length - 9]}_{names_digest(name, length=8)}"
