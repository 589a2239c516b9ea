"""Helpers of the tenant-schema worker process (``ts_worker.py``, ``bench_batch_insert.measure``).

Django is already set up there (``DJANGO_SETTINGS_MODULE=ts_settings``).
"""

from __future__ import annotations

import uuid


def slug(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def reachable(server_key: str) -> bool:
    from tenant_schema.servers import get_server

    server = get_server(server_key)
    if server.dialect.name == "sqlite":
        return True
    try:
        with server.connection().cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - a missing server is reported, not fatal
        return False
