"""Clone templates: a new tenant's database copied from a template at the current plan.

Where the engine copies a database faster than DDL builds one (PostgreSQL's
``CREATE DATABASE ... TEMPLATE``, SQLite's backup API), each server keeps
one template database at the current migration plan, with the tenant apps'
tables, the recorded migrations and the ``TENANT_TABLES``. It is built
under a temporary name and renamed into place when complete, so a clone
never starts from a half-built template; its marker (origin ``template``)
holds the plan's fingerprint, and a template of another plan is replaced.
Cloning is only ever a shortcut: any failure to clone is logged and the
caller creates the database the ordinary way. ``CLONE_TEMPLATES`` switches
it off.
"""

from __future__ import annotations

import logging
import uuid

from django.db import DatabaseError

from .. import conf, databases, ownership
from ..databases import TenantDatabase
from ..dialects import ISOLATION_DATABASE
from ..exceptions import TenantSchemaError
from ..migration_plan import MigrationPlan
from ..models import Tenant
from ..plugins import get_plugins
from ..servers import Server, get_server, server_urls
from .build import create_from_models, create_tenant_tables, tenant_models

logger = logging.getLogger(__name__)

__all__ = ["can_clone", "clone_into", "drop_clone_templates", "ensure_template", "template_name"]

_templates: dict[str, str] = {}  # server key -> fingerprint of the template verified in this process
#: The handles (slugs) of templates: not valid tenant slugs (a leading "-"), so
#: their aliases can never be a tenant's.
TEMPLATE_HANDLE = "-clone-template"
TEMPLATE_BUILD_HANDLE = "-clone-template-build"


def forget_template(server: Server) -> None:
    """Stop trusting this process's check of ``server``'s template: the next clone verifies it again."""
    _templates.pop(server.key, None)


def template_name(server: Server) -> str:
    """The clone template's database name on ``server`` (no slug can derive it: slugs never start with "-")."""
    return databases._valid_name(f"{conf.get('DATABASE_PREFIX')}_template", server)


def can_clone(server: Server, plan: MigrationPlan) -> bool:
    """Whether new databases on ``server`` are cloned from a template."""
    return bool(
        conf.get("CLONE_TEMPLATES")
        and server.dialect.can_clone_databases
        and server.isolation == ISOLATION_DATABASE
        and not server.tenant_roles  # a clone would be owned by the server user, not the tenant's role
        and plan.direct_ok
        and tenant_models()
    )


def clone_into(tenant_db: TenantDatabase, plan: MigrationPlan) -> bool:
    """Clone the server's template into the tenant's (new) database; False when not cloned.

    Any failure to clone (the template is being rebuilt, another session is
    connected to it) is logged and answered with False: the caller creates
    the database the ordinary way.
    """
    server = tenant_db.server
    if not can_clone(server, plan):
        return False
    try:
        template = ensure_template(server, plan)
        cloned = bool(
            get_plugins().hook.tenant_schema_clone_database(
                dialect=server.dialect, server=server, template=template, name=tenant_db.name
            )
        )
    except Exception:
        logger.warning("could not clone the template on server %s; creating the database", server.key, exc_info=True)
        forget_template(server)
        return False
    return cloned


def ensure_template(server: Server, plan: MigrationPlan) -> str:
    """The name of ``server``'s clone template at ``plan``, built (or rebuilt) if needed."""
    name = template_name(server)
    fingerprint = plan.fingerprint
    if _templates.get(server.key) == fingerprint:
        return name
    template = TenantDatabase(TEMPLATE_HANDLE, server, name)
    marker = None
    with template.released():
        if template.exists():
            marker = ownership.read_marker(template)
            if marker is None or marker.origin != ownership.TEMPLATE_ORIGIN:
                raise TenantSchemaError(
                    f"database {name!r} on server {server.key!r} is not a tenant-schema clone template; "
                    "tenant-schema will not use or replace it (remove it, or set CLONE_TEMPLATES to False)"
                )
    if marker is None or marker.tenant_uid != fingerprint:
        _build_template(server, plan, replace=marker is not None)
    _templates[server.key] = fingerprint
    return name


def _build_template(server: Server, plan: MigrationPlan, *, replace: bool) -> None:
    """Build a template at ``plan`` under a temporary name, then rename it into place."""
    hook = get_plugins().hook
    name = template_name(server)
    # One build name per server: a build a killed process left behind is
    # dropped by the next build (it is half-built and nobody's), so leftovers
    # never accumulate. Two processes building at once make each other fall
    # back to creating their tenant's database with DDL: slower, never wrong.
    building = TenantDatabase(TEMPLATE_BUILD_HANDLE, server, databases._valid_name(f"{name}_build", server))
    hook.tenant_schema_drop_database(dialect=server.dialect, server=server, name=building.name)
    hook.tenant_schema_create_database(dialect=server.dialect, server=server, name=building.name)
    try:
        with building.released():
            create_from_models(building, plan, fresh=True)
            create_tenant_tables(building)
            _write_template_marker(building, plan.fingerprint)
        if replace:  # the old template holds another plan, and no tenant's data
            hook.tenant_schema_drop_database(dialect=server.dialect, server=server, name=name)
        if not server.dialect.rename_database(server, building.name, name):
            raise DatabaseError(f"another process installed a template {name!r} first")
        # Another process's build may have replaced ours under the build name
        # before the rename: what is in place now must be a complete template.
        installed = TenantDatabase(TEMPLATE_HANDLE, server, name)
        with installed.released():
            marker = ownership.read_marker(installed)
        if marker is None or marker.origin != ownership.TEMPLATE_ORIGIN or marker.tenant_uid != plan.fingerprint:
            hook.tenant_schema_drop_database(dialect=server.dialect, server=server, name=name)
            raise DatabaseError(f"the template {name!r} was replaced while it was built")
    except BaseException:
        building.close()
        hook.tenant_schema_drop_database(dialect=server.dialect, server=server, name=building.name)
        raise


def drop_clone_templates(server: str | None = None) -> int:
    """Drop the clone template of every server (or of ``server``); how many were dropped.

    Only a database whose marker says it is a clone template; the next
    registration on the server builds a new one. ``tenant_pool --drain`` calls it.
    """
    hook = get_plugins().hook
    dropped = 0
    for key in [server] if server is not None else list(server_urls()):
        srv = get_server(key)
        if not srv.dialect.can_clone_databases or srv.isolation != ISOLATION_DATABASE:
            continue
        forget_template(srv)
        template = TenantDatabase(TEMPLATE_HANDLE, srv, template_name(srv))
        with template.released():
            if not template.exists() or not ownership.is_unclaimed_clone(template):
                continue
        dropped += bool(hook.tenant_schema_drop_database(dialect=srv.dialect, server=srv, name=template.name))
    return dropped


def _write_template_marker(template: TenantDatabase, fingerprint: str) -> None:
    stand_in = Tenant(slug="clone-template", uid=uuid.UUID(fingerprint))
    ownership.write_marker(template, stand_in, origin=ownership.TEMPLATE_ORIGIN)
