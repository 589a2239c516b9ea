from django.apps import AppConfig


class TenantSchemaConfig(AppConfig):
    name = "tenant_schema"
    verbose_name = "Tenants"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (
            checks,  # noqa: F401  (registers the system checks)
            object_isolation,
        )
        from .schema import tables  # noqa: F401  (installs TenantDatabase.table's opener)

        object_isolation.install()  # objects of one tenant are never used on another's database
