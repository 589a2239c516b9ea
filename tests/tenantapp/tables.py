"""A dataclass table every test tenant gets (``TENANT_SCHEMA["TENANT_TABLES"]``)."""

import datetime
import decimal
from dataclasses import dataclass, field
from typing import Optional

from django.apps.registry import Apps
from django.db import models
from django.db.models.functions import Length


@dataclass
class AuditEvent:
    id: int
    action: str


@dataclass
class Payment:
    """A run-time table (not in TENANT_TABLES) with awkward values: ``tests/test_move.py`` registers it."""

    amount: decimal.Decimal = field(metadata={"max_digits": 14, "decimal_places": 4})
    paid_at: datetime.datetime
    memo: Optional[str] = None
    details: Optional[dict] = None
    settled: bool = False
    booked_on: Optional[datetime.date] = None
    raw: Optional[bytes] = None
    id: Optional[int] = None


class Priced(models.Model):
    """A Django model with a stored generated column, registered at run time (not one of the tenant apps')."""

    label = models.CharField(max_length=50)
    label_length = models.GeneratedField(
        expression=Length("label"), output_field=models.IntegerField(), db_persist=True
    )

    class Meta:
        apps = Apps()  # its own registry: no tenant app's model, no migration
        app_label = "generated"
        db_table = "priced"
