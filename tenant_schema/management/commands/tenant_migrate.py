"""``tenant_migrate [slug ...]``: apply the tenant apps' migrations to every tenant.

Tenants the registry records at the current migration plan are skipped
without connecting to them (``--verify`` connects to every tenant and
reports drift); the others are checked and migrated over ``--jobs``
processes; a failing tenant does not stop the others. Every failure is
listed at the end and the command exits non-zero.
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from ...names import normalize_slug
from ..inspection import command_errors


class Command(BaseCommand):
    help = (
        'Apply pending migrations of TENANT_SCHEMA["TENANT_APPS"] to the given tenants '
        "(default: every ready tenant), in parallel processes with --jobs."
    )

    def add_arguments(self, parser):
        parser.add_argument("slugs", nargs="*", metavar="slug", help="Tenants to migrate (default: all).")
        parser.add_argument("--jobs", "-j", type=int, default=1, help="Worker processes (default 1).")
        parser.add_argument(
            "--progress",
            action="store_true",
            default=None,
            help="Show a progress bar (the default when stderr is a terminal).",
        )
        parser.add_argument("--no-progress", action="store_false", dest="progress")
        parser.add_argument(
            "--verify",
            action="store_true",
            help="Connect to every tenant, even those the registry records as up to date, and report drift.",
        )

    def handle(self, *args, slugs, jobs, progress, verbosity, verify, **options):
        from ...provisioning import migrate_tenants

        if jobs < 1:
            raise CommandError(f"--jobs must be 1 or more, not {jobs}")
        if progress is None:
            progress = verbosity >= 1 and sys.stderr.isatty()
        # A bar on a terminal; otherwise one line per tenant as it finishes.
        on_result = True if progress else (lambda result: self.report(result, verbosity))
        with command_errors():
            slugs = list(dict.fromkeys(normalize_slug(slug) for slug in slugs))  # ACME and acme: once
            report = migrate_tenants(slugs or None, jobs=jobs, progress=on_result, verify=verify)
        if progress:
            for result in report.results:
                self.report(result, verbosity)

        applied = sum(1 for r in report.results if r.applied)
        skipped = sum(1 for r in report.results if r.skipped)
        failures = report.failures
        if verbosity >= 1:
            self.stdout.write(
                f"{len(report.results)} tenants: {applied} migrated, {skipped} up to date, {len(failures)} failed."
            )
        for result in report.drifted:
            self.stderr.write(
                f"{result.slug}: drift: the registry recorded it as up to date, but its database lacked "
                "migrations (changed outside tenant-schema)"
            )
        if failures:
            self.stderr.write("Failed tenants:")
            for result in failures:
                self.stderr.write(f"  {result.slug}: {result.error}")
            names = ", ".join(r.slug for r in failures)
            raise CommandError(f"{len(failures)} of {len(report.results)} tenants failed to migrate: {names}")

    def report(self, result, verbosity: int) -> None:
        if result.error:
            if verbosity >= 1:
                self.stderr.write(f"{result.slug}: failed (listed at the end)")
        elif result.applied:
            if verbosity >= 1:
                self.stdout.write(f"{result.slug}: applied {', '.join(result.applied)}")
        elif verbosity >= 2:
            self.stdout.write(f"{result.slug}: up to date")
