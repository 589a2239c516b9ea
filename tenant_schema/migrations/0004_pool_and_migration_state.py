"""The warm pool's ``pooled`` status, and each tenant's migration fingerprint.

``migrated_to`` starts empty for existing tenants: the next ``tenant_migrate``
connects to each of them once, finds what it has applied, and records it.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tenant_schema", "0003_tenant_uid"),
    ]

    operations = [
        migrations.AddField(
            model_name="tenant",
            name="migrated_to",
            field=models.CharField(blank=True, default="", editable=False, max_length=64),
        ),
        migrations.AlterField(
            model_name="tenant",
            name="status",
            field=models.CharField(
                choices=[
                    ("provisioning", "provisioning"),
                    ("ready", "ready"),
                    ("failed", "failed"),
                    ("archived", "archived"),
                    ("pooled", "pooled"),
                ],
                db_index=True,
                default="provisioning",
                max_length=20,
            ),
        ),
    ]
