"""Prometheus metrics of the queue (the ``[prometheus]`` extra): ``metrics.views.metrics``, a view to
mount in your ``urls.py``; every figure is read from the database at scrape time. See
docs/monitoring.md. Importing this package imports nothing of prometheus-client."""
