"""Views of the example site. They never name a database: the router sends
``finance`` queries to the tenant the middleware resolved from the host."""

from decimal import Decimal

from django import forms
from django.db.models import Sum
from django.shortcuts import redirect, render

from tenant_schema.context import current_tenant
from tenant_schema.models import Tenant

from .models import Account, Transaction


class TransactionForm(forms.ModelForm):
    class Meta:
        model = Transaction
        fields = ["account", "date", "description", "amount", "category"]
        widgets = {"date": forms.DateInput(attrs={"type": "date"})}


def home(request):
    tenant = current_tenant()
    if tenant is None:  # the bare domain: list the tenants
        tenants = Tenant.objects.filter(status=Tenant.Status.READY)
        return render(request, "finance/landing.html", {"tenants": tenants, "host": request.get_host()})
    accounts = Account.objects.annotate(balance=Sum("transactions__amount"))
    context = {
        "tenant": tenant,
        "accounts": accounts,
        "total": sum((a.balance or Decimal(0) for a in accounts), Decimal(0)),
        "transactions": Transaction.objects.select_related("account")[:20],
        "form": TransactionForm(),
    }
    return render(request, "finance/dashboard.html", context)


def add_transaction(request):
    if current_tenant() is None:
        return redirect("home")
    form = TransactionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        form.save()
        return redirect("home")
    return render(request, "finance/add_transaction.html", {"form": form, "tenant": current_tenant()})
