from .worker import EXIT_CRASHED, EXIT_OK, EXIT_RELOAD, EXIT_USAGE, Worker, run_process

__all__ = ["Worker", "run_process", "EXIT_OK", "EXIT_CRASHED", "EXIT_USAGE", "EXIT_RELOAD"]
