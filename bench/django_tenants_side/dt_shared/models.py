"""The tenant and domain models django-tenants needs (in the public schema), as its docs show them."""

from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


class Client(TenantMixin):
    name = models.CharField(max_length=100)
    created_on = models.DateField(auto_now_add=True)
    auto_create_schema = True  # the default: saving a new tenant creates its schema and migrates it


class Domain(DomainMixin):
    pass
