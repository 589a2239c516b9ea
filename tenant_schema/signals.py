"""Signals a site can hook into a tenant's life cycle.

Each is sent with ``sender=Tenant`` and ``tenant=<the Tenant row>``, after
the registry change it announces is committed:

- ``tenant_provisioned``: the tenant became ready (``register_tenant``);
- ``tenant_archived``: the tenant was archived, its data kept;
- ``tenant_restored``: an archived tenant was brought back to ready
  (``restore_tenant``);
- ``tenant_maintenance_changed``: the tenant's maintenance mode was switched
  on or off (``set_maintenance``; also ``maintenance=<bool>``);
- ``tenant_dropped``: the tenant's database (or schema) was dropped and its
  row deleted (the ``tenant`` instance no longer exists in the registry);
- ``tenant_moved``: the registry switched the tenant to a copy of its
  database on another server (``move_tenant``); also ``source=(server,
  database_name)`` and ``kept``, the registry row of the source it keeps
  (``None`` once dropped). ``tenant.uid`` is unchanged;
- ``tenant_imported``: a tenant was created from an export, its rows
  written and verified (``import_tenant``); also ``source``, the export
  manifest's ``tenant`` (``slug``, ``uid``, ``server``, ...).
  ``tenant_provisioned`` is not sent for it: receivers that seed a new
  tenant's data must not seed an imported one.

Around each tenant's migration (``register_tenant`` on a new database,
``migrate_tenant``, every tenant of a fleet run), in the process doing it:

- ``pre_tenant_migrate``: before anything is applied, with
  ``plan=[(app_label, migration_name), ...]``, the migrations about to be
  applied (empty when there is nothing to apply);
- ``tenant_migrated``: after they were applied and recorded, with
  ``applied=[...]``, the names applied, in order.

Neither is sent for a tenant a fleet run skips without connecting (its
registry row says it is at the current plan).
"""

from django.dispatch import Signal

tenant_provisioned = Signal()
tenant_archived = Signal()
tenant_restored = Signal()
tenant_maintenance_changed = Signal()
tenant_dropped = Signal()
tenant_moved = Signal()
tenant_imported = Signal()
pre_tenant_migrate = Signal()
tenant_migrated = Signal()
