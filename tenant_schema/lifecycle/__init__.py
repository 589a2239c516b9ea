"""The tenant life cycle: register, pool, clone, migrate, archive, restore, purge, claim, move, rebalance,
export and import.

Everything that creates, changes or drops a tenant's database, or moves its
registry row from one status to another, is here; the management commands,
the admin and your own code call the same functions (the public ones are
importable from ``tenant_schema`` too). Read the modules in this order:
each imports only modules listed before it (``tests/test_architecture.py``
checks it), so the package has no import cycle.

1. ``build``: the tenant apps' tables in one database, created from the
   models in one ``DDLBatch`` with every migration recorded, and the
   ``TENANT_TABLES``; what a database has applied.
2. ``migrate``: one tenant migrated with Django's executor, the migration
   state (``Tenant.migrated_to``) the registry keeps for it, and the
   migration signals sent around building or migrating a database.
3. ``clone``: each server's clone template, and a new database copied from it.
4. ``provision``: one registry row's database brought to the current plan
   under a lock on the row (cloned or created, marked, its role, its
   tables), the row's status written last; a failure recorded on the row.
5. ``archive``: archive, restore, maintenance mode, purge.
6. ``pool``: the warm pool, filled off the request path, claimed by a
   sign-up in one registry statement, drained.
7. ``register``: ``register_tenant``, a pooled database or a provisioned one.
8. ``fleet_worker`` and ``fleet``: ``migrate_tenants``, every tenant at
   once, skipped from the registry when it is at the plan, ``jobs`` at a
   time in worker processes that ``fleet_worker`` sets up.
9. ``seed``: a tenant's database by slug (``get_or_create_tenant_db``,
   ``drop_tenant_db``), and ``claim_tenant_database`` for a database with
   no ownership marker.
10. ``move``: ``move_tenant``, a live tenant copied to a new database on
    another server, verified, and switched to in one registry transaction;
    the source kept until ``drop_kept_copies``.
11. ``rebalance``: ``plan_rebalance`` evens out the servers from the
    registry alone (placement policy, labels, weights); ``rebalance`` runs
    the planned moves one by one.
12. ``exchange``: ``export_tenant`` writes a tenant to an engine-neutral
    file (``schema.portable``) from one snapshot while it is served;
    ``import_tenant`` makes a new tenant of one with ``move``'s machinery
    (a reserved ``import-<hex>`` row, built, filled, verified, then renamed
    to the tenant's slug in one registry statement).

This ``__init__`` imports nothing: a fleet worker process imports
``fleet_worker`` (and so this package) before Django is set up.
"""
