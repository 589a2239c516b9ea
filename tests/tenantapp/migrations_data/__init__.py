"""The tenant app's migrations plus a data migration (tests/test_maintenance.py: migrating a tenant in maintenance mode)."""
