"""``tenant_schema.configure()``: the library in a plain script, with one call.

A Django project configures tenant-schema in its settings (see
docs/configuration.md). A script, a notebook or a quick experiment has no
project: ``configure()`` sets up a minimal one — the registry in a SQLite
file, tenants on the servers you name (SQLite files under ``var/tenants/``
by default) — migrates the registry, and returns. Where Django is already
configured (``manage.py shell``, a test run, a project's own code) it
changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def configure(
    *,
    servers: dict[str, str] | None = None,
    registry: str | Path = "var/registry.sqlite3",
    **tenant_schema: Any,
) -> None:
    """Configure Django for tenant-schema in a script without a project.

    :param servers: ``TENANT_SCHEMA["SERVERS"]``: server key -> URL. The
        default is one SQLite server keeping tenant files in ``var/tenants/``.
    :param registry: the SQLite file holding the tenant registry
        (relative paths are relative to the working directory).
    :param tenant_schema: any other ``TENANT_SCHEMA`` setting
        (``DATABASE_PREFIX="app_"``, ``TENANT_APPS=[...]``, ...).
    """
    import django
    from django.conf import settings
    from django.core.management import call_command

    if settings.configured:
        return
    registry_path = Path(registry).absolute()
    registry_path.parent.mkdir(parents=True, exist_ok=True)
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "tenant_schema"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(registry_path)}},
        DATABASE_ROUTERS=["tenant_schema.routers.TenantRouter"],
        USE_TZ=True,
        TENANT_SCHEMA={"SERVERS": servers or {"default": "sqlite:///var/tenants/"}, **tenant_schema},
    )
    django.setup()
    call_command("migrate", "tenant_schema", verbosity=0)
