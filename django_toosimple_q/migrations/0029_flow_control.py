"""Flow control (#17): ``TaskExec.concurrency_key``, ``toosimpleq_flowscope`` (a row per limited or
paused queue or task: its lock serialises the claims of limited work, and it holds the pause) and
``toosimpleq_flowstart`` (the start times of rate-limited executions, kept one period). Adding a
nullable column rewrites nothing on PostgreSQL, SQLite or MariaDB."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('toosimpleq', '0028_postgresql_claim_function'),
    ]

    operations = [
        migrations.CreateModel(
            name='FlowScope',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('scope', models.CharField(max_length=270, unique=True, verbose_name='scope')),
                ('paused', models.BooleanField(default=False, verbose_name='paused')),
                ('paused_at', models.DateTimeField(blank=True, null=True, verbose_name='paused at')),
            ],
            options={
                'verbose_name': 'flow scope',
                'verbose_name_plural': 'flow scopes',
                'permissions': [('pause_queue', 'Can pause and resume queues')],
            },
        ),
        migrations.AddField(
            model_name='taskexec',
            name='concurrency_key',
            field=models.CharField(blank=True, editable=False, max_length=255, null=True, verbose_name='concurrency key'),
        ),
        migrations.CreateModel(
            name='FlowStart',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('scope', models.CharField(max_length=270)),
                ('key', models.CharField(default='', max_length=255)),
                ('at', models.DateTimeField()),
            ],
            options={
                'indexes': [models.Index(fields=['scope', 'key', 'at'], name='toosimpleq_flowstart_idx')],
            },
        ),
    ]
