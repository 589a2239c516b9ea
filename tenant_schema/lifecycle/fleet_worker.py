"""The initializer of ``migrate_tenants(jobs>1)`` worker processes.

Kept apart from ``fleet`` because a spawned worker unpickles its
initializer by importing its module, before Django is set up: this module
(and the package's ``__init__``) imports nothing from Django at import
time. The tasks themselves (``fleet._migrate_one``) are unpickled after the
initializer ran.
"""

from __future__ import annotations

import os
from typing import Any


def init(settings_module: str, overrides: dict[str, Any]) -> None:
    """Set Django up in the worker with the parent's relevant settings."""
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    import django
    from django.conf import settings

    for key, value in overrides.items():
        setattr(settings, key, value)
    django.setup()


def ready() -> int:
    """The probe a new pool runs first: returns once a worker has started and set Django up (its pid)."""
    return os.getpid()
