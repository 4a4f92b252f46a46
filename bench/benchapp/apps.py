import os

from django.apps import AppConfig


class BenchAppConfig(AppConfig):
    name = "bench.benchapp"
    label = "benchapp"

    def ready(self) -> None:
        if os.environ.get("BENCH_COUNT_SQL"):
            from . import sqlcount

            sqlcount.install(os.environ["BENCH_COUNT_SQL"])
