"""The registry rows of ``tenant_move``: a move's target (``moving``) and the source it keeps (``copy``).

``copy_of`` holds the uid of the tenant whose data such a row's database
holds (its ownership marker holds that uid); ``held_by`` names the process
working on a move. Existing rows get neither.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tenant_schema", "0005_tenant_maintenance"),
    ]

    operations = [
        migrations.AddField(
            model_name="tenant",
            name="copy_of",
            field=models.UUIDField(blank=True, db_index=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="tenant",
            name="held_by",
            field=models.CharField(blank=True, default="", editable=False, max_length=100),
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
                    ("moving", "moving"),
                    ("copy", "kept copy"),
                ],
                db_index=True,
                default="provisioning",
                max_length=20,
            ),
        ),
    ]
