"""Maintenance mode: a ready tenant whose writes are refused while its reads are served.

Existing tenants start out of maintenance.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tenant_schema", "0004_pool_and_migration_state"),
    ]

    operations = [
        migrations.AddField(
            model_name="tenant",
            name="maintenance",
            field=models.BooleanField(
                default=False,
                editable=False,
                help_text="Reads are served; writes are refused until maintenance ends.",
            ),
        ),
    ]
