
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('testapp', '0001_initial'),
    ]

    operations = [
        migrations.CreateModel(
            name='FlowRun',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('task', models.CharField(max_length=255)),
                ('key', models.CharField(default='', max_length=255)),
                ('execution', models.BigIntegerField(null=True)),
                ('pid', models.IntegerField(null=True)),
                ('start', models.FloatField()),
                ('end', models.FloatField(null=True)),
            ],
        ),
    ]
