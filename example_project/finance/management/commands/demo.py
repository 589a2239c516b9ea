"""``manage.py demo``: set the example site up from nothing, then serve it.

Every step is idempotent, so running it again (or after a crash) picks up
where it stopped: registry migrations, the two demo tenants, an admin user,
a few ledger rows per tenant.
"""

from datetime import date
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from tenant_schema import register_tenant
from tenant_schema.context import tenant_context
from tenant_schema.management.inspection import command_errors
from tenant_schema.servers import get_server

from ...models import Account, Transaction
from ...tasks import broker_configured, schedule_recalculation

ADMIN_USER, ADMIN_PASSWORD = "admin", "admin"

# slug -> (name, {account: (kind, [(date, description, amount, category), ...])})
DEMO_TENANTS = {
    "acme": (
        "Acme Household",
        {
            "Acme Checking": (
                "checking",
                [
                    (date(2025, 1, 2), "Salary", "4200.00", "income"),
                    (date(2025, 1, 5), "Rent", "-1450.00", "housing"),
                    (date(2025, 1, 9), "Groceries", "-132.40", "food"),
                ],
            ),
            "Acme Savings": (
                "savings",
                [
                    (date(2025, 1, 3), "Monthly saving", "500.00", "saving"),
                ],
            ),
        },
    ),
    "globex": (
        "Globex Family",
        {
            "Globex Current": (
                "checking",
                [
                    (date(2025, 1, 1), "Pension", "2800.00", "income"),
                    (date(2025, 1, 7), "Electricity", "-96.15", "utilities"),
                ],
            ),
            "Globex Card": (
                "credit",
                [
                    (date(2025, 1, 8), "Bookshop", "-42.90", "leisure"),
                    (date(2025, 1, 12), "Train tickets", "-64.00", "travel"),
                ],
            ),
        },
    ),
}


class Command(BaseCommand):
    help = "Set up the demo (registry, two tenants, an admin user, sample rows) and run the server."

    def add_arguments(self, parser):
        parser.add_argument(
            "addrport", nargs="?", default="127.0.0.1:8000", help="Where to serve (runserver's addrport)."
        )
        parser.add_argument("--no-serve", action="store_true", help="Only set up; do not start the server.")

    def handle(self, *args, addrport, no_serve, **options):
        call_command("migrate", verbosity=0, interactive=False)
        if broker_configured():
            self.stdout.write("Celery broker configured: tasks go to the worker (celery -A finance_site worker)")
        else:
            self.stdout.write("No Celery broker configured (CELERY_BROKER_URL is unset): tasks run in-process")
        with command_errors():
            for slug, (name, ledger) in DEMO_TENANTS.items():
                tenant = register_tenant(slug, name=name)
                created = self.seed(slug, ledger)
                with tenant_context(slug):
                    balances = schedule_recalculation()
                self.stdout.write(
                    f"tenant {slug}: {tenant.status} on {tenant.dialect_name}, {created} rows added, "
                    f"balances {balances}"
                )
        self.ensure_admin()

        port = addrport.rsplit(":", 1)[-1]
        server = get_server()
        shown = server.safe_url()
        self.stdout.write(f"\nTenant server: {shown} ({server.dialect.name})")
        self.stdout.write(f"Admin: http://localhost:{port}/admin/  user {ADMIN_USER!r}, password {ADMIN_PASSWORD!r}")
        for slug in DEMO_TENANTS:
            self.stdout.write(f"Tenant {slug}: http://{slug}.localhost:{port}/")
        if not no_serve:
            call_command("runserver", addrport, use_reloader=False)

    @staticmethod
    def seed(slug: str, ledger: dict) -> int:
        """Add the sample rows a tenant does not have yet; returns how many were added."""
        added = 0
        with tenant_context(slug):
            for account_name, (kind, rows) in ledger.items():
                account, created = Account.objects.get_or_create(name=account_name, defaults={"kind": kind})
                added += created
                for day, description, amount, category in rows:
                    _, created = Transaction.objects.get_or_create(
                        account=account,
                        date=day,
                        description=description,
                        defaults={"amount": Decimal(amount), "category": category},
                    )
                    added += created
        return added

    def ensure_admin(self) -> None:
        users = get_user_model()
        if not users.objects.filter(username=ADMIN_USER).exists():
            users.objects.create_superuser(ADMIN_USER, "admin@example.com", ADMIN_PASSWORD)
