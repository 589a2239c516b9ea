"""``tenant_migrate [slug ...]``: apply the tenant apps' migrations to every tenant.

Tenants the registry records at the current migration plan are skipped
without connecting to them (``--verify`` connects to every tenant and
reports drift); the others are checked and migrated over ``--jobs``
processes; a failing tenant does not stop the others. Every failure is
listed at the end, on one line (its traceback at ``-v 2``), and the command
exits non-zero. ``--json`` prints the report as one JSON object instead.
"""

from __future__ import annotations

import json
import sys

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import pluralize

from ...names import normalize_slug
from ..inspection import command_errors

MIGRATED, UP_TO_DATE, FAILED = "migrated", "up_to_date", "failed"


class Command(BaseCommand):
    help = (
        'Apply pending migrations of TENANT_SCHEMA["TENANT_APPS"] to the given tenants '
        "(default: every ready and archived tenant and every pooled database; unfinished "
        "registrations are left to tenant_register), in parallel processes with --jobs."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "slugs", nargs="*", metavar="slug", help="Tenants to migrate (default: all, as described above)."
        )
        parser.add_argument(
            "--jobs",
            "-j",
            type=int,
            default=1,
            help="Tenants migrated at once: this process and N-1 workers (default 1).",
        )
        parser.add_argument(
            "--progress",
            action="store_true",
            default=None,
            help="Show a progress bar on stderr (the default when stderr is a terminal).",
        )
        parser.add_argument("--no-progress", action="store_false", dest="progress")
        parser.add_argument(
            "--verify",
            action="store_true",
            help="Connect to every tenant, even those the registry records as up to date, and report drift.",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print the per-tenant results and a summary as one JSON object (stdout holds nothing else).",
        )

    def handle(self, *args, slugs, jobs, progress, verbosity, verify, **options):
        from ...lifecycle.fleet import migrate_tenants

        as_json = options["json"]
        if jobs < 1:
            raise CommandError(f"--jobs must be 1 or more, not {jobs}")
        if progress is None:
            progress = verbosity >= 1 and sys.stderr.isatty()
        # A bar on a terminal (or nothing, for --json); otherwise one line per tenant as it finishes.
        on_result = True if progress else (None if as_json else lambda result: self.report(result, verbosity))
        with command_errors():
            slugs = list(dict.fromkeys(normalize_slug(slug) for slug in slugs))  # ACME and acme: once
            report = migrate_tenants(slugs or None, jobs=jobs, progress=on_result, verify=verify)
        failures = report.failures
        total = len(report.results)
        if as_json:
            self.stdout.write(json.dumps(as_dict(report), indent=2))
        else:
            self.summarise(report, verbosity, progress)
        if failures:
            names = ", ".join(r.slug for r in failures)
            raise CommandError(f"{len(failures)} of {total} tenant{pluralize(total)} failed to migrate: {names}")

    def summarise(self, report, verbosity: int, progress: bool) -> None:
        if progress:
            for result in report.results:
                self.report(result, verbosity)
        counts = as_dict(report)["summary"]
        if verbosity >= 1:
            self.stdout.write(
                f"{counts['total']} tenant{pluralize(counts['total'])}: {counts[MIGRATED]} migrated, "
                f"{counts[UP_TO_DATE]} up to date, {counts[FAILED]} failed."
            )
        for result in report.drifted:
            self.stderr.write(
                f"{result.slug}: drift: the registry recorded it as up to date, but its database lacked "
                "migrations (changed outside tenant-schema)"
            )
        if report.failures:
            self.stderr.write("Failed tenants:")
            for result in report.failures:
                self.stderr.write(f"  {result.slug}: {result.error}")
                if verbosity >= 2 and result.traceback:
                    self.stderr.write("    " + result.traceback.rstrip("\n").replace("\n", "\n    "))

    def report(self, result, verbosity: int) -> None:
        if result.error:
            if verbosity >= 1:
                self.stderr.write(f"{result.slug}: failed (listed at the end)")
        elif result.applied:
            if verbosity >= 1:
                self.stdout.write(f"{result.slug}: applied {', '.join(result.applied)}")
        elif verbosity >= 2:
            self.stdout.write(f"{result.slug}: up to date")


def outcome(result) -> str:
    """``migrated``, ``up_to_date`` or ``failed``: what migrating the tenant came to."""
    if result.error is not None:
        return FAILED
    return MIGRATED if result.applied else UP_TO_DATE


def as_dict(report) -> dict:
    """The ``--json`` shape of a ``MigrationReport`` (docs/operations.md, "JSON output")."""
    results = [
        {
            "slug": r.slug,
            "ok": r.error is None,
            "result": outcome(r),
            "applied": list(r.applied),
            "connected": r.connected,
            "drift": r.drift,
            "error": r.error,
        }
        for r in sorted(report.results, key=lambda r: r.slug)
    ]
    summary = {"total": len(results), MIGRATED: 0, UP_TO_DATE: 0, FAILED: 0}
    for r in results:
        summary[r["result"]] += 1
    summary["drifted"] = sum(1 for r in results if r["drift"])
    return {"results": results, "summary": summary}
