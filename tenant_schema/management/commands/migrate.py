"""Django's ``migrate``, which also accepts a tenant alias: ``--database tenant:<slug>``.

Tenant aliases are registered lazily (on first use), so in a fresh
``manage.py`` process ``tenant:acme`` does not exist yet; this registers it
from the registry first, then runs Django's command unchanged. Fleet-wide
migration is ``tenant_migrate``.
"""

from django.core.management.base import CommandError
from django.core.management.commands.migrate import Command as DjangoMigrate

from ...aliases import ALIAS_PREFIX, INTERNAL_ALIAS_PREFIX


class Command(DjangoMigrate):
    def add_arguments(self, parser):
        super().add_arguments(parser)
        for action in parser._actions:
            if action.dest == "database":  # Django lists configured aliases only
                action.choices = None
                action.help += f', or "{ALIAS_PREFIX}<slug>" for one tenant'

    def execute(self, *args, **options):
        from django.db import DEFAULT_DB_ALIAS, connections

        from ... import ownership
        from ...exceptions import NotOurDatabase, TenantNotFound
        from ...lifecycle.migrate import record_migration_state, refresh_migration_state
        from ...registry import get_tenant

        database = options.get("database")
        if database is None:
            database = DEFAULT_DB_ALIAS
        if database.startswith(ALIAS_PREFIX):
            try:
                tenant = get_tenant(database[len(ALIAS_PREFIX) :])
                ownership.check_owner(tenant.database, tenant)  # never migrate someone else's database
                tenant.database.ensure_alias()
            except (TenantNotFound, NotOurDatabase) as exc:
                raise CommandError(str(exc)) from None
            database = options["database"] = tenant.database.alias  # tenant:ACME is tenant:acme
            if options.get("plan") or options.get("check_unapplied"):  # read-only
                return super().execute(*args, **options)
            # The registry's record of the tenant's migrations is unknown while
            # Django's migrate runs (a crash leaves it unknown, never wrong),
            # then read back from the database.
            record_migration_state(tenant, "")
            result = super().execute(*args, **options)
            refresh_migration_state(tenant)
            return result
        elif database not in connections.settings:  # Django's own check went with the choices
            aliases = ", ".join(
                a for a in connections.settings if not a.startswith((ALIAS_PREFIX, INTERNAL_ALIAS_PREFIX))
            )
            raise CommandError(
                f"unknown database {database!r}: use one of {aliases}, or {ALIAS_PREFIX}<slug> for one tenant"
            )
        return super().execute(*args, **options)
