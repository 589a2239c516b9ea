"""A dataclass table every test tenant gets (``TENANT_SCHEMA["TENANT_TABLES"]``)."""

import datetime
import decimal
from dataclasses import dataclass, field
from typing import Optional


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
