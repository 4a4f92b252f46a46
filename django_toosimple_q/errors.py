"""Exceptions raised to users of the library (a foundation: imports nothing of ours)."""


class ConfigurationError(ValueError):
    """A task or schedule is declared in a way that cannot work; the message says what to change."""
