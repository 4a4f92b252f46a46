"""Django admin integration: task executions (with the queue dashboard) and workers.

Schedules are registered by the schedules feature.
"""

from .executions import TaskExecAdmin
from .workers import WorkerStatusAdmin

__all__ = ["TaskExecAdmin", "WorkerStatusAdmin"]
