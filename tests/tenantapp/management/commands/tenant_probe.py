"""``tenant_probe``: what a command run by ``tenant_command`` sees (tests/test_tenant_command.py)."""

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS

from tenant_schema import current_tenant
from tests.tenantapp.models import Note


class Command(BaseCommand):
    help = "Print the current tenant, the --database it was given and how many notes the tenant holds."

    def add_arguments(self, parser):
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Only printed.")
        parser.add_argument("--fail-in", action="append", default=[], metavar="SLUG", help="Fail in this tenant.")
        parser.add_argument("--crash-in", action="append", default=[], metavar="SLUG", help="A bug in this tenant.")
        parser.add_argument("--print", action="store_true", help="Also print(), bypassing self.stdout.")
        parser.add_argument("--all", action="store_true", dest="every", help="Named like tenant_command's --all.")

    def handle(self, *args, database, fail_in, crash_in, every, **options):
        slug = current_tenant().slug  # NoTenantSelected unless tenant_command selected one
        if slug in fail_in:
            raise CommandError(f"told to fail in {slug}")
        if slug in crash_in:
            raise ZeroDivisionError(f"a bug in {slug}\nsecond line")
        self.stdout.write(f"tenant={slug} database={database} notes={Note.objects.count()} all={every}")
        if options["print"]:
            print(f"printed in {slug}")
        self.stderr.write(f"stderr of {slug}")
