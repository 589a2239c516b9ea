"""A data migration writing through the ORM, as sites' data migrations do."""

from django.db import migrations


def welcome(apps, schema_editor):
    apps.get_model("tenantapp", "Note").objects.create(title="welcome")


class Migration(migrations.Migration):
    dependencies = [("tenantapp", "0002_note_pinned")]
    operations = [migrations.RunPython(welcome, migrations.RunPython.noop)]
