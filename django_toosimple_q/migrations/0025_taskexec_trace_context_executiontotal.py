"""Observability (docs/monitoring.md): ``TaskExec.trace_context``, the trace context of the code that
queued a call (OpenTelemetry), and ``ExecutionTotal``, the totals of finished executions that keep
the metrics' counters monotonic when old executions are pruned. Both start empty: the first
housekeeping of a worker counts the executions already finished into the totals."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('toosimpleq', '0024_workerstatus_receives_notifications'),
    ]

    operations = [
        migrations.AddField(
            model_name='taskexec',
            name='trace_context',
            field=models.TextField(blank=True, editable=False, null=True, verbose_name='trace context'),
        ),
        migrations.CreateModel(
            name='ExecutionTotal',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('task_name', models.CharField(max_length=255, verbose_name='task name')),
                ('state', models.CharField(max_length=32, verbose_name='state')),
                ('executions', models.BigIntegerField(default=0, verbose_name='executions')),
                ('started', models.BigIntegerField(default=0, verbose_name='started')),
                ('run_seconds', models.FloatField(default=0, verbose_name='run time (seconds, sum)')),
                ('wait_seconds', models.FloatField(default=0, verbose_name='pick-up latency (seconds, sum)')),
                ('run_buckets', models.TextField(default='[]', verbose_name='run time buckets')),
                ('wait_buckets', models.TextField(default='[]', verbose_name='pick-up latency buckets')),
                ('folded_until', models.DateTimeField(blank=True, null=True, verbose_name='folded until')),
            ],
            options={
                'verbose_name': 'execution total',
                'verbose_name_plural': 'execution totals',
                'constraints': [models.UniqueConstraint(fields=('task_name', 'state'), name='toosimpleq_total_unique')],
            },
        ),
    ]
