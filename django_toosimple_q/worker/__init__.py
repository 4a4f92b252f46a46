from .worker import EXIT_CRASHED, EXIT_OK, EXIT_RELOAD, Worker

__all__ = ["Worker", "EXIT_OK", "EXIT_CRASHED", "EXIT_RELOAD"]
