# The admin says "Workers", as the documentation does, instead of "Worker statuses".

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("toosimpleq", "0022_taskexec_is_unique_exception_class"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="workerstatus",
            options={"verbose_name": "worker", "verbose_name_plural": "workers"},
        ),
    ]
