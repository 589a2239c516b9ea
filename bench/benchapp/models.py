"""Accounts, transactions (a unique pair and a date index), budgets, tags, notes (a foreign key)."""

from django.db import models

from . import VERSION


class Account(models.Model):
    name = models.CharField(max_length=100)
    currency = models.CharField(max_length=3, default="EUR")
    opened_on = models.DateField(null=True, blank=True)


class Transaction(models.Model):
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="transactions")
    reference = models.CharField(max_length=40)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    booked_on = models.DateField(db_index=True)
    description = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "reference"], name="benchapp_txn_account_ref")]


class Budget(models.Model):
    category = models.CharField(max_length=40)
    month = models.DateField()
    amount = models.DecimalField(max_digits=12, decimal_places=2)


class Tag(models.Model):
    label = models.CharField(max_length=50, unique=True)


class Note(models.Model):
    transaction = models.ForeignKey(Transaction, on_delete=models.CASCADE, related_name="notes")
    body = models.TextField(blank=True, default="")
    if VERSION >= 2:
        pinned = models.BooleanField(default=False)  # migration 0002: one AddField
    if VERSION >= 3:
        archived = models.BooleanField(default=False)  # migration 0003: one AddField
