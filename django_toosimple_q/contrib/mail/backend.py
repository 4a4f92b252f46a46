"""The module path used by earlier releases (singular ``backend``); kept so old settings still work."""

from .backends import QueueBackend

__all__ = ["QueueBackend"]
