"""The example's background task: recalculate a tenant's account balances.

It runs inside the tenant that sent it (``tenant_schema.celery``): on a
Celery worker when ``CELERY_BROKER_URL`` is set, in-process otherwise.
"""

from decimal import Decimal

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db.models import Sum
from django.utils import timezone

from .models import Account

#: The dashboard's cached total; the cache key function puts the tenant in it.
TOTAL_KEY = "ledger-total"


@shared_task
def recalculate_balances() -> dict:
    """Store each account's balance (the sum of its transactions); forget the cached total."""
    now = timezone.now()
    accounts = list(Account.objects.annotate(total=Sum("transactions__amount")))
    for account in accounts:
        account.balance = account.total or Decimal(0)
        account.balance_updated_at = now
    Account.objects.bulk_update(accounts, ["balance", "balance_updated_at"])
    cache.delete(TOTAL_KEY)
    return {"accounts": len(accounts), "total": str(sum((a.balance for a in accounts), Decimal(0)))}


def broker_configured() -> bool:
    return bool(getattr(settings, "CELERY_BROKER_URL", ""))


def schedule_recalculation() -> str:
    """Recalculate the current tenant's balances: queued for a worker, or now without a broker."""
    if broker_configured():
        recalculate_balances.delay()  # the current tenant travels in the message's headers
        return "queued for the Celery worker"
    recalculate_balances.apply()  # no broker configured: run the same task in this process
    return "recalculated in-process (no Celery broker configured)"
