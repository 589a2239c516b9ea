"""The test suite's tenant app: lives in each tenant's database (TENANT_APPS).

``Note`` has no relations (other tests register it as a plain table);
``Tag`` carries the foreign key and the many-to-many.
"""

from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=100, unique=True)

    class Meta:
        app_label = "tenantapp"


class Note(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True, default="")
    # Added by migration 0002, so fleet migration has something to apply.
    pinned = models.BooleanField(default=False, db_index=True)

    class Meta:
        app_label = "tenantapp"


class Tag(models.Model):
    label = models.CharField(max_length=50)
    category = models.ForeignKey(Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="tags")
    notes = models.ManyToManyField(Note, related_name="tags", blank=True)

    class Meta:
        app_label = "tenantapp"
