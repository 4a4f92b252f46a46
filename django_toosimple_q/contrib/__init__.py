"""Optional apps built on the queue; each is enabled by adding it to ``INSTALLED_APPS``."""
