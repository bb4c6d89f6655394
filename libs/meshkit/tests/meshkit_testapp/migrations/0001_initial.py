import time

from django.db import migrations, models


def record_run(apps, schema_editor):
    # Slow on purpose: a second migrate_locked started meanwhile must wait, not run this again.
    time.sleep(1.0)
    apps.get_model("meshkit_testapp", "MigrationRun").objects.create()


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="MigrationRun",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("ran_at", models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.CreateModel(
            name="Item",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=50, unique=True)),
            ],
        ),
        migrations.RunPython(record_run, migrations.RunPython.noop),
    ]
