"""Django admin integration: task executions (with the queue dashboard), schedules and workers."""

from .executions import TaskExecAdmin
from .schedules import ScheduleExecAdmin
from .workers import WorkerStatusAdmin

__all__ = ["ScheduleExecAdmin", "TaskExecAdmin", "WorkerStatusAdmin"]
