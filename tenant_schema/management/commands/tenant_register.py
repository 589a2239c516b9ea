"""``tenant_register <slug>``: create a tenant, or finish one that failed half-way."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from ...names import normalize_slug
from ...servers import get_server
from ..inspection import add_label_option, command_errors


class Command(BaseCommand):
    help = (
        "Register a tenant: create its database on a server, apply the tenant apps' "
        "migrations and mark it ready. Running it again resumes a failed or "
        "interrupted registration; on a ready tenant it changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="Tenant slug: lower-case letters, digits and hyphens (a DNS label).")
        parser.add_argument(
            "--server",
            help='Key in TENANT_SCHEMA["SERVERS"] (default: where TENANT_SCHEMA["PLACEMENT"] puts the tenant; '
            "DEFAULT_SERVER unless a policy is set).",
        )
        parser.add_argument("--name", default="", help="Human-readable name shown in the admin.")
        add_label_option(parser)
        parser.add_argument(
            "--json", action="store_true", help="Print the registered tenant as a JSON object (for scripts)."
        )

    def handle(self, *args, slug, server, name, label, **options):
        from ...lifecycle.register import register_tenant
        from ...models import Tenant

        name = name.strip()
        longest = Tenant._meta.get_field("name").max_length
        if len(name) > longest:
            raise CommandError(f"--name must be at most {longest} characters, not {len(name)}")
        with command_errors():
            slug = normalize_slug(slug)
            get_server(server)  # an unknown server fails here, before any SQL
            tenant = register_tenant(slug, server=server, name=name, labels=",".join(label))
        if options["json"]:
            self.stdout.write(json.dumps(as_dict(tenant), indent=2))
        elif options["verbosity"] >= 1:
            self.stdout.write(
                f"Tenant {tenant.slug!r} is {tenant.status} on server {tenant.server!r} "
                f"({tenant.dialect_name}, database {tenant.database_name!r})."
            )


def as_dict(tenant) -> dict:
    """The ``--json`` shape: ``tenant_list``'s keys, with the name and the database."""
    return {
        "slug": tenant.slug,
        "name": tenant.name,
        "status": tenant.status,
        "server": tenant.server,
        "dialect": tenant.dialect_name,
        "database": tenant.database_name,
    }
