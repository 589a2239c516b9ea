"""Views of the example site. They never name a database, a cache namespace or a
media directory: the router, the cache key function and the storage follow the
tenant the middleware resolved from the host."""

import logging
from decimal import Decimal
from urllib.parse import urlencode

from django import forms
from django.core.cache import cache
from django.db.models import Max, Sum
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from tenant_schema.context import current_tenant
from tenant_schema.models import Tenant

from .models import Account, Transaction
from .tasks import TOTAL_KEY, schedule_recalculation

logger = logging.getLogger(__name__)


class TransactionForm(forms.ModelForm):
    class Meta:
        model = Transaction
        fields = ["account", "date", "description", "amount", "category", "receipt"]
        widgets = {"date": forms.DateInput(attrs={"type": "date"})}


def ledger_total() -> Decimal:
    """The sum of every transaction, cached (per tenant) until the balances are recalculated."""
    return cache.get_or_set(TOTAL_KEY, lambda: Transaction.objects.aggregate(t=Sum("amount"))["t"] or Decimal(0))


def home(request):
    tenant = current_tenant()
    if tenant is None:  # the bare domain: list the tenants
        tenants = Tenant.objects.filter(status=Tenant.Status.READY)
        return render(request, "finance/landing.html", {"tenants": tenants, "host": request.get_host()})
    context = {
        "tenant": tenant,
        "accounts": Account.objects.all(),
        "balances_as_of": Account.objects.aggregate(at=Max("balance_updated_at"))["at"],
        "total": ledger_total(),
        "transactions": Transaction.objects.select_related("account")[:20],
        "form": TransactionForm(),
        "notice": request.GET.get("notice", ""),
    }
    return render(request, "finance/dashboard.html", context)


def add_transaction(request):
    if current_tenant() is None:
        return redirect("home")
    form = TransactionForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        form.save()
        logger.info("transaction added: %s", form.instance)
        return redirect_with_notice(schedule_recalculation())
    return render(request, "finance/add_transaction.html", {"form": form, "tenant": current_tenant()})


@require_POST
def recalculate(request):
    if current_tenant() is None:
        return redirect("home")
    return redirect_with_notice(schedule_recalculation())


def redirect_with_notice(notice: str):
    response = redirect("home")
    response["Location"] += "?" + urlencode({"notice": f"Balances {notice}"})
    return response
