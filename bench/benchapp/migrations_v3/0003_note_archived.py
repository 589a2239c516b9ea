from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("benchapp", "0002_note_pinned")]

    operations = [
        migrations.AddField(model_name="note", name="archived", field=models.BooleanField(default=False)),
    ]
