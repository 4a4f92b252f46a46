from django.db import models


class Record(models.Model):
    """One row per actual run of a test task, to count executions independently of TaskExec."""

    key = models.CharField(max_length=255)
    pid = models.IntegerField(null=True)
    created = models.DateTimeField(auto_now_add=True)
