"""Signals a site can hook into a tenant's life cycle.

Each is sent with ``sender=Tenant`` and ``tenant=<the Tenant row>``, after
the registry change it announces is committed:

- ``tenant_provisioned``: the tenant became ready (``register_tenant``);
- ``tenant_archived``: the tenant was archived, its data kept;
- ``tenant_dropped``: the tenant's database (or schema) was dropped and its
  row deleted (the ``tenant`` instance no longer exists in the registry).
"""

from django.dispatch import Signal

tenant_provisioned = Signal()
tenant_archived = Signal()
tenant_dropped = Signal()
