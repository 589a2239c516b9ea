"""The benchmark's tenant app: five models, shared by tenant-schema and django-tenants.

``BENCH_APP_VERSION`` (1, 2 or 3; default 3) picks the state of the app:
version 1 is ``0001_initial``; version 2 adds ``Note.pinned`` (one
``AddField``, migration 0002); version 3 adds ``Note.archived`` (0003).
``MIGRATION_MODULES`` points at ``benchapp.migrations_v<N>`` so that the
models and the migrations on disk always agree: a fleet is created at one
version and migrated by a process started at the next.
"""

import os

VERSION = int(os.environ.get("BENCH_APP_VERSION", "3"))
MIGRATION_MODULES = {"benchapp": f"benchapp.migrations_v{VERSION}"}
