"""The tenant app's own migration 0002_note_pinned, reused (tests.tenantapp.migrations_data adds a data migration after it)."""

import importlib

Migration = importlib.import_module("tests.tenantapp.migrations.0002_note_pinned").Migration
