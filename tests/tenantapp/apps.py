from django.apps import AppConfig


class TenantAppConfig(AppConfig):
    name = "tests.tenantapp"
    label = "tenantapp"
    default_auto_field = "django.db.models.BigAutoField"
