from django.apps import AppConfig


class FinanceConfig(AppConfig):
    """The tenant app: its tables exist once per tenant, in the tenant's database."""

    name = "finance"
    default_auto_field = "django.db.models.BigAutoField"
