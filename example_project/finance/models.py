"""A personal-finance ledger. Each tenant has these tables in its own database."""

from django.db import models


class Account(models.Model):
    class Kind(models.TextChoices):
        CHECKING = "checking"
        SAVINGS = "savings"
        CREDIT = "credit"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.CHECKING)
    currency = models.CharField(max_length=3, default="USD")
    #: Written by the ``recalculate_balances`` task (finance/tasks.py), not by the views.
    balance = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    balance_updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Transaction(models.Model):
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="transactions")
    date = models.DateField()
    description = models.CharField(max_length=200)
    amount = models.DecimalField(max_digits=12, decimal_places=2, help_text="Negative for money going out.")
    category = models.CharField(max_length=50, blank=True)
    #: Stored by the default storage, TenantFileSystemStorage: under the tenant's own media directory.
    receipt = models.FileField(upload_to="receipts/", blank=True)

    class Meta:
        ordering = ["-date", "-id"]
        indexes = [models.Index(fields=["account", "date"], name="finance_tx_account_date")]

    def __str__(self) -> str:
        return f"{self.date} {self.description} {self.amount}"
