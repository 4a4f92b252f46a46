from django.db import models


class Record(models.Model):
    """One row per actual run of a test task, to count executions independently of TaskExec."""

    key = models.CharField(max_length=255)
    pid = models.IntegerField(null=True)
    created = models.DateTimeField(auto_now_add=True)


class FlowRun(models.Model):
    """One row per run of a flow-control test task (tests/test_flow_control.py): when it started and
    ended (``time.time()`` in the worker process: the workers and the test share this host's clock)."""

    task = models.CharField(max_length=255)
    key = models.CharField(max_length=255, default="")
    execution = models.BigIntegerField(null=True)
    pid = models.IntegerField(null=True)
    start = models.FloatField()
    end = models.FloatField(null=True)
