"""A dataclass table every test tenant gets (``TENANT_SCHEMA["TENANT_TABLES"]``)."""

from dataclasses import dataclass


@dataclass
class AuditEvent:
    id: int
    action: str
