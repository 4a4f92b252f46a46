"""Django admin integration: task executions (with the queue dashboard), workflows, schedules and workers."""

from .executions import TaskExecAdmin
from .schedules import ScheduleExecAdmin
from .workers import WorkerStatusAdmin
from .workflows import WorkflowAdmin

__all__ = ["ScheduleExecAdmin", "TaskExecAdmin", "WorkerStatusAdmin", "WorkflowAdmin"]
