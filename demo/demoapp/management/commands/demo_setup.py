"""Create the demo login and queue a few executions to look at."""

from datetime import timedelta

import django

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.utils import timezone

from demoapp import tasks


class Command(BaseCommand):
    help = "Create the demo/demo superuser and queue example tasks."

    def handle(self, *args, **options):
        User = get_user_model()
        if not User.objects.filter(username="demo").exists():
            User.objects.create_superuser("demo", "demo@example.com", "demo")
        tasks.say_hello.queue("John")
        tasks.say_hello.queue("Peter", due=timezone.now() + timedelta(seconds=30))
        tasks.urgent_task.queue()
        tasks.flaky.queue(0.7)
        tasks.refresh_cache.queue()
        tasks.refresh_cache.queue()  # merged into the first one
        tasks.long_task.queue(3)
        tasks.slow_report.queue(1)  # within its 2-second limit: SUCCEEDED
        tasks.slow_report.queue(5)  # past it: stopped, FAILED with TimeLimitExceeded
        tasks.fetch_feed.queue("https://example.com/feed.xml")
        if django.VERSION >= (6, 0):
            tasks.send_newsletter.enqueue(12)
        self.stdout.write("Queued example tasks.")
