"""Functions run in spawned child processes.

This module imports nothing from tenant_schema at import time: a spawned
child imports it to find the function before Django is set up.
"""


def create_tenant_db(args):
    """``get_or_create_tenant_db`` in a fresh process, after a barrier shared with its siblings."""
    tenant_id, server_key, barrier, registry = args
    import django
    from django.conf import settings

    settings.DATABASES["default"]["NAME"] = registry  # the parent's test registry
    django.setup()
    from tenant_schema import get_or_create_tenant_db

    barrier.wait()
    return get_or_create_tenant_db(tenant_id, server=server_key).name
