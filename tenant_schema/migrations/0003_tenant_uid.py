"""Each tenant row gets a UUID, written into its database as the ownership marker.

Rows that exist already get a fresh UUID each (three steps: a unique column
cannot be added with one default for every row). Their databases were made
before markers existed: ``tenant_claim`` writes a marker into one after an
operator has checked it is the tenant's.
"""

import uuid

from django.db import migrations, models


def fill_uids(apps, schema_editor):
    Tenant = apps.get_model("tenant_schema", "Tenant")
    for pk in Tenant.objects.using(schema_editor.connection.alias).values_list("pk", flat=True):
        Tenant.objects.using(schema_editor.connection.alias).filter(pk=pk).update(uid=uuid.uuid4())


class Migration(migrations.Migration):
    dependencies = [
        ("tenant_schema", "0002_validate_database_name"),
    ]

    operations = [
        migrations.AddField(
            model_name="tenant",
            name="uid",
            field=models.UUIDField(null=True, editable=False),
        ),
        migrations.RunPython(fill_uids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="tenant",
            name="uid",
            field=models.UUIDField(default=uuid.uuid4, unique=True, editable=False),
        ),
    ]
