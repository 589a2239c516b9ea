"""Per-tenant file storage: every file name lives under the current tenant's prefix.

``TenantStorageMixin`` goes in front of any Django storage backend
(``class TenantS3Storage(TenantStorageMixin, S3Storage)``). It rewrites
names and nothing else, so the backend stores, opens and serves files as it
always does. ``TenantFileSystemStorage`` is the mixin on Django's
``FileSystemStorage``: each tenant's files under ``MEDIA_ROOT/<prefix>/``,
served from ``MEDIA_URL/<prefix>/``.

Names are relative to the tenant. ``save("invoices/a.pdf", ...)`` writes
``<prefix>/invoices/a.pdf`` and returns ``invoices/a.pdf``: that is what a
``FileField`` stores in the tenant's row, and since the row is only read
inside its tenant, the name resolves under the same prefix again; ``url()``
returns the prefixed URL. With no tenant selected every call raises
``NoTenantSelected``: nothing falls back to the shared root.

The prefix is ``<slug>-<uid as 32 hex digits>`` (override ``tenant_prefix``
to change it). The slug keeps directory listings readable; the ``uid`` keeps
a prefix from ever being reused: purging a tenant drops its database but not
its files, and its slug may be registered again, by someone else. The new
tenant has a new ``uid``, so a new prefix and none of the old files.

Every name is checked before the backend sees it, as given, percent-decoded
and NFKC-normalised (``%2e%2e``, fullwidth dots): absolute paths, drive
letters, ``.`` and ``..`` segments, empty segments, backslashes and control
characters (NUL) raise Django's ``SuspiciousFileOperation``, so no name
reaches outside the tenant's prefix on any backend.

Only the outermost call is rewritten. While one of the public methods runs,
the backend's own calls back into ``self`` (``save`` calls
``get_available_name`` and ``exists``, ``FileSystemStorage._save`` calls
``path``) carry the full name already and pass through unchanged; a
``ContextVar`` records which storage is inside such a call, so this is right
in every thread and async task.
"""

from __future__ import annotations

import contextvars
import os
import re
import unicodedata
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from django.core.exceptions import ImproperlyConfigured, SuspiciousFileOperation
from django.core.files.storage import FileSystemStorage

from .exceptions import NoTenantSelected
from .registry import current_tenant

if TYPE_CHECKING:  # pragma: no cover
    from .models import Tenant

__all__ = ["TenantFileSystemStorage", "TenantStorageMixin", "check_name"]

ALLOWED = (
    "a file name is relative to the tenant's files: '/'-separated segments, none of them empty, '.' or '..', "
    "and no leading '/', drive letter, backslash or control character, percent-encoded or not"
)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE_RE = re.compile(r"[A-Za-z]:")
_DECODE_ROUNDS = 3

#: The storage whose public method is running in this context: its own calls back pass through.
_inside: contextvars.ContextVar[object | None] = contextvars.ContextVar("tenant_schema_storage_call", default=None)


def _problem(text: str) -> str | None:
    if _CONTROL_RE.search(text):
        return "contains a control character (NUL, newline, ...)"
    if "\\" in text:
        return "contains a backslash"
    if text.startswith("/") or _DRIVE_RE.match(text):
        return "is an absolute path"
    for segment in text.split("/"):
        if not segment:
            return "has an empty segment ('//', or a '/' at the end)"
        if not segment.strip(". "):
            return f"has a {segment!r} segment"
    return None


def _readings(name: str) -> list[str]:
    """``name`` and what a later layer may read it as: percent-decoded, NFKC-normalised."""
    readings = [name]
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(readings[-1])
        if decoded == readings[-1]:
            break
        readings.append(decoded)
    else:
        raise SuspiciousFileOperation(
            f"refused file name {name!r}: it is percent-encoded three times or more; {ALLOWED}"
        )
    return readings + [unicodedata.normalize("NFKC", reading) for reading in readings]


def check_name(name: Any, *, root_allowed: bool = False) -> str:
    """``name`` as a ``str`` if it stays inside a tenant's files, else ``SuspiciousFileOperation``.

    ``""`` (the tenant's root) only when ``root_allowed`` (``listdir``, ``path``).
    """
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        raise TypeError(f"a file name must be a str, not {type(name).__name__}")
    if name == "":
        if root_allowed:
            return name
        raise SuspiciousFileOperation(f"refused file name '': it names the tenant's root, not a file; {ALLOWED}")
    for reading in _readings(name):
        problem = _problem(reading)
        if problem is not None:
            seen = "" if reading == name else f" once decoded as {reading!r}"
            raise SuspiciousFileOperation(f"refused file name {name!r}: it {problem}{seen}; {ALLOWED}")
    return name


class TenantStorageMixin:
    """Put every name under the current tenant's prefix; put this mixin before the backend's class.

    Names going in and out are relative to the tenant (module docstring).
    ``tenant_prefix`` says where a tenant's files live; ``listdir("")``
    lists the tenant's root, empty before its first file.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        token = _inside.set(self)  # a backend may call its own methods here (InMemoryStorage makes its root)
        try:
            super().__init__(*args, **kwargs)
        finally:
            _inside.reset(token)

    def tenant_prefix(self, tenant: Tenant) -> str:
        """Where ``tenant``'s files live, relative to the backend's root: ``<slug>-<uid hex>``.

        Override to change it. It must differ for every tenant, never be
        reused, and not be inside another tenant's prefix.
        """
        return f"{tenant.slug}-{tenant.uid.hex}"

    def current_prefix(self) -> str:
        """The current tenant's prefix; ``NoTenantSelected`` when there is none."""
        tenant = current_tenant()
        if tenant is None:
            raise NoTenantSelected(
                f"no tenant selected: {type(self).__name__} keeps each tenant's files apart and has no "
                "shared root; use it inside `with tenant_context(tenant):` (TenantMiddleware sets it per request)"
            )
        prefix = self.tenant_prefix(tenant)
        try:
            return check_name(prefix)
        except (SuspiciousFileOperation, TypeError) as exc:
            raise ImproperlyConfigured(
                f"{type(self).__name__}.tenant_prefix() returned {prefix!r} for tenant {tenant.slug!r}: {exc}"
            ) from None

    # -- rewriting -----------------------------------------------------------------

    def _full(self, name: Any, *, root_allowed: bool = False) -> tuple[str, str]:
        """``(prefix, prefix/name)``, both checked before any storage is touched."""
        name = check_name(name, root_allowed=root_allowed)
        prefix = self.current_prefix()
        return prefix, f"{prefix}/{name}" if name else prefix

    def _call(self, method, name: Any, *args: Any, root_allowed=False, returns_name=False, **kwargs: Any) -> Any:
        """``method(<prefix>/name, ...)``; ``method(name, ...)`` as is when the backend calls itself.

        A ``max_length`` bounds what a ``FileField`` stores, the relative
        name, so the prefix is added to it; with ``returns_name`` the name
        the backend returns is made relative again.
        """
        if _inside.get() is self:
            return method(name, *args, **kwargs)
        prefix, full = self._full(name, root_allowed=root_allowed)
        if kwargs.get("max_length"):  # None and 0 mean no limit, as in Django
            kwargs["max_length"] += len(prefix) + 1
        token = _inside.set(self)
        try:
            result = method(full, *args, **kwargs)
        finally:
            _inside.reset(token)
        if not returns_name:
            return result
        if not result.startswith(prefix + "/"):
            raise SuspiciousFileOperation(
                f"{type(self).__name__} returned {result!r}, which is outside the tenant's prefix {prefix!r}"
            )
        return result[len(prefix) + 1 :]

    # -- the storage API -----------------------------------------------------------

    def save(self, name, content, max_length=None):
        if name is None:
            name = content.name
        return self._call(super().save, name, content, max_length=max_length, returns_name=True)

    def get_available_name(self, name, max_length=None):
        return self._call(super().get_available_name, name, max_length=max_length, returns_name=True)

    def is_name_available(self, name, max_length=None):
        return self._call(super().is_name_available, name, max_length=max_length)

    def generate_filename(self, filename):
        """The backend's name for an upload, relative to the tenant (it goes to ``save``)."""
        return check_name(super().generate_filename(check_name(filename)))

    def open(self, name, mode="rb"):
        return self._call(super().open, name, mode)

    def exists(self, name):
        return self._call(super().exists, name)

    def delete(self, name):
        return self._call(super().delete, name)

    def size(self, name):
        return self._call(super().size, name)

    def url(self, name, *args, **kwargs):
        return self._call(super().url, name, *args, **kwargs)

    def path(self, name):
        return self._call(super().path, name, root_allowed=True)

    def listdir(self, path):
        if _inside.get() is self:
            return super().listdir(path)
        if isinstance(path, str) and len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        try:
            return self._call(super().listdir, path, root_allowed=True)
        except FileNotFoundError:
            if path == "":  # the tenant has stored nothing yet
                return [], []
            raise

    def get_accessed_time(self, name):
        return self._call(super().get_accessed_time, name)

    def get_created_time(self, name):
        return self._call(super().get_created_time, name)

    def get_modified_time(self, name):
        return self._call(super().get_modified_time, name)


class TenantFileSystemStorage(TenantStorageMixin, FileSystemStorage):
    """``FileSystemStorage`` with each tenant's files in ``MEDIA_ROOT/<prefix>/``, at ``MEDIA_URL/<prefix>/``.

    Takes ``FileSystemStorage``'s arguments (``location``, ``base_url``, ...),
    as ``OPTIONS`` in ``STORAGES`` or directly.
    """
