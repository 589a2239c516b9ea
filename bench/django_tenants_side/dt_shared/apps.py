from django.apps import AppConfig


class DtSharedConfig(AppConfig):
    name = "django_tenants_side.dt_shared"
    label = "dt_shared"
    default_auto_field = "django.db.models.BigAutoField"
