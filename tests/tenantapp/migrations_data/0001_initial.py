"""The tenant app's own migration 0001_initial, reused (tests.tenantapp.migrations_data adds a data migration after it)."""

import importlib

Migration = importlib.import_module("tests.tenantapp.migrations.0001_initial").Migration
